//! A contact's outbox: the sync jobs a change of it still has to queue,
//! written with the change and cleared once the jobs are queued (the
//! outbox relay queues what a crash or a Redis outage left).

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::grouped::GroupError;
use super::{Contact, Store};
use crate::domain::ContactId;

/// Sync jobs a contact change still has to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbox {
    /// One job per provider, with the id it is to have (pushing an id that
    /// exists already does nothing, so relaying twice is harmless).
    pub jobs: Vec<OutboxJob>,
    /// When the change was written.
    pub at: DateTime,
}

/// One owed job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxJob {
    /// The CRM.
    pub provider: crate::domain::Provider,
    /// The job id.
    pub job_id: String,
}

impl Outbox {
    /// An outbox of `jobs`, written now; none when no job is owed (an
    /// outbox with no job would never be cleared as relayed).
    pub fn owed(jobs: &[(crate::domain::Provider, String)]) -> Option<Self> {
        (!jobs.is_empty()).then(|| Self::new(jobs))
    }

    /// An outbox of `jobs`, written now.
    pub fn new(jobs: &[(crate::domain::Provider, String)]) -> Self {
        Self {
            jobs: jobs
                .iter()
                .map(|(provider, job_id)| OutboxJob {
                    provider: *provider,
                    job_id: job_id.clone(),
                })
                .collect(),
            at: DateTime::now(),
        }
    }

    /// The jobs as `(provider, job id)` pairs.
    pub fn pairs(&self) -> Vec<(crate::domain::Provider, String)> {
        self.jobs
            .iter()
            .map(|j| (j.provider, j.job_id.clone()))
            .collect()
    }
}

impl Store {
    /// Contacts whose outbox was written at or before `cutoff` and is still
    /// there (oldest first, at most `limit`).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn owed_outboxes(
        &self,
        cutoff: DateTime,
        limit: i64,
    ) -> anyhow::Result<Vec<Contact>> {
        self.contacts
            .find(doc! { "outbox.at": { "$lte": cutoff } })
            .sort(doc! { "outbox.at": 1 })
            .limit(limit)
            .await
            .context("listing owed outboxes")?
            .try_collect()
            .await
            .context("reading owed outboxes")
    }

    /// Removes the outboxes that have been relayed, each only if it is still
    /// the one relayed (a newer change brings its own).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn clear_outboxes(&self, done: &[(ContactId, Outbox)]) -> anyhow::Result<()> {
        let (with_jobs, empty): (Vec<_>, Vec<_>) =
            done.iter().partition(|(_, o)| !o.jobs.is_empty());
        let with_jobs: Vec<_> = with_jobs
            .iter()
            .filter_map(|(id, o)| Some((*id, o.jobs.first()?.job_id.clone())))
            .collect();
        super::grouped::clear_outboxes(&self.contacts.clone_with_type(), &with_jobs)
            .await
            .context("clearing relayed outboxes")?;
        if !empty.is_empty() {
            // Written by older builds for a customer with no connection:
            // nothing to relay, and left in place they would come back
            // every round.
            let ids: Vec<_> = empty.iter().map(|(id, _)| id.oid()).collect();
            self.contacts
                .update_many(
                    doc! {
                        "_id": { "$in": ids },
                        "outbox": { "$exists": true },
                        "outbox.jobs.0": { "$exists": false },
                    },
                    doc! { "$unset": { "outbox": "" } },
                )
                .await
                .context("clearing empty outboxes")?;
        }
        Ok(())
    }

    /// Removes `contact`'s outbox once its jobs are queued, unless a newer
    /// change replaced it, together with the other contacts' at the moment
    /// (one `update`). Left in place, the relay would find it, read it and
    /// its links, and queue its jobs again (a no-op) a couple of seconds
    /// later.
    ///
    /// # Errors
    /// When the database fails (then the relay clears it later).
    pub async fn outbox_relayed(&self, contact: ContactId, outbox: &Outbox) -> anyhow::Result<()> {
        let Some(first) = outbox.jobs.first() else {
            return Ok(());
        };
        self.groups
            .outbox_clears
            .call((contact, first.job_id.clone()))
            .await
            .unwrap_or(Err(GroupError::Gone))
            .map_err(|e| e.into_anyhow("clearing a relayed outbox"))
    }
}
