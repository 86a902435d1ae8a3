//! Operator endpoints on the queues: their depths and history, jobs by
//! state, the dead sets sent back, finished jobs purged, live workers.

use std::time::Duration;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::StateParam;
use crate::api::auth::{ApiAuth, ViewerAuth};
use crate::api::errors::{
    Accepted, ApiError, ApiResult, BAD_REQUEST, CONFLICT, NOT_FOUND, UNAVAILABLE,
};
use crate::api::jobs::{known_queue, view, JobView, Moved, QUEUES};
use crate::api::views::Count;
use crate::api::ApiState;

/// What a queue finished in one minute.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct MinuteView {
    /// When the minute began (the queue's Redis clock).
    pub start: chrono::DateTime<chrono::Utc>,
    /// Jobs completed in it.
    pub completed: u64,
    /// Attempts that failed in it (retried or dead).
    pub failed: u64,
}

/// One queue's throughput, minute by minute.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueueHistory {
    /// Queue name.
    pub queue: String,
    /// Oldest minute first; the last is the current, unfinished one.
    pub minutes: Vec<MinuteView>,
}

/// One queue at a glance.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct QueueOverview {
    /// Queue name.
    pub queue: String,
    /// Ready to run.
    pub pending: u64,
    /// Waiting for their time.
    pub scheduled: u64,
    /// Claimed by workers.
    pub running: u64,
    /// Finished, still kept.
    pub done: u64,
    /// Waiting for an operator.
    pub dead: u64,
    /// Completed since the queue exists.
    pub completed_total: u64,
    /// Failed attempts since the queue exists.
    pub failed_total: u64,
    /// Completed in the last 5 minutes.
    pub completed_5m: u64,
    /// Failed attempts in the last 5 minutes.
    pub failed_5m: u64,
    /// Failed attempts / all attempts in the last 5 minutes (0 when idle).
    pub failure_rate_5m: f64,
    /// How long the oldest pending job has waited, ms.
    pub oldest_pending_ms: Option<u64>,
}

/// A live worker.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// Unique name.
    pub name: String,
    /// Queue it serves.
    pub queue: String,
    /// Host.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Jobs it may run at once.
    pub concurrency: Option<u32>,
    /// Last heartbeat, ms since the epoch.
    pub last_heartbeat_ms: i64,
    /// Jobs it holds now.
    pub in_flight: u64,
}

/// The operator endpoints on the queues and workers.
pub struct QueueOpsApi;

#[OpenApi(tag = "crate::api::Tag::Operators")]
impl QueueOpsApi {
    /// Every queue with its depth per state, recent throughput and failure
    /// rate, and the age of its oldest pending job.
    #[oai(path = "/queues", method = "get")]
    async fn queues(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
    ) -> ApiResult<Json<Vec<QueueOverview>>, UNAVAILABLE> {
        let q = state.enqueuer.queue();
        let mut out = Vec::new();
        for &name in QUEUES {
            let c = q.counts(name).await.map_err(ApiError::unavailable)?;
            let t = q.throughput(name, 5).await.map_err(ApiError::unavailable)?;
            let oldest = q
                .oldest_pending_age(name)
                .await
                .map_err(ApiError::unavailable)?;
            let attempts = t.completed + t.failed;
            out.push(QueueOverview {
                queue: name.into(),
                pending: c.pending,
                scheduled: c.scheduled,
                running: c.running,
                done: c.done,
                dead: c.dead,
                completed_total: c.completed_total,
                failed_total: c.failed_total,
                completed_5m: t.completed,
                failed_5m: t.failed,
                failure_rate_5m: if attempts == 0 {
                    0.0
                } else {
                    t.failed as f64 / attempts as f64
                },
                oldest_pending_ms: oldest.map(|d| d.as_millis() as u64),
            });
        }
        Ok(Json(out))
    }

