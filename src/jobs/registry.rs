//! The one list of job kinds, and what is derived from it: the queue names,
//! the workers started, and the hooks run when dead jobs are revived.

use std::sync::Arc;

use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use futures::future::BoxFuture;
use workers::{DeadLetter, Job, JobError, JobInfo, Queue, RedisBackend};

use super::{Kind, Run, Tuning};

use crate::store::Store;
use crate::sync::{InboundSync, Outbound};

/// Declares the job kinds' modules and derives from their list the queue
/// names, the workers started and the revive hooks: adding a kind is its
/// file plus its line in the list (in `jobs/mod.rs`).
macro_rules! registry {
    ($($module:ident :: $kind:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every queue, one per job kind, in registration order.
        pub const QUEUES: &[&str] = &[$(<$module::$kind as Kind>::QUEUE),+];

        /// Runs the revive hook of the job's kind.
        async fn revive_hook(store: &Store, job: &workers::JobInfo) -> anyhow::Result<()> {
            $(if job.queue == <$module::$kind as Kind>::QUEUE {
                return registry::on_revive::<$module::$kind>(store, job).await;
            })+
            Ok(())
        }

        /// Runs one apalis worker per job kind, named `name` in the pool,
        /// under one apalis `Monitor` until `shutdown`: then in-flight jobs
        /// get `grace` to finish, and what is still claimed goes back to
        /// its queue with its attempt returned.
        ///
        /// # Errors
        /// When a worker fails for good, or the claims cannot be given back
        /// (peers recover them once this worker's heartbeat lapses).
        pub async fn run_workers(
            queue: &Queue,
            contexts: &Contexts,
            base: &Tuning,
            name: &str,
            metrics: &workers::Metrics,
            shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        ) -> anyhow::Result<()> {
            use apalis::layers::WorkerBuilderExt as _;
            use apalis_core::worker::ext::parallelize::ParallelizeExt as _;
            use registry::{backend_of, leave, work, Leave};
            let mut monitor = apalis_core::monitor::Monitor::new();
            let mut leaving: Vec<Leave> = Vec::new();
            $(
                let (backend, tuning) = backend_of::<$module::$kind>(queue, contexts, base, metrics);
                let (b, n, ctx) = (backend.clone(), name.to_owned(), <$module::$kind as Kind>::context(contexts));
                monitor = monitor.register(move |_| {
                    apalis_core::worker::builder::WorkerBuilder::new(n.as_str())
                        .backend(b.clone())
                        .data(ctx.clone())
                        .concurrency(tuning.worker.concurrency)
                        .retry(b.retry_policy())
                        .timeout(tuning.timeout)
                        .parallelize(tokio::spawn)
                        .build(work::<$module::$kind>)
                });
                leaving.push(leave(backend, name));
            )+
            let grace = base.worker.shutdown_grace;
            let result = monitor
                .shutdown_timeout(grace)
                .run_with_signal(async move {
                    shutdown.await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            // a drain the grace period cut short left jobs claimed
            for give_back in leaving {
                if let Err(e) = give_back().await {
                    tracing::error!(error = %e, "giving back claimed jobs failed; peers recover them");
                }
            }
            result.map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
}

/// The services the job kinds run with; each kind picks its own
/// ([`Kind::context`]).
#[derive(Clone)]
pub struct Contexts {
    /// Pushes to the CRMs.
    pub outbound: Arc<Outbound>,
    /// Changes from the CRMs.
    pub inbound: Arc<InboundSync>,
    /// Queues the jobs a job sets off.
    pub enqueuer: super::Enqueuer,
    /// How long a slice of a first sync's writes runs.
    pub first_sync_slice: std::time::Duration,
    /// Pushes waiting on a connection that make a push gather them into
    /// batches (0: never).
    pub gather_backlog: u64,
}

/// The apalis worker function of every kind: runs [`Kind::handle`].
pub(super) async fn work<K: Kind>(
    job: K,
    ctx: Data<K::Context>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), JobError> {
    let run = Run {
        id: id.to_string(),
        attempt: u32::try_from(attempt.current()).unwrap_or(u32::MAX),
    };
    // on the heap: a kind's future is large (a first sync's steps), and a
    // debug build's frames would overflow a worker thread's stack
    Box::pin(job.handle(&ctx, &run)).await
}

/// Gives back what a worker still holds claimed.
pub(super) type Leave = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), workers::Error>> + Send>;

pub(super) fn leave<K: Kind>(backend: RedisBackend<K>, name: &str) -> Leave {
    let name = name.to_owned();
    Box::new(move || Box::pin(async move { backend.leave(&name).await }))
}

/// The backend of one kind: its queue, settings, span and dead-letter hook.
pub(super) fn backend_of<K: Kind>(
    queue: &Queue,
    contexts: &Contexts,
    base: &Tuning,
    metrics: &workers::Metrics,
) -> (RedisBackend<K>, Tuning) {
    let mut tuning = base.clone();
    tuning.worker.queue = K::QUEUE.into();
    K::tune(&mut tuning);
    let backend = RedisBackend::<K>::new(queue.clone(), tuning.worker.clone())
        .on_dead(Arc::new(DeadHook::<K>(K::context(contexts))))
        .span(|task: &Task<K>| match Job::of(task) {
            Some(job) => task.args.span(job),
            None => workers::job_span(task),
        })
        .metrics(metrics.clone());
    (backend, tuning)
}

pub(super) async fn on_revive<K: Kind>(store: &Store, job: &JobInfo) -> anyhow::Result<()> {
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
                    super::revive_hook(store, &job).await?;
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
                super::revive_hook(store, job).await?;
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
