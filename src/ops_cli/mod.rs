//! Operator commands (`jobs`, `links`, `workers`, `stats`): a client of the
//! operator api of a running deployment, so an operator needs a URL and a
//! token, not access to Redis or MongoDB.
//!
//! Output is aligned tables for people, or with `--json` the api's JSON
//! untouched, for scripts. Errors are `anyhow` errors carrying the api's
//! message and status (or the URL that could not be reached); `main` prints
//! them and exits non-zero. The token is sent only as a bearer header and is
//! never printed, not even by `Debug`.

mod client;
mod format;
mod jobs;
mod links;
mod model;
mod overview;
mod table;

use std::fmt;

use reqwest::Url;

pub use jobs::{jobs, JobState, JobsCommand};
pub use links::{links, LinkStatus, LinksCommand};
pub use overview::{stats, workers};

/// Environment variable read for the token when neither `--token` nor
/// `CONTACT_SYNC_TOKEN` is given: on the api's own host it is already set.
const FALLBACK_TOKEN_VAR: &str = "API_TOKEN";

/// Which api to talk to, with which token, and how to print.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the running api (without `/api`).
    #[arg(
        long,
        env = "CONTACT_SYNC_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_base_url,
        global = true
    )]
    pub api_url: Url,
    /// Bearer token for the api (default: the `API_TOKEN` variable).
    #[arg(
        long,
        env = "CONTACT_SYNC_TOKEN",
        hide_env_values = true,
        value_parser = parse_token,
        global = true
    )]
    pub token: Option<Token>,
    /// Print the api's JSON as is instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A bearer token. Its `Debug` hides the value and it has no `Display`, so
/// it cannot end up in output or logs by accident.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// Kept even when blank: `CONTACT_SYNC_TOKEN=` then means "not set" and
/// the fallback applies (see [`Target::token`]).
fn parse_token(s: &str) -> Result<Token, String> {
    Ok(Token(s.trim().to_owned()))
}

fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("{e} (expected e.g. http://host:8080)"))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(format!("{s:?} is not an http(s) URL")),
    }
}

impl Target {
    /// The token to send and where it came from (named in auth errors).
    ///
    /// # Errors
    /// When no token is given anywhere: every `/api` call needs one.
    fn token(&self) -> anyhow::Result<(String, &'static str)> {
        if let Some(Token(t)) = self.token.as_ref().filter(|t| !t.0.is_empty()) {
            return Ok((t.clone(), "--token / CONTACT_SYNC_TOKEN"));
        }
        match std::env::var(FALLBACK_TOKEN_VAR) {
            Ok(t) if !t.trim().is_empty() => Ok((t.trim().to_owned(), FALLBACK_TOKEN_VAR)),
            _ => anyhow::bail!(
                "no api token: pass --token, or set CONTACT_SYNC_TOKEN or {FALLBACK_TOKEN_VAR}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let cases = [
            ("http://127.0.0.1:8080", true, "plain"),
            ("https://ops.example.com/sync/", true, "behind a path"),
            ("ftp://example.com", false, "not http"),
            ("127.0.0.1:8080", false, "no scheme"),
            ("http://", false, "no host"),
        ];
        for (input, ok, why) in cases {
            assert_eq!(parse_base_url(input).is_ok(), ok, "{why}: {input}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let t = parse_token(" s3cret ").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