    /// Every queue's completed jobs and failed attempts per minute over
    /// the last `minutes` minutes (1 to 60, default 60): what the console's
    /// throughput graph draws.
    #[oai(path = "/queues/history", method = "get")]
    async fn history(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Minutes to cover, 1 to 60.
        #[oai(validator(minimum(value = "1"), maximum(value = "60")))]
        minutes: Query<Option<u32>>,
    ) -> ApiResult<Json<Vec<QueueHistory>>, { BAD_REQUEST | UNAVAILABLE }> {
        let q = state.enqueuer.queue();
        let mut out = Vec::with_capacity(QUEUES.len());
        for &name in QUEUES {
            let minutes = q
                .history(name, minutes.0.unwrap_or(60))
                .await
                .map_err(ApiError::unavailable)?;
            out.push(QueueHistory {
                queue: name.into(),
                minutes: minutes
                    .iter()
                    .map(|m| MinuteView {
                        start: chrono::DateTime::from_timestamp_millis(m.start_ms)
                            .unwrap_or_default(),
                        completed: m.completed,
                        failed: m.failed,
                    })
                    .collect(),
            });
        }
        Ok(Json(out))
    }

    /// Jobs of a queue in one state, a page at a time.
    #[oai(path = "/queues/:queue/jobs", method = "get")]
    async fn jobs(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        queue: Path<String>,
        /// Which state.
        #[oai(name = "state")]
        job_state: Query<StateParam>,
        /// Jobs to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Jobs to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<Vec<JobView>>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let name = known_queue(&queue.0)?;
        let q = state.enqueuer.queue();
        let jobs = q
            .list(
                name,
                job_state.0.into(),
                offset.0.unwrap_or(0),
                limit.0.unwrap_or(50),
            )
            .await
            .map_err(ApiError::unavailable)?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let attempts = q.attempts(&job.id).await.map_err(ApiError::unavailable)?;
            out.push(view(job, attempts));
        }
        Ok(Json(out))
    }

    /// Send the dead jobs of a queue back (all, or those whose last error
    /// contains a text).
    #[oai(path = "/queues/:queue/dead/retry", method = "post")]
    async fn retry_dead(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        queue: Path<String>,
        /// Only dead jobs whose last error contains this text.
        #[oai(name = "errorContains", validator(max_length = 500))]
        error_contains: Query<Option<String>>,
    ) -> ApiResult<Accepted<Moved>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let name = known_queue(&queue.0)?;
        let retried = crate::jobs::revive(
            state.enqueuer.queue(),
            &state.store,
            name,
            None,
            error_contains.0.as_deref(),
        )
        .await
        .map_err(ApiError::unavailable)?;
        Ok(Accepted::Accepted(Json(Moved { retried })))
    }

    /// Delete finished jobs older than a cutoff.
    #[oai(path = "/queues/:queue/done/purge", method = "post")]
    async fn purge(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        queue: Path<String>,
        /// Only jobs finished longer ago than this many seconds (default 0: all).
        #[oai(name = "olderThanSecs", validator(maximum(value = "31536000")))]
        older_than: Query<Option<u64>>,
    ) -> ApiResult<Json<Count>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let name = known_queue(&queue.0)?;
        let count = state
            .enqueuer
            .queue()
            .purge_done(name, Duration::from_secs(older_than.0.unwrap_or(0)))
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(Count { count }))
    }

    /// Live workers of every queue.
    #[oai(path = "/workers", method = "get")]
    async fn workers(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
    ) -> ApiResult<Json<Vec<WorkerView>>, UNAVAILABLE> {
        let mut out = Vec::new();
        for &name in QUEUES {
            for w in state
                .enqueuer
                .queue()
                .workers(name)
                .await
                .map_err(ApiError::unavailable)?
            {
                out.push(WorkerView {
                    name: w.name,
                    queue: w.queue,
                    host: w.host,
                    pid: w.pid,
                    concurrency: w.concurrency,
                    last_heartbeat_ms: w.last_heartbeat_ms,
                    in_flight: w.in_flight,
                });
            }
        }
        Ok(Json(out))
    }
}
