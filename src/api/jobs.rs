//! `/api/jobs` and `/api/queues`: inspect jobs and send dead ones back.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{ApiAuth, ViewerAuth};
use super::errors::{Accepted, ApiError, ApiResult, BAD_REQUEST, CONFLICT, NOT_FOUND, UNAVAILABLE};
use super::ApiState;
use crate::domain::Provider;

/// Queues this api knows.
pub(super) use crate::jobs::QUEUES;

/// One failed attempt.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// How long it ran.
    pub duration_ms: u64,
    /// Why it failed.
    pub error: String,
}

/// A job with its failed attempts.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Queue.
    pub queue: String,
    /// `pending`, `scheduled`, `running`, `done` or `dead`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The payload.
    pub payload: serde_json::Value,
    /// The last error.
    pub error: Option<String>,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// Times a worker died while running it (at `MAX_STALLS` it is dead).
    pub stalls: u32,
    /// Times it waited for an outage of ours (MongoDB, Redis) to end;
    /// those waits use no attempt.
    pub postponed: u32,
    /// Pushed at, ms since the epoch.
    pub created_ms: i64,
    /// State changed at, ms since the epoch.
    pub updated_ms: i64,
    /// Failed attempts, oldest first.
    pub failed_attempts: Vec<AttemptView>,
}

/// Job counts of a queue.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueueStats {
    /// Queue.
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
}

/// How many jobs moved.
#[derive(Debug, Object, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// Jobs sent back to the queue.
    pub retried: u64,
}

/// A queued job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct Queued {
    /// The job id.
    pub job_id: String,
}

pub(super) fn known_queue(q: &str) -> Result<&'static str, ApiError> {
    QUEUES.iter().find(|k| **k == q).copied().ok_or_else(|| {
        ApiError::not_found(format!("no queue {q:?} (known: {})", QUEUES.join(", ")))
    })
}

pub(super) fn view(job: workers::JobInfo, attempts: Vec<workers::AttemptRecord>) -> JobView {
    JobView {
        state: serde_json::to_value(job.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        id: job.id,
        queue: job.queue,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        payload: job.payload,
        error: job.error,
        worker: job.worker,
        stalls: job.stalls,
        postponed: job.postponed,
        created_ms: job.created_ms,
        updated_ms: job.updated_ms,
        failed_attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                worker: a.worker,
                started_ms: a.started_ms,
                duration_ms: a.duration_ms,
                error: a.error,
            })
            .collect(),
    }
}

/// The job endpoints.
pub struct JobsApi;

#[OpenApi(tag = "super::Tag::Jobs")]
impl JobsApi {
    /// One job with its failed attempts.
    #[oai(path = "/jobs/:id", method = "get")]
    async fn job(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        id: Path<String>,
    ) -> ApiResult<Json<JobView>, { NOT_FOUND | UNAVAILABLE }> {
        let q = state.enqueuer.queue();
        let job = q
            .job(&id.0)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no job {:?}", id.0)))?;
        let attempts = q.attempts(&id.0).await.map_err(ApiError::unavailable)?;
        Ok(Json(view(job, attempts)))
    }

    /// Discard one job that is not running.
    #[oai(path = "/jobs/:id", method = "delete")]
    async fn discard(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> ApiResult<Json<super::views::Count>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        match state
            .enqueuer
            .queue()
            .discard_job(&id.0)
            .await
            .map_err(ApiError::unavailable)?
        {
            workers::Discard::Removed => Ok(Json(super::views::Count { count: 1 })),
            workers::Discard::Unknown => {
                Err(ApiError::not_found(format!("no job {:?}", id.0)).into())
            }
            workers::Discard::Running => {
                Err(ApiError::conflict(format!("job {} is running", id.0)).into())
            }
        }
    }

    /// Send one dead job back to its queue with fresh attempts.
    #[oai(path = "/jobs/:id/retry", method = "post")]
    async fn retry(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> ApiResult<Accepted<Moved>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let q = state.enqueuer.queue();
        let job = q
            .job(&id.0)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no job {:?}", id.0)))?;
        if job.state != workers::JobState::Dead {
            return Err(ApiError::conflict(format!("job {} is not dead", job.id)).into());
        }
        let retried = crate::jobs::revive(
            q,
            &state.store,
            &job.queue,
            Some(std::slice::from_ref(&job.id)),
            None,
        )
        .await
        .map_err(ApiError::unavailable)?;
        Ok(Accepted::Accepted(Json(Moved { retried })))
    }

