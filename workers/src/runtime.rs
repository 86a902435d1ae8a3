//! The worker runtime: claims jobs of one queue from Redis, runs them through
//! the tower stack (retry → timeout → handler), acknowledges in batches, and
//! keeps the pool healthy (heartbeats, recovery of jobs held by dead workers,
//! graceful shutdown that gives unfinished work back).
//!
//! The concurrency bound is enforced at claim time: a job is only taken from
//! Redis when a slot is free, so nothing waits claimed-but-idle in memory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::error::{Error, JobError};
use crate::metrics::Metrics;
use crate::queue::{chrono_ms, AttemptRecord, Queue, Settle};
use crate::retry::{Backoff, RetryPolicy};

/// One claimed job, as the handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: Arc<str>,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The payload as pushed (JSON).
    pub payload: Arc<str>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts the job may use in all.
    pub max_attempts: u32,
    /// The worker running it.
    pub worker: Arc<str>,
    /// When the current attempt started (monotonic, wall clock ms). Shared
    /// by the clones the retry layer makes, so the runtime's copy knows when
    /// the last attempt began.
    clock: Arc<Mutex<(tokio::time::Instant, i64)>>,
}

impl Job {
    /// Decodes the payload. A payload that does not decode will never decode,
    /// so the error is permanent.
    ///
    /// # Errors
    /// When the payload does not match `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.payload)
            .map_err(|e| JobError::permanent(format!("payload does not decode: {e}")))
    }

    pub(crate) fn failure_record(&self, err: &JobError) -> AttemptRecord {
        let (started, started_ms) = *lock(&self.clock);
        AttemptRecord {
            attempt: self.attempt,
            worker: self.worker.to_string(),
            started_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            error: err.to_string(),
        }
    }

    pub(crate) fn next_attempt(&mut self, after: Duration) {
        self.attempt += 1;
        *lock(&self.clock) = (
            tokio::time::Instant::now() + after,
            chrono_ms() + after.as_millis() as i64,
        );
    }
}

/// Called once when a job is parked in the dead set, before it is parked, so
/// the application can record the failure where its users look.
pub trait DeadLetter: Send + Sync + 'static {
    /// The job ran out of attempts or failed permanently with `error`.
    fn on_dead<'a>(&'a self, job: &'a Job, error: &'a JobError) -> BoxFuture<'a, ()>;
}

/// How one runtime behaves.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The queue to serve.
    pub queue: String,
    /// Unique name of this worker in the pool; recovery is keyed by it.
    pub worker_name: String,
    /// Jobs run at once in this process.
    pub concurrency: usize,
    /// Longest an attempt may run.
    pub timeout: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Longer waits than this are rescheduled in Redis rather than slept.
    pub max_inline_wait: Duration,
    /// Wait between claims when the queue is empty.
    pub poll_interval: Duration,
    /// How often this worker says it is alive (and looks for dead peers).
    pub heartbeat: Duration,
    /// A peer silent this long is dead; its jobs go back to the queue.
    pub dead_after: Duration,
    /// On shutdown, how long in-flight jobs may take to finish.
    pub shutdown_grace: Duration,
    /// How long finished jobs are kept for inspection.
    pub done_retention: Duration,
    /// At most this many finished jobs are kept per queue.
    pub done_keep: u64,
    /// Most jobs claimed in one round trip.
    pub fetch_batch: usize,
}

impl RuntimeConfig {
    /// Defaults for `queue` under `worker_name`.
    pub fn new(queue: impl Into<String>, worker_name: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            worker_name: worker_name.into(),
            concurrency: 16,
            timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_inline_wait: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(20),
            done_retention: Duration::from_secs(3600),
            done_keep: 10_000,
            fetch_batch: 64,
        }
    }
}

/// Serves one queue with a handler until told to stop.
pub struct Runtime<S> {
    queue: Queue,
    cfg: RuntimeConfig,
    handler: S,
    dead_letter: Option<Arc<dyn DeadLetter>>,
    metrics: Option<Metrics>,
    make_span: Option<MakeSpan>,
}

/// Makes the span a job runs in (see [`Runtime::span`]).
pub type MakeSpan = Arc<dyn Fn(&Job) -> tracing::Span + Send + Sync>;

/// The default job span: `job` with its id, queue and attempt.
pub fn job_span(job: &Job) -> tracing::Span {
    tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt)
}

