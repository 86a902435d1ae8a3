//! `outbound-upsert`: push the current state of one contact to one CRM.

use bson::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use workers::{JobError, Queue};

use super::universal::UniversalContact;
use crate::crm::{CrmError, IntegrationApp};
use crate::domain::{ContactId, Provider, SyncStatus};
use crate::inbound::record::CrmRecord;
use crate::inbound::{ConflictPolicy, InboundSync};
use crate::store::{Contact, Direction, Link, Store, StoreError, SyncLog};

/// Queue of outbound pushes.
pub const OUTBOUND_QUEUE: &str = "outbound-upsert";

/// Payload of an outbound push. Idempotent: the handler reads the *current*
/// contact, so a duplicate or late job pushes the latest state, and a CRM
/// record is found by email before one is created, so a second delivery never
/// creates a second record. `version` is informational (added fields must be
/// `#[serde(default)]` so queued jobs still decode).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundUpsert {
    /// The contact to push.
    pub contact_id: ContactId,
    /// The CRM to push to.
    pub provider: Provider,
    /// The contact version when the job was queued.
    #[serde(default)]
    pub version: i64,
}

#[derive(Deserialize)]
struct IdOutput {
    id: String,
}

/// The lease pushes and inbound changes of one link take turns on.
pub fn link_lease_name(contact: ContactId, provider: Provider) -> String {
    format!("link:{contact}:{provider}")
}

/// How long a job holds a lease without renewing it; a crashed holder
/// frees it within this long.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How long a job waits for another job holding the same lease.
const LEASE_WAIT: Duration = Duration::from_secs(15);

/// Runs `work` holding the pool-wide lease `name`, waiting for its holder,
/// and frees the lease after (a lease that cannot be freed expires by
/// itself). When the lease stays busy the job is retried a second later
/// (`busy` says why).
///
/// # Errors
/// Transient when Redis fails; throttled when the lease stays busy; else
/// whatever `work` returns.
pub async fn with_lease<T>(
    leases: &Queue,
    name: &str,
    busy: &'static str,
    work: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    let lease = leases
        .lease(name, LEASE_TTL, LEASE_WAIT)
        .await
        .map_err(|e| JobError::transient(format!("lease: {e}")))?
        .ok_or_else(|| JobError::throttled(busy, Some(Duration::from_secs(1))))?;
    let res = work.await;
    if let Err(e) = lease.release().await {
        tracing::warn!(lease = name, error = %e, "releasing a lease failed; it expires by itself");
    }
    res
}

/// The outbound sync service.
#[derive(Clone)]
pub struct Outbound {
    store: Store,
    crm: IntegrationApp,
    leases: Queue,
    /// Applies CRM-side changes found before a push (conflicts).
    inbound: Option<Arc<InboundSync>>,
}

fn store_err(e: impl std::fmt::Display) -> JobError {
    JobError::transient(format!("store: {e}"))
}

impl Outbound {
    /// A service over the store, the Integration.app client, and the Redis
    /// where pushes of one link take turns.
    pub fn new(store: Store, crm: IntegrationApp, leases: Queue) -> Self {
        Self {
            store,
            crm,
            leases,
            inbound: None,
        }
    }

    /// Checks for CRM-side changes before each update and settles conflicts
    /// with `inbound`'s policy.
    pub fn with_conflicts(mut self, inbound: Arc<InboundSync>) -> Self {
        self.inbound = Some(inbound);
        self
    }

    /// Runs one push.
    ///
    /// # Errors
    /// Transient for store and network trouble, permanent for refusals.
    pub async fn run(
        &self,
        job: &OutboundUpsert,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), JobError> {
        // Pushes of one link take turns, so an older state can never land
        // after a newer one; the contact is read once the lease is held.
        with_lease(
            &self.leases,
            &link_lease_name(job.contact_id, job.provider),
            "another job is pushing this contact",
            self.push_current(job, job_id, attempt),
        )
        .await
    }

