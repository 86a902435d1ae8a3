//! The sync rules: what a job does with the app's store and the CRMs.
//! Handlers return [`workers::JobError`]s: store failures are transient (the
//! database may come back), CRM failures are classified by the client.

pub mod merge;
pub mod outbound;
pub mod universal;

/// A store failure as a job error: MongoDB being unreachable is an outage
/// of ours, not a failure of the job, so the job waits without using an
/// attempt; anything else is worth a retry.
pub fn store_err(e: impl Into<anyhow::Error>) -> workers::JobError {
    let e = e.into();
    if crate::store::is_outage(&e) {
        workers::JobError::unavailable(format!("store: {e:#}"))
    } else {
        workers::JobError::transient(format!("store: {e:#}"))
    }
}

/// A Redis failure (queue, lease) as a job error: an outage of ours.
pub fn queue_err(e: impl std::fmt::Display) -> workers::JobError {
    workers::JobError::unavailable(format!("redis: {e}"))
}

pub use outbound::{link_lease_name, with_lease, Outbound, OutboundUpsert, OUTBOUND_QUEUE};