impl<S> Runtime<S>
where
    S: Service<Job, Response = (), Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// A runtime for `cfg.queue` that runs `handler`.
    pub fn new(queue: Queue, cfg: RuntimeConfig, handler: S) -> Self {
        Self {
            queue,
            cfg,
            handler,
            dead_letter: None,
            metrics: None,
            make_span: None,
        }
    }

    /// Makes the span each job runs in, retries and dead-lettering
    /// included, so every log line of a job carries what `make` puts in it
    /// (say, ids decoded from the payload). Default: [`job_span`].
    pub fn span(mut self, make: impl Fn(&Job) -> tracing::Span + Send + Sync + 'static) -> Self {
        self.make_span = Some(Arc::new(make));
        self
    }

    /// Records job outcomes, retries and durations into `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Installs the hook called when a job is parked dead.
    pub fn on_dead(mut self, hook: Arc<dyn DeadLetter>) -> Self {
        self.dead_letter = Some(hook);
        self
    }

    /// Runs until `shutdown` completes, then stops claiming, lets in-flight
    /// jobs finish within the grace period and gives the rest back.
    ///
    /// # Errors
    /// When Redis fails at start-up or while leaving the pool.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let cfg = Arc::new(self.cfg);
        let queue = self.queue;
        let qname: Arc<str> = cfg.queue.as_str().into();
        let worker: Arc<str> = cfg.worker_name.as_str().into();

        // A previous life under the same name may have left claims behind.
        queue.leave(&qname, &worker).await?;
        let info = [
            ("queue", cfg.queue.clone()),
            ("concurrency", cfg.concurrency.to_string()),
            ("host", host_name()),
            ("pid", std::process::id().to_string()),
            ("started", chrono_ms().to_string()),
        ];
        queue
            .heartbeat(&qname, &worker, &info, cfg.dead_after * 2)
            .await?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Aborted if this future is dropped, so a dropped runtime goes silent
        // and its peers recover its jobs, as after a crash.
        let mut beat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            queue.clone(),
            cfg.clone(),
            info.to_vec(),
            stop_rx,
        )));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Arc<str>>();
        let acker = tokio::spawn(ack_loop(queue.clone(), cfg.clone(), ack_rx));

        let policy = RetryPolicy {
            backoff: cfg.backoff,
            max_inline_wait: cfg.max_inline_wait,
            queue: queue.clone(),
            metrics: self.metrics.clone(),
        };
        let service = ServiceBuilder::new()
            .retry(policy)
            .map_err(JobError::from_boxed)
            .timeout(cfg.timeout)
            .service(self.handler);

        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let in_flight: Arc<Mutex<HashSet<Arc<str>>>> = Arc::default();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let first = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while permits.len() < cfg.fetch_batch.max(1) {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let claimed = match queue.fetch(&qname, &worker, permits.len()).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(queue = %qname, error = %e, "claiming jobs failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(permits);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(cfg.poll_interval) => continue,
                }
            }
            permits.truncate(claimed.len());
            for ((id, payload, attempt, max_attempts), permit) in claimed.into_iter().zip(permits) {
                let id: Arc<str> = id.into();
                let job = Job {
                    id: id.clone(),
                    queue: qname.clone(),
                    payload: payload.into(),
                    attempt,
                    max_attempts,
                    worker: worker.clone(),
                    clock: Arc::new(Mutex::new((tokio::time::Instant::now(), chrono_ms()))),
                };
                lock(&in_flight).insert(id);
                let span = self
                    .make_span
                    .as_ref()
                    .map_or_else(|| job_span(&job), |f| f(&job));
                tasks.spawn(run_one(
                    job,
                    span,
                    service.clone(),
                    queue.clone(),
                    ack_tx.clone(),
                    self.dead_letter.clone(),
                    in_flight.clone(),
                    cfg.backoff,
                    self.metrics.clone(),
                    permit,
                ));
            }
            while tasks.try_join_next().is_some() {}
        }

        tracing::info!(queue = %qname, worker = %worker, in_flight = tasks.len(), "stopping: no new claims");
        let drained = tokio::time::timeout(cfg.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            tracing::warn!(queue = %qname, jobs = lock(&in_flight).len(), "grace period over: unfinished jobs go back to the queue");
        }
        drop(ack_tx);
        if let Err(e) = acker.await {
            tracing::warn!(error = %e, "ack task ended abnormally");
        }
        let _ = stop_tx.send(true);
        let _ = (&mut beat.0).await;
        // Whatever is still claimed (aborted jobs) goes back with its attempt.
        queue.leave(&qname, &worker).await
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[allow(clippy::too_many_arguments)]
async fn run_one<S>(
    job: Job,
    span: tracing::Span,
    service: S,
    queue: Queue,
    ack: mpsc::UnboundedSender<Arc<str>>,
    dead_letter: Option<Arc<dyn DeadLetter>>,
    in_flight: Arc<Mutex<HashSet<Arc<str>>>>,
    backoff: Backoff,
    metrics: Option<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: Service<Job, Response = (), Error = JobError> + Send,
    S::Future: Send,
{
    let id = job.id.clone();
    let outcome = {
        let job = job.clone();
        tracing::Instrument::instrument(async move { service.oneshot(job).await }, span.clone())
            .await
    };
    let seconds = lock(&job.clock).0.elapsed().as_secs_f64();
    let outcome_name = match outcome {
        Ok(()) => {
            let _ = ack.send(id.clone());
            "completed"
        }
        Err(err) => {
            tracing::Instrument::instrument(
                settle_failure(&job, &err, &queue, backoff, dead_letter.as_deref()),
                span,
            )
            .await
        }
    };
    if let Some(m) = &metrics {
        let q: &str = &job.queue;
        m.inc("jobs_total", &[("queue", q), ("outcome", outcome_name)]);
        if outcome_name == "rescheduled" {
            m.inc("job_retries_total", &[("queue", q)]);
        }
        m.observe("job_duration_seconds", &[("queue", q)], seconds);
    }
    lock(&in_flight).remove(&id);
}

/// The retry layer has given up (or handed back a long wait): record the
/// attempt, then reschedule the job or park it dead.
async fn settle_failure(
    job: &Job,
    err: &JobError,
    queue: &Queue,
    backoff: Backoff,
    hook: Option<&dyn DeadLetter>,
) -> &'static str {
    // The retry layer may have moved on to later attempts; the job id and
    // queue are what matter here, and the final attempt number is in Redis.
    let mut attempt_job = job.clone();
    if let Ok(Some(info)) = queue.job(&job.id).await {
        attempt_job.attempt = info.attempts;
    }
    let record = attempt_job.failure_record(err);
    if let Err(e) = queue.record_attempt(&job.id, &record).await {
        tracing::warn!(job_id = %job.id, error = %e, "could not record a failed attempt");
    }
    let retry = err.is_transient() && attempt_job.attempt < job.max_attempts;
    let how = if retry {
        let delay = backoff.delay(attempt_job.attempt, err.retry_after());
        tracing::warn!(attempt = attempt_job.attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "attempt failed; rescheduled");
        Settle::Retry(delay)
    } else {
        tracing::warn!(job_id = %job.id, attempts = attempt_job.attempt, error = %err, "job is dead");
        if let Some(hook) = hook {
            hook.on_dead(&attempt_job, err).await;
        }
        Settle::Dead
    };
    if let Err(e) = queue
        .settle(&job.queue, &job.worker, &job.id, how, &err.to_string())
        .await
    {
        tracing::error!(job_id = %job.id, error = %e, "could not settle a failed job; it will be recovered");
    }
    if retry {
        "rescheduled"
    } else {
        "dead"
    }
}

