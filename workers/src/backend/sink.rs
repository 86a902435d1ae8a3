//! apalis' `Sink` for [`RedisBackend`], which gives it `TaskSink` (`push`,
//! `push_bulk`, `push_task`, …): tasks are buffered by `start_send` and
//! written by `poll_flush` in one round trip (`Queue::push_jobs`). A task's
//! `task_id` becomes the job id (pushing an id that exists already does
//! nothing), its `max_attempts` its attempts (default
//! `WorkerConfig::max_attempts`), its `run_at` (seconds since the epoch) its
//! earliest run.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use apalis_core::task::Task;
use futures::Sink;

use crate::backend::shared::SyncFuture;
use crate::backend::RedisBackend;
use crate::error::Error;
use crate::push::NewJob;
use crate::queue::{chrono_ms, new_job_id};

/// Tasks waiting for the next flush, and the flush under way.
#[derive(Default)]
pub(crate) struct SinkState {
    buffer: Vec<Task<String>>,
    flushing: Option<SyncFuture<Result<(), Error>>>,
}

impl<Args> RedisBackend<Args> {
    /// Drives the flush under way, if any.
    fn poll_flushing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(flush) = self.sink.flushing.as_mut() {
            let result = ready!(flush.poll(cx));
            self.sink.flushing = None;
            result?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<Args> Sink<Task<String>> for RedisBackend<Args> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flushing(cx)
    }

    fn start_send(self: Pin<&mut Self>, task: Task<String>) -> Result<(), Error> {
        self.get_mut().sink.buffer.push(task);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_flushing(cx))?;
            if this.sink.buffer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let now_ms = chrono_ms();
            let jobs: Vec<NewJob> = this
                .sink
                .buffer
                .drain(..)
                .map(|task| new_job(task, this.cfg.max_attempts, now_ms))
                .collect();
            let (queue, name) = (this.queue.clone(), this.cfg.queue.clone());
            this.sink.flushing = Some(SyncFuture::new(async move {
                queue.push_jobs(&name, &jobs).await
            }));
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_flush(cx)
    }
}

fn new_job(task: Task<String>, default_attempts: u32, now_ms: i64) -> NewJob {
    let id = task.task_id().map_or_else(new_job_id, |id| id.to_string());
    let max_attempts = task
        .max_attempts()
        .map_or(default_attempts, |m| m.clamp(1, u32::MAX as usize) as u32);
    // `run_at` is the pusher's clock; Redis schedules by its own from now
    let delay = task.run_at().map_or(Duration::ZERO, |at| {
        let at_ms = i64::try_from(at).unwrap_or(i64::MAX / 1000) * 1000;
        Duration::from_millis(at_ms.saturating_sub(now_ms).max(0) as u64)
    });
    let group = task
        .data()
        .get::<crate::Group>()
        .map(|g| g.0.clone())
        .unwrap_or_default();
    NewJob {
        id,
        payload: task.args,
        max_attempts,
        delay,
        group,
    }
}