    async fn push_current(
        &self,
        job: &OutboundUpsert,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), JobError> {
        let Some(contact) = self
            .store
            .contact(job.contact_id)
            .await
            .map_err(store_err)?
        else {
            tracing::info!("contact no longer exists; nothing to push");
            return Ok(());
        };
        let provider = job.provider;
        let link = self
            .store
            .link(contact.id, provider)
            .await
            .map_err(store_err)?;
        let known = link.as_ref().and_then(|l| l.external_id.clone());
        if let Some(l) = &link {
            if l.sync_status == SyncStatus::Synced && l.synced_version >= contact.version {
                tracing::info!(version = contact.version, "already synced; nothing to push");
                return Ok(());
            }
        }

        if let (Some(ext), Some(l)) = (&known, &link) {
            if contact.deleted_at.is_none()
                && self.crm_changed_first(&contact, l, ext, job_id).await?
            {
                return Ok(());
            }
        }

        let (external_id, outcome) = if contact.deleted_at.is_some() {
            if let Some(ext) = &known {
                match self
                    .crm
                    .run::<_, serde_json::Value>(provider, "delete-contact", &json!({ "id": ext }))
                    .await
                {
                    Ok(_) | Err(CrmError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            (known, "deleted")
        } else {
            let (ext, outcome) = self.push(&contact, provider, known).await?;
            (Some(ext), outcome)
        };

        if let Some(ext) = &external_id {
            match self
                .store
                .mark_synced(
                    contact.id,
                    provider,
                    ext,
                    contact.version,
                    job_id,
                    Some(&UniversalContact::from(&contact)),
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(m)) => return Err(JobError::permanent(m)),
                Err(StoreError::Other(e)) => return Err(store_err(e)),
            }
        }
        self.store
            .log_sync(&SyncLog {
                contact_id: contact.id,
                provider,
                direction: Direction::Outbound,
                outcome: outcome.into(),
                external_id,
                job_id: job_id.into(),
                attempts: i64::from(attempt),
                version: contact.version,
                error: None,
                conflict: None,
                at: DateTime::now(),
            })
            .await
            .map_err(store_err)?;
        tracing::info!(outcome, version = contact.version, "pushed");
        Ok(())
    }

    /// Conflict check before overwriting a CRM record: if the record no
    /// longer holds the values of the last sync, it changed in the CRM too.
    /// Unless the app's version wins by policy, the CRM's change is applied
    /// through inbound sync (which logs the conflict) and nothing is pushed.
    /// Returns whether that happened.
    async fn crm_changed_first(
        &self,
        contact: &Contact,
        link: &Link,
        ext: &str,
        job_id: &str,
    ) -> Result<bool, JobError> {
        let (Some(inbound), Some(snapshot)) = (&self.inbound, &link.synced_fields) else {
            return Ok(false);
        };
        if inbound.policy == ConflictPolicy::AppWins {
            return Ok(false);
        }
        let raw = match self
            .crm
            .run::<_, serde_json::Value>(link.provider, "get-contact", &json!({ "id": ext }))
            .await
        {
            Ok(v) => v,
            Err(CrmError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let record = CrmRecord::parse(&raw).map_err(JobError::permanent)?;
        if !record.deleted && record.fields.same_values(snapshot) {
            return Ok(false);
        }
        let crm_first = match inbound.policy {
            ConflictPolicy::NewestWins => {
                record.updated_ms >= contact.updated_at.timestamp_millis()
            }
            _ => true,
        };
        if !crm_first {
            return Ok(false);
        }
        tracing::info!("the CRM record changed since the last sync; applying it first");
        inbound
            .apply_during_push(link.provider, ext, Some(record), job_id)
            .await?;
        Ok(true)
    }

    /// Updates the linked record, or finds-or-creates one by email.
    async fn push(
        &self,
        contact: &Contact,
        provider: Provider,
        known: Option<String>,
    ) -> Result<(String, &'static str), JobError> {
        let fields = UniversalContact::from(contact);
        if let Some(ext) = known {
            let input = json!({ "id": ext, "fields": fields });
            match self
                .crm
                .run::<_, IdOutput>(provider, "update-contact", &input)
                .await
            {
                Ok(out) => return Ok((out.id, "updated")),
                // deleted on the CRM side: recreate it (the app is the source here)
                Err(CrmError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let out: IdOutput = self
            .crm
            .run(provider, "upsert-contact", &json!({ "fields": fields }))
            .await?;
        Ok((out.id, "upserted"))
    }

    /// Records a job that ran out of attempts: link `error`, sync log.
    pub async fn record_failure(
        &self,
        job: &OutboundUpsert,
        job_id: &str,
        attempts: u32,
        error: &str,
    ) {
        let res = async {
            self.store
                .mark_error(job.contact_id, job.provider, error, attempts, job_id)
                .await?;
            self.store
                .log_sync(&SyncLog {
                    contact_id: job.contact_id,
                    provider: job.provider,
                    direction: Direction::Outbound,
                    outcome: "failed".into(),
                    external_id: None,
                    job_id: job_id.into(),
                    attempts: i64::from(attempts),
                    version: job.version,
                    error: Some(error.into()),
                    conflict: None,
                    at: DateTime::now(),
                })
                .await
        }
        .await;
        if let Err(e) = res {
            tracing::error!(job_id, error = %e, "could not record a dead job on its link");
        }
    }
}
