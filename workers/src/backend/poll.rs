//! apalis' `Backend` for [`RedisBackend`]: claiming (`poll_next`), start-up
//! (`poll_ready`) and shutdown (`poll_close`).
//!
//! None of these ever returns an error: apalis ends a worker whose backend
//! fails a poll. Redis failures are logged and backed off from instead, and
//! a payload that does not decode is dead-lettered rather than yielded (the
//! `DurableBackend` apalis wraps around this one would end the worker on it).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use apalis_core::backend::queue::Queue as QueueName;
use apalis_core::backend::Backend;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::backend::shared::{Shared, SyncFuture};
use crate::backend::{settle, upkeep, RedisBackend};
use crate::claim::{Claimed, Settle};
use crate::error::{Error, JobError};
use crate::job::{lock, Job};

/// The polling state of a backend that serves a worker.
pub(crate) struct Running {
    pub(crate) shared: Arc<Shared>,
    /// Handed to the upkeep task when it starts.
    acks: Option<mpsc::UnboundedReceiver<Arc<str>>>,
    service: String,
    upkeep: Option<Upkeep>,
    /// Claimed jobs not yet handed to apalis.
    buffer: VecDeque<Task<String>>,
    /// Claims in flight. Slots freed while one is out are claimed by the
    /// next without waiting for it: with a single claim at a time, every
    /// slot would wait up to two round trips to be filled again.
    claims: Vec<Claim>,
    /// An empty queue, a failing Redis or a pause: no claim until it fires.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    failures: u32,
    /// After a failed claim the reply may have been lost with the jobs
    /// claimed in Redis: look for them before claiming again.
    check_claims: bool,
    /// Dead-lettering of jobs that are not to run; each holds a slot.
    side: JoinSet<()>,
    /// When `poll_close` began waiting for `side`.
    closing_since: Option<tokio::time::Instant>,
}

/// Most claims in flight at once for one worker.
const MAX_CLAIMS: usize = 3;

/// One claim in flight.
struct Claim {
    /// Slots it may fill, held for it until it returns.
    slots: usize,
    /// Whether it looks for claims whose reply was lost first.
    checks: bool,
    reply: SyncFuture<Result<Vec<Claimed>, Error>>,
}

struct Upkeep {
    task: tokio::task::JoinHandle<()>,
    close: watch::Sender<bool>,
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        // a dropped worker goes silent, as after a crash
        self.task.abort();
    }
}

