//! The HTTP side: builds `/api` URLs, sends the bearer token, and turns
//! failures into one-line errors an operator can act on.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::Target;

/// A connection to the api of one deployment.
pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
    /// Where the token came from, named when the api refuses it.
    token_source: &'static str,
    /// Print raw JSON instead of tables.
    pub(super) json: bool,
}

/// A successful answer, kept as text so `--json` prints it unchanged.
pub(super) struct Body {
    text: String,
    url: Url,
}

impl Body {
    /// The answer read as `T`.
    ///
    /// # Errors
    /// When it is not the JSON shape this client expects (a different
    /// version of the api, or not the api at all).
    pub(super) fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.text)
            .with_context(|| format!("unexpected answer from {}", self.url))
    }

    /// The answer exactly as the api sent it.
    pub(super) fn raw(&self) -> &str {
        self.text.trim_end()
    }
}

impl Api {
    /// A client for `target`.
    ///
    /// # Errors
    /// When no token is configured.
    pub(super) fn new(target: &Target) -> anyhow::Result<Self> {
        let (token, token_source) = target.token()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            // A redirect could carry the token to another host: report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("contact-sync-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the http client")?;
        Ok(Self {
            http,
            base: target.api_url.clone(),
            token,
            token_source,
            json: target.json,
        })
    }

    /// `GET /api/<segments>?<query>`.
    pub(super) async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Body> {
        self.send(Method::GET, segments, query).await
    }

    /// `POST /api/<segments>?<query>` without a body.
    pub(super) async fn post(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Body> {
        self.send(Method::POST, segments, query).await
    }

    /// `DELETE /api/<segments>`.
    pub(super) async fn delete(&self, segments: &[&str]) -> anyhow::Result<Body> {
        self.send(Method::DELETE, segments, &[]).await
    }

    /// Prints `body` raw with `--json`, else rendered by `render`.
    ///
    /// # Errors
    /// When the answer does not parse, or stdout fails.
    pub(super) fn print<T: DeserializeOwned>(
        &self,
        body: &Body,
        render: impl FnOnce(T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            return emit(body.raw());
        }
        emit(render(body.parse()?).trim_end())
    }

    /// Each segment is percent-encoded, so an id cannot change the path.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Body> {
        let url = self.url(segments, query);
        let resp = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e.without_url()))
            .with_context(|| format!("cannot reach the api at {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| anyhow::Error::new(e.without_url()))
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if status.is_success() {
            return Ok(Body { text, url });
        }
        let mut msg = format!(
            "{method} {}: {} ({status})",
            url.path(),
            error_message(&text)
        );
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            msg.push_str(&format!("; token from {}", self.token_source));
        }
        Err(anyhow::Error::msg(msg))
    }
}

/// The `message` of the api's `{"error", "message"}` body, else the text
/// itself, shortened (a proxy's HTML page is no use on a terminal).
fn error_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => b.message,
        Err(_) if text.trim().is_empty() => "no details".into(),
        Err(_) => super::format::clip(text, 200),
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error.
pub(super) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: Url::parse(base).unwrap(),
            token: "t".into(),
            token_source: "test",
            json: false,
        }
    }

    #[test]
    fn urls() {
        let q = [("state", "dead".to_owned())];
        let cases = [
            (
                "http://h:1",
                &["queues", "q", "jobs"][..],
                &q[..],
                "http://h:1/api/queues/q/jobs?state=dead",
            ),
            (
                "http://h:1/",
                &["workers"][..],
                &[][..],
                "http://h:1/api/workers",
            ),
            (
                "http://h/x/",
                &["jobs", "a/b?c"][..],
                &[][..],
                "http://h/x/api/jobs/a%2Fb%3Fc",
            ),
        ];
        for (base, segments, query, want) in cases {
            assert_eq!(
                api(base).url(segments, query).as_str(),
                want,
                "{base} {segments:?}"
            );
        }
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                r#"{"error":"not_found","message":"no job \"x\""}"#,
                "no job \"x\"",
                "api error body",
            ),
            ("", "no details", "empty body"),
            ("Bad Gateway", "Bad Gateway", "plain text"),
        ];
        for (text, want, why) in cases {
            assert_eq!(error_message(text), want, "{why}");
        }
    }
}