async fn ack_loop(
    queue: Queue,
    cfg: Arc<RuntimeConfig>,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
) {
    let mut batch: Vec<String> = Vec::with_capacity(1024);
    while let Some(first) = rx.recv().await {
        batch.push(first.to_string());
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(id) => batch.push(id.to_string()),
                Err(_) => break,
            }
        }
        if let Err(e) = queue
            .ack(
                &cfg.queue,
                &cfg.worker_name,
                &batch,
                cfg.done_retention,
                cfg.done_keep,
            )
            .await
        {
            // The jobs stay claimed by this worker; if it dies they are
            // recovered and run again (delivery is at least once).
            tracing::error!(error = %e, jobs = batch.len(), "acknowledging jobs failed");
        }
        batch.clear();
    }
}

async fn heartbeat_loop(
    queue: Queue,
    cfg: Arc<RuntimeConfig>,
    info: Vec<(&'static str, String)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(cfg.heartbeat) => {}
        }
        if let Err(e) = queue
            .heartbeat(&cfg.queue, &cfg.worker_name, &info, cfg.dead_after * 2)
            .await
        {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        match queue
            .reap(&cfg.queue, &cfg.worker_name, cfg.dead_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(queue = %cfg.queue, jobs = n, "recovered jobs of a dead worker")
            }
            Err(e) => tracing::warn!(error = %e, "looking for dead workers failed"),
        }
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
