//! The pool-wide lease the jobs of one link take turns on (pushes, and the
//! inbound changes of a linked record), so an older state never lands
//! after a newer one.

use std::time::Duration;

use workers::{JobError, Queue};

use crate::domain::{ContactId, Provider};

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
/// Unavailable when Redis fails; throttled when the lease stays busy; else
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
        .map_err(super::queue_err)?
        .ok_or_else(|| JobError::throttled(busy, Some(Duration::from_secs(1))))?;
    let res = work.await;
    if let Err(e) = lease.release().await {
        tracing::warn!(lease = name, error = %e, "releasing a lease failed; it expires by itself");
    }
    res
}
