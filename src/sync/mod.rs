//! The sync rules: what a job does with the app's store and the CRMs.
//! Handlers return [`workers::JobError`]s: store failures are transient (the
//! database may come back), CRM failures are classified by the client.

use futures::future::BoxFuture;

use crate::domain::{ContactId, Provider};
use crate::store::Store;

mod fanout;
pub mod inbound;
mod lease;
pub mod merge;
pub mod outbound;
pub mod policy;
pub mod poll;

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

/// Runs `f` on each item, `limit` at a time; stops at the first error.
/// For the per-record bookkeeping of pages and batches: MongoDB writes
/// that depend on one another only within a record.
///
/// # Errors
/// The first error of `f`.
pub(crate) async fn each<T, R, F, Fut>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    f: F,
) -> Result<Vec<R>, workers::JobError>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, workers::JobError>>,
{
    use futures::{StreamExt, TryStreamExt};
    // the futures made first (they do nothing until polled): a stream
    // mapping borrowed items is not `Send` for every lifetime, as a job
    // handler's future must be
    let futures: Vec<Fut> = items.into_iter().map(f).collect();
    futures::stream::iter(futures)
        .buffered(limit)
        .try_collect()
        .await
}

pub use inbound::InboundSync;
pub use lease::{link_lease_name, with_lease};
pub use outbound::Outbound;
pub use policy::{Applied, ConflictPolicy};

/// What the sync rules ask of the job queue: the pushes a change sets off.
/// The `jobs` layer implements it, so these rules never name a job kind
/// and dependencies point one way (`jobs` uses `sync`, not back).
pub trait PushQueue: Send + Sync + 'static {
    /// Marks the contact's links with `providers` pending at `version` and
    /// queues one push per provider.
    fn push_contact<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a crate::domain::CustomerId,
        providers: &'a [Provider],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// [`Self::push_contact`] for a write step's single pushes, which
    /// are never gathered back into a write step.
    fn push_singly<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a crate::domain::CustomerId,
        providers: &'a [Provider],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Marks the contact's links pending at `version` and queues `jobs`
    /// (planned, and written with the change in its outbox, before).
    fn push_jobs<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a crate::domain::CustomerId,
        jobs: &'a [(Provider, String)],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Whether the job is still to run (queued, waiting for a retry, or
    /// running).
    fn is_live<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<bool, workers::Error>>;
}
