//! `contact-sync links …`: where contacts stand with each CRM, and pushing
//! them again.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ArgGroup;

use super::client::Api;
use super::format::{self, clip, opt};
use super::model::{Count, LinkPage};
use super::table::Table;
use super::Target;
use crate::domain::{ContactId, Provider};

/// Link commands.
#[derive(clap::Subcommand, Debug)]
pub enum LinksCommand {
    /// List links between contacts and CRMs, `error` first.
    List {
        /// Only links in this status.
        #[arg(long, value_enum)]
        status: Option<LinkStatus>,
        /// Only links with this CRM.
        #[arg(long, value_parser = provider_parser())]
        provider: Option<Provider>,
        /// Links to show, 1 to 500.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
        limit: u64,
        /// Links to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Push contacts to the CRMs again: one contact to every CRM, or every
    /// contact whose link with `--provider` is in `error`.
    #[command(group(ArgGroup::new("which").required(true).args(["contact", "provider"])))]
    Resync {
        /// The contact (24 hex digits).
        #[arg(long, value_parser = ContactId::parse)]
        contact: Option<ContactId>,
        /// The CRM whose failed links to push again.
        #[arg(long, value_parser = provider_parser())]
        provider: Option<Provider>,
    },
}

/// Where a contact stands with one CRM.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Pushing failed for good; an operator must look.
    Error,
    /// A change waits to be pushed.
    Pending,
    /// The CRM holds the latest version.
    Synced,
}

impl LinkStatus {
    /// The api's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Pending => "pending",
            Self::Synced => "synced",
        }
    }
}

/// Parses a provider, listing the known ones in `--help`.
fn provider_parser() -> impl TypedValueParser<Value = Provider> {
    PossibleValuesParser::new(Provider::ALL.map(Provider::as_str))
        .try_map(|s| s.parse::<Provider>())
}

/// Runs a `links` command against the api of `target`.
///
/// # Errors
/// The api's message when it refuses, or the URL it could not be reached at.
pub async fn links(target: &Target, cmd: LinksCommand) -> anyhow::Result<()> {
    let api = Api::new(target)?;
    match cmd {
        LinksCommand::List {
            status,
            provider,
            limit,
            offset,
        } => {
            let mut query = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
            query.extend(status.map(|s| ("status", s.as_str().to_owned())));
            query.extend(provider.map(|p| ("provider", p.to_string())));
            let body = api.get(&["links"], &query).await?;
            api.print(&body, |page: LinkPage| list(&page, offset))
        }
        LinksCommand::Resync {
            contact: Some(id), ..
        } => {
            let id = id.to_string();
            let body = api.post(&["contacts", &id, "resync"], &[]).await?;
            api.print(&body, |c: Count| {
                format!(
                    "contact {id}: push queued to {}",
                    format::count(c.count, "CRM")
                )
            })
        }
        LinksCommand::Resync {
            provider: Some(p), ..
        } => {
            let body = api
                .post(&["links", "resync"], &[("provider", p.to_string())])
                .await?;
            api.print(&body, |c: Count| {
                let n = format::count(c.count, "contact");
                format!("{n} in error with {p}: push queued")
            })
        }
        LinksCommand::Resync { .. } => anyhow::bail!("give --contact ID or --provider P"),
    }
}

/// A page of links as a table, with a count line under it.
fn list(page: &LinkPage, offset: u64) -> String {
    let now = format::now_ms();
    let mut t = Table::new(&[
        "CONTACT",
        "PROVIDER",
        "STATUS",
        "ATTEMPTS",
        "EXTERNAL ID",
        "LAST SYNCED",
        "LAST ERROR",
    ])
    .right(&["ATTEMPTS"]);
    for l in &page.items {
        let (contact, l) = (&l.contact_id, &l.link);
        t.row(vec![
            contact.clone(),
            l.provider.clone(),
            l.sync_status.clone(),
            l.attempts.to_string(),
            opt(l.external_id.as_deref()),
            format::ago(l.last_synced_at, now),
            l.last_error
                .as_deref()
                .map_or_else(String::new, |e| clip(e, 72)),
        ]);
    }
    let shown = page.items.len() as u64;
    let footer = match (shown, offset) {
        (0, 0) => "no links match".to_owned(),
        (0, _) => format!("no links after the first {offset} ({} match)", page.total),
        _ => format!("links {}-{} of {}", offset + 1, offset + shown, page.total),
    };
    format!("{t}{footer}")
}
