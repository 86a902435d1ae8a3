//! The one list of job kinds, and what is derived from it: the queue names,
//! the workers started, and the hooks run when dead jobs are revived.

use std::sync::Arc;

use futures::future::BoxFuture;
use workers::{DeadLetter, Job, JobError, JobInfo, Queue, Runtime, RuntimeConfig};

use super::{InboundChange, Kind, OutboundUpsert, ProviderPoll};
use crate::store::Store;
use crate::sync::{InboundSync, Outbound};

/// The services the job kinds run with; each kind picks its own
/// ([`Kind::context`]).
#[derive(Clone)]
pub struct Contexts {
    /// Pushes to the CRMs.
    pub outbound: Arc<Outbound>,
    /// Changes from the CRMs.
    pub inbound: Arc<InboundSync>,
}

/// Makes a future that resolves when the workers are to stop.
pub type Stopped = dyn Fn() -> BoxFuture<'static, ()> + Send + Sync;

/// Registers the job kinds: adding a kind is its module plus its name here.
macro_rules! registry {
    ($($kind:ty),+ $(,)?) => {
        /// Every queue, one per job kind, in registration order.
        pub const QUEUES: &[&str] = &[$(<$kind as Kind>::QUEUE),+];

        /// Runs the revive hook of the job's kind.
        async fn revive_hook(store: &Store, job: &JobInfo) -> anyhow::Result<()> {
            $(if job.queue == <$kind as Kind>::QUEUE {
                return on_revive::<$kind>(store, job).await;
            })+
            Ok(())
        }

        /// One runtime per job kind, each configured from `base`.
        pub fn runtimes(
            queue: &Queue,
            contexts: &Contexts,
            base: &RuntimeConfig,
            metrics: &workers::Metrics,
            stopped: &Stopped,
        ) -> Vec<BoxFuture<'static, (&'static str, Result<(), workers::Error>)>> {
            vec![$(runtime::<$kind>(queue, contexts, base, metrics, stopped())),+]
        }
    };
}

registry!(OutboundUpsert, InboundChange, ProviderPoll);

/// Resolves a queue name given by a user to the registered one.
pub fn known_queue(name: &str) -> Option<&'static str> {
    QUEUES.iter().copied().find(|q| *q == name)
}

async fn on_revive<K: Kind>(store: &Store, job: &JobInfo) -> anyhow::Result<()> {
    match serde_json::from_value::<K>(job.payload.clone()) {
        Ok(p) => p.on_revive(store, &job.id).await,
        // an unreadable payload dies again at once; nothing to prepare
        Err(_) => Ok(()),
    }
}

/// Sends dead jobs of `queue` back with fresh attempts: the given `ids`,
/// or, with none, every dead job whose last error contains `needle` (all
/// with no needle). Each job's revive hook runs first. Returns how many
/// moved.
///
/// # Errors
/// When Redis or MongoDB fails; jobs revived before stay revived.
pub async fn revive(
    queue: &Queue,
    store: &Store,
    name: &str,
    ids: Option<&[String]>,
    needle: Option<&str>,
) -> anyhow::Result<u64> {
    const PAGE: u64 = 500;
    let needle = needle.filter(|n| !n.is_empty());
    let mut moved = 0;
    if let Some(ids) = ids {
        for id in ids {
            if let Some(job) = queue.job(id).await? {
                if job.queue == name && job.state == workers::JobState::Dead {
                    revive_hook(store, &job).await?;
                }
            }
        }
        return Ok(queue.retry_dead(name, ids).await?);
    }
    // Revived jobs leave the dead set, so each round reads from the top;
    // jobs that do not match are skipped by offset.
    let mut skipped = 0;
    loop {
        let page = queue.dead(name, skipped, PAGE).await?;
        if page.is_empty() {
            return Ok(moved);
        }
        let mut take = Vec::new();
        for job in &page {
            let matches =
                needle.is_none_or(|n| job.error.as_deref().is_some_and(|e| e.contains(n)));
            if matches {
                revive_hook(store, job).await?;
                take.push(job.id.clone());
            } else {
                skipped += 1;
            }
        }
        if take.is_empty() {
            continue;
        }
        moved += queue.retry_dead(name, &take).await?;
    }
}

/// The runtime of one kind: decodes the payload and runs the kind's
/// handler, span and dead-letter hook.
fn runtime<K: Kind>(
    queue: &Queue,
    contexts: &Contexts,
    base: &RuntimeConfig,
    metrics: &workers::Metrics,
    stop: BoxFuture<'static, ()>,
) -> BoxFuture<'static, (&'static str, Result<(), workers::Error>)> {
    let ctx = K::context(contexts);
    let mut cfg = base.clone();
    cfg.queue = K::QUEUE.into();
    K::tune(&mut cfg);
    let run_ctx = ctx.clone();
    let service = tower::service_fn(move |job: Job| {
        let ctx = run_ctx.clone();
        let fut: BoxFuture<'static, Result<(), JobError>> = Box::pin(async move {
            let payload: K = job.decode()?;
            payload.run(&ctx, &job).await
        });
        fut
    });
    let runtime = Runtime::new(queue.clone(), cfg, service)
        .on_dead(Arc::new(DeadHook::<K>(ctx)))
        .span(|job| match job.decode::<K>() {
            Ok(p) => p.span(job),
            Err(_) => workers::job_span(job),
        })
        .metrics(metrics.clone());
    Box::pin(async move { (K::QUEUE, runtime.run(stop).await) })
}

/// A kind's dead-letter hook over the raw job.
struct DeadHook<K: Kind>(K::Context);

impl<K: Kind> DeadLetter for DeadHook<K> {
    fn on_dead<'a>(
        &'a self,
        job: &'a Job,
        error: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            match job.decode::<K>() {
                Ok(p) => p.on_dead(&self.0, job, error).await,
                Err(e) => {
                    // nothing to record against; the job is parked as it is
                    tracing::error!(job_id = %job.id, error = %e, "dead job has an unreadable payload");
                    Ok(())
                }
            }
        })
    }
}