impl Running {
    pub(crate) fn new(
        shared: Shared,
        acks: mpsc::UnboundedReceiver<Arc<str>>,
        worker: &WorkerContext,
    ) -> Self {
        Self {
            shared: Arc::new(shared),
            acks: Some(acks),
            service: worker.get_service().to_owned(),
            upkeep: None,
            buffer: VecDeque::new(),
            claims: Vec::new(),
            wait: None,
            failures: 0,
            check_claims: false,
            side: JoinSet::new(),
            closing_since: None,
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.upkeep.is_none() {
            let (close, closed) = watch::channel(false);
            let acks = self
                .acks
                .take()
                .unwrap_or_else(|| mpsc::unbounded_channel().1);
            let task = tokio::spawn(upkeep::run(
                self.shared.clone(),
                acks,
                closed,
                self.service.clone(),
            ));
            self.upkeep = Some(Upkeep { task, close });
        }
        if self.shared.is_started() {
            return Poll::Ready(());
        }
        self.shared.set_waker(cx.waker());
        if self.shared.is_started() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        decodes: fn(&str) -> Result<(), String>,
    ) -> Poll<Option<Result<Task<String>, Error>>> {
        let cfg = self.shared.cfg.clone();
        loop {
            if let Some(task) = self.buffer.pop_front() {
                self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
                return Poll::Ready(Some(Ok(task)));
            }
            if self.poll_claims(cx, decodes) {
                continue;
            }
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            if let Some(until) = self.shared.pause.until() {
                self.wait = Some(Box::pin(tokio::time::sleep_until(until)));
                continue;
            }
            while let Poll::Ready(Some(_)) = self.side.poll_join_next(cx) {}
            let out = self.claims.len();
            // a look for lost claims must not see the jobs of a claim still
            // out (claimed in Redis, not held yet): it goes out alone
            if out >= MAX_CLAIMS || (out > 0 && self.check_claims) {
                return Poll::Pending;
            }
            // a claim beside one already out waits for a worthwhile batch:
            // each call costs Redis a fixed amount whatever it claims
            let least = if out == 0 {
                1
            } else {
                (cfg.concurrency.min(cfg.fetch_batch) / 4).max(1)
            };
            if self.free() < least {
                self.shared.set_waker(cx.waker());
                if self.free() < least {
                    return Poll::Pending;
                }
            }
            let n = self.free().min(cfg.fetch_batch.max(1));
            let shared = self.shared.clone();
            let checks = self.check_claims;
            self.claims.push(Claim {
                slots: n,
                checks,
                reply: SyncFuture::new(async move {
                    if checks {
                        give_back_lost_claims(&shared).await?;
                    }
                    let (q, w) = (&shared.qname, &shared.worker);
                    let cfg = &shared.cfg;
                    shared
                        .queue
                        .fetch(q, w, n, cfg.max_stalls, cfg.dead_after)
                        .await
                }),
            });
        }
    }

    /// Takes in the claims that returned; true when one did.
    fn poll_claims(
        &mut self,
        cx: &mut Context<'_>,
        decodes: fn(&str) -> Result<(), String>,
    ) -> bool {
        let cfg = self.shared.cfg.clone();
        let mut any = false;
        let mut i = 0;
        while i < self.claims.len() {
            let Poll::Ready(claimed) = self.claims[i].reply.poll(cx) else {
                i += 1;
                continue;
            };
            let claim = self.claims.swap_remove(i);
            any = true;
            match claimed {
                Ok(jobs) => {
                    self.failures = 0;
                    if claim.checks {
                        self.check_claims = false;
                    }
                    if jobs.is_empty() {
                        self.sleep(cfg.poll_interval);
                    }
                    for c in jobs {
                        self.accept(c, decodes);
                    }
                }
                Err(e) => {
                    self.failures += 1;
                    self.check_claims = true;
                    let wait = (cfg.poll_interval * 2u32.pow(self.failures.min(5)))
                        .min(Duration::from_secs(2))
                        .max(cfg.poll_interval);
                    tracing::warn!(queue = %self.shared.qname, error = %e, retry_in_ms = wait.as_millis() as u64, "claiming jobs failed");
                    self.sleep(wait);
                }
            }
        }
        any
    }

    /// Stops claiming; what is claimed but was not handed over stays in
    /// the running set, and the upkeep gives it back (attempts returned)
    /// when it leaves the pool, after writing the last acks.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.claims.clear();
        self.wait = None;
        if !self.buffer.is_empty() {
            tracing::info!(queue = %self.shared.qname, jobs = self.buffer.len(), "stopping: claimed jobs that did not start go back to the queue");
            self.buffer.clear();
        }
        while let Poll::Ready(Some(_)) = self.side.poll_join_next(cx) {}
        if !self.side.is_empty() {
            let grace = self.shared.cfg.shutdown_grace;
            let since = *self
                .closing_since
                .get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < grace {
                let wait = self
                    .wait
                    .insert(Box::pin(tokio::time::sleep_until(since + grace)));
                let _ = wait.as_mut().poll(cx);
                return Poll::Pending;
            }
            self.side.abort_all();
        }
        let Some(upkeep) = self.upkeep.as_mut() else {
            return Poll::Ready(());
        };
        let _ = upkeep.close.send(true);
        match Pin::new(&mut upkeep.task).poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Slots neither running a job, nor holding one claimed, nor held for a
    /// claim in flight.
    fn free(&self) -> usize {
        let claimed: usize = self.claims.iter().map(|c| c.slots).sum();
        let used = self.shared.in_flight.load(Ordering::Acquire)
            + self.side.len()
            + self.buffer.len()
            + claimed;
        self.shared.cfg.concurrency.max(1).saturating_sub(used)
    }

    fn sleep(&mut self, wait: Duration) {
        self.wait = Some(Box::pin(tokio::time::sleep(wait)));
    }

    /// Buffers a claimed job, or dead-letters it on the side when it is not
    /// to run or does not decode.
    fn accept(&mut self, c: Claimed, decodes: fn(&str) -> Result<(), String>) {
        let shared = &self.shared;
        let id: Arc<str> = c.id.into();
        lock(&shared.held).insert(id.clone());
        let job = Job::new(
            id.clone(),
            shared.qname.clone(),
            c.payload.as_str().into(),
            c.attempt,
            c.max_attempts,
            shared.worker.clone(),
        );
        let bury = match (c.bury, decodes(&c.payload)) {
            (Some(reason), _) => Some((JobError::permanent(reason), false)),
            (None, Err(e)) => Some((
                JobError::permanent(format!("payload does not decode: {e}")),
                true,
            )),
            (None, Ok(())) => None,
        };
        if let Some((err, attempt_failed)) = bury {
            let shared = shared.clone();
            let span = job.span();
            self.side.spawn(
                async move { settle::bury(&shared, &job, &err, attempt_failed).await }
                    .instrument(span),
            );
            return;
        }
        let task = TaskBuilder::new(c.payload)
            .task_id(TaskId::from_string(id.to_string()))
            // apalis counts an attempt as the call starts: seeded one below
            // ours, `task.attempt()` is this attempt's number while it runs
            .attempt(c.attempt.saturating_sub(1) as usize)
            .max_attempts(c.max_attempts as usize)
            .queue(QueueName::from(&*shared.qname))
            .lock_by(Some(shared.worker.to_string()))
            .status(Status::Queued)
            .data(job)
            .build();
        self.buffer.push_back(task);
    }
}

/// Gives back jobs claimed in Redis under this worker that it does not know
/// of: a claim whose reply was lost. They never ran, so their attempt is
/// given back.
async fn give_back_lost_claims(shared: &Shared) -> Result<(), Error> {
    let (q, w) = (&shared.qname, &shared.worker);
    for id in shared.queue.claimed_by(q, w).await? {
        if lock(&shared.held).contains(id.as_str()) {
            continue;
        }
        // a job acknowledged meanwhile is no longer claimed: this is a no-op
        shared
            .queue
            .settle(q, w, &id, Settle::Requeue, "", &shared.limits)
            .await?;
        tracing::warn!(job_id = %id, "gave back a job claimed by a call whose reply was lost");
    }
    Ok(())
}

fn decodes<Args: DeserializeOwned>(payload: &str) -> Result<(), String> {
    serde_json::from_str::<Args>(payload)
        .map(drop)
        .map_err(|e| e.to_string())
}

impl<Args> Backend for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<String>;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.running(worker).poll_ready(cx).map(Ok)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<String>, Error>>> {
        self.running(worker).poll_next(cx, decodes::<Args>)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Error>> {
        match self.run.as_mut() {
            Some(run) => run.poll_close(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<Args> RedisBackend<Args> {
    /// The worker state, made by `middleware` (or here if apalis skipped it).
    fn running(&mut self, worker: &WorkerContext) -> &mut Running {
        if self.run.is_none() {
            let run = self.start_worker(worker);
            self.run = Some(Box::new(run));
        }
        self.run.as_mut().expect("set above")
    }

    pub(crate) fn start_worker(&self, worker: &WorkerContext) -> Running {
        let (shared, acks) = Shared::new(
            self.queue.clone(),
            self.cfg.clone(),
            worker.name(),
            self.dead_letter.clone(),
            self.metrics.clone(),
        );
        Running::new(shared, acks, worker)
    }
}