    /// Poll a CRM for changes now, from the stored cursor.
    #[oai(path = "/providers/:provider/poll", method = "post")]
    async fn poll_now(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        provider: Path<String>,
        /// Whose connection (default: the default customer's).
        #[oai(name = "customerId", validator(max_length = 64))]
        customer_id: Query<Option<String>>,
    ) -> ApiResult<Accepted<Queued>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        poll(&state, &provider.0, customer_id.0.as_deref(), Mode::Changes)
            .await
            .map_err(Into::into)
    }

    /// A full scan of a CRM now: every record is read again, and the
    /// linked ones the CRM no longer has are applied as deleted.
    #[oai(path = "/providers/:provider/backfill", method = "post")]
    async fn backfill(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        provider: Path<String>,
        /// Whose connection (default: the default customer's).
        #[oai(name = "customerId", validator(max_length = 64))]
        customer_id: Query<Option<String>>,
    ) -> ApiResult<Accepted<Queued>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        poll(
            &state,
            &provider.0,
            customer_id.0.as_deref(),
            Mode::Backfill,
        )
        .await
        .map_err(Into::into)
    }

    /// A connection's first sync: every CRM record is listed and imported
    /// (the app's contacts with their email linked to them, fields merged
    /// as for any first link), then, once the customer's other
    /// connections being first-synced have listed theirs, what the CRM
    /// lacks is written there: creates, and updates of the linked records
    /// lacking the app's values, 100 a call where the CRM takes batches
    /// (HubSpot). Runs by itself when a connection is added; ask for it
    /// to run it again. 409 while one is underway.
    #[oai(
        path = "/customers/:customer_id/connections/:provider/initial-sync",
        method = "post"
    )]
    async fn initial_sync(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        /// The customer.
        #[oai(validator(max_length = 64))]
        customer_id: Path<String>,
        provider: Path<String>,
    ) -> ApiResult<Accepted<Queued>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        poll(&state, &provider.0, Some(&customer_id.0), Mode::FirstSync)
            .await
            .map_err(Into::into)
    }

    /// Job counts of a queue.
    #[oai(path = "/queues/:queue/stats", method = "get")]
    async fn stats(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        queue: Path<String>,
    ) -> ApiResult<Json<QueueStats>, { NOT_FOUND | UNAVAILABLE }> {
        let name = known_queue(&queue.0)?;
        let c = state
            .enqueuer
            .queue()
            .counts(name)
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(QueueStats {
            queue: name.into(),
            pending: c.pending,
            scheduled: c.scheduled,
            running: c.running,
            done: c.done,
            dead: c.dead,
            completed_total: c.completed_total,
            failed_total: c.failed_total,
        }))
    }

    /// Dead jobs of a queue, newest first.
    #[oai(path = "/queues/:queue/dead", method = "get")]
    async fn dead(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        queue: Path<String>,
        /// Jobs to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Jobs to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<Vec<JobView>>, { NOT_FOUND | UNAVAILABLE }> {
        let name = known_queue(&queue.0)?;
        let q = state.enqueuer.queue();
        let jobs = q
            .dead(name, offset.0.unwrap_or(0), limit.0.unwrap_or(50))
            .await
            .map_err(ApiError::unavailable)?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let attempts = q.attempts(&job.id).await.map_err(ApiError::unavailable)?;
            out.push(view(job, attempts));
        }
        Ok(Json(out))
    }
}

/// What a queued poll does.
#[derive(Clone, Copy)]
enum Mode {
    /// The changes since the cursor.
    Changes,
    /// A full scan.
    Backfill,
    /// A full scan, then the app's contacts the CRM lacks created there.
    FirstSync,
}

async fn poll(
    state: &ApiState,
    provider: &str,
    customer: Option<&str>,
    mode: Mode,
) -> Result<Accepted<Queued>, ApiError> {
    let provider: Provider = provider.parse().map_err(ApiError::not_found)?;
    let customer = super::errors::customer_param(customer)?
        .unwrap_or_else(crate::domain::CustomerId::default_customer);
    let connected = state
        .customers
        .get(&customer)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no customer {customer}")))?
        .connection(provider)
        .is_some_and(|c| c.enabled);
    if !connected {
        return Err(ApiError::not_found(format!(
            "customer {customer} has no enabled {provider} connection"
        )));
    }
    let queued = match mode {
        Mode::Changes => state.enqueuer.poll(&customer, provider, false).await,
        Mode::Backfill => state.enqueuer.poll(&customer, provider, true).await,
        Mode::FirstSync => {
            return match state.start_first_sync(&customer, provider).await? {
                Some(job_id) => Ok(Accepted::Accepted(Json(Queued { job_id }))),
                None => Err(ApiError::conflict(format!(
                    "a first sync of customer {customer}'s {provider} connection is underway; its progress is on the customer's connection"
                ))),
            }
        }
    };
    let job_id = queued.map_err(ApiError::unavailable)?;
    Ok(Accepted::Accepted(Json(Queued { job_id })))
}
