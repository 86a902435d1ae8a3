//! Read models for operators: links by status, sync logs by filter, and per
//! provider health.

use anyhow::Context;
use bson::{doc, DateTime, Document};
use futures::TryStreamExt;

use super::{Link, Store, SyncLog};
use crate::domain::{ContactId, Provider, SyncStatus};

/// Filter of the sync log.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// One contact.
    pub contact: Option<ContactId>,
    /// One provider.
    pub provider: Option<Provider>,
    /// One outcome (`upserted`, `failed`, …).
    pub outcome: Option<String>,
}

/// Health of one provider.
#[derive(Debug, Clone)]
pub struct ProviderHealth {
    /// When a sync with it last succeeded.
    pub last_success: Option<DateTime>,
    /// Outcomes in the last hour.
    pub recent: u64,
    /// Failed outcomes in the last hour.
    pub recent_failed: u64,
    /// Links per status.
    pub links: Vec<(SyncStatus, u64)>,
}

impl Store {
    /// Links, those in `error` first, then by last change.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_links(
        &self,
        status: Option<SyncStatus>,
        provider: Option<Provider>,
        skip: u64,
        limit: i64,
    ) -> anyhow::Result<(Vec<Link>, u64)> {
        let mut filter = Document::new();
        if let Some(s) = status {
            filter.insert("syncStatus", s.as_str());
        }
        if let Some(p) = provider {
            filter.insert("provider", p.as_str());
        }
        let total = self
            .links
            .count_documents(filter.clone())
            .await
            .context("counting links")?;
        // error < pending < synced alphabetically: ascending puts errors first
        let links = self
            .links
            .find(filter)
            .sort(doc! { "syncStatus": 1, "updatedAt": -1 })
            .skip(skip)
            .limit(limit)
            .await
            .context("listing links")?
            .try_collect()
            .await
            .context("reading links")?;
        Ok((links, total))
    }

    /// Sync log entries, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_logs(
        &self,
        f: &LogFilter,
        skip: u64,
        limit: i64,
    ) -> anyhow::Result<Vec<SyncLog>> {
        let mut filter = Document::new();
        if let Some(c) = f.contact {
            filter.insert("contactId", c.oid());
        }
        if let Some(p) = f.provider {
            filter.insert("provider", p.as_str());
        }
        if let Some(o) = &f.outcome {
            filter.insert("outcome", o.as_str());
        }
        self.logs
            .find(filter)
            .sort(doc! { "at": -1 })
            .skip(skip)
            .limit(limit)
            .await
            .context("listing sync logs")?
            .try_collect()
            .await
            .context("reading sync logs")
    }

    /// Last success, recent error rate and link counts of a provider.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn provider_health(&self, p: Provider) -> anyhow::Result<ProviderHealth> {
        let last: Option<SyncLog> = self
            .logs
            .find_one(doc! { "provider": p.as_str(), "outcome": { "$ne": "failed" } })
            .sort(doc! { "at": -1 })
            .await
            .context("reading the last sync")?;
        let hour_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 3_600_000);
        let recent = self
            .logs
            .count_documents(doc! { "provider": p.as_str(), "at": { "$gte": hour_ago } })
            .await
            .context("counting recent syncs")?;
        let recent_failed = self
            .logs
            .count_documents(
                doc! { "provider": p.as_str(), "outcome": "failed", "at": { "$gte": hour_ago } },
            )
            .await
            .context("counting recent failures")?;
        let mut links = Vec::new();
        for s in [SyncStatus::Pending, SyncStatus::Synced, SyncStatus::Error] {
            let n = self
                .links
                .count_documents(doc! { "provider": p.as_str(), "syncStatus": s.as_str() })
                .await
                .context("counting links")?;
            links.push((s, n));
        }
        Ok(ProviderHealth {
            last_success: last.map(|l| l.at),
            recent,
            recent_failed,
            links,
        })
    }
}
