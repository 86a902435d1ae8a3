//! Operator endpoints: queues, jobs by state, workers, links, sync logs,
//! connections; retry, discard, purge and re-sync. Viewers read; operators
//! also change.

use std::time::Duration;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::{ApiAuth, ViewerAuth};
use super::errors::{response, Fail};
use super::jobs::{known_queue, view, JobView, Moved, QUEUES};
use super::views::{Count, LinkView, SyncLogView};
use super::ApiState;
use crate::domain::{ContactId, Provider, SyncStatus};
use crate::store::LogFilter;

/// A job state, as a filter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StateParam {
    /// Ready to run.
    Pending,
    /// Waiting for its time.
    Scheduled,
    /// Claimed by a worker.
    Running,
    /// Finished.
    Done,
    /// Out of attempts.
    Dead,
}

impl From<StateParam> for workers::JobState {
    fn from(s: StateParam) -> Self {
        match s {
            StateParam::Pending => Self::Pending,
            StateParam::Scheduled => Self::Scheduled,
            StateParam::Running => Self::Running,
            StateParam::Done => Self::Done,
            StateParam::Dead => Self::Dead,
        }
    }
}

/// A link status, as a filter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum LinkStatusParam {
    /// Waiting for a push.
    Pending,
    /// Up to date.
    Synced,
    /// Failed for good.
    Error,
}

impl From<LinkStatusParam> for SyncStatus {
    fn from(s: LinkStatusParam) -> Self {
        match s {
            LinkStatusParam::Pending => Self::Pending,
            LinkStatusParam::Synced => Self::Synced,
            LinkStatusParam::Error => Self::Error,
        }
    }
}

/// A provider, as a parameter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ProviderParam {
    /// HubSpot.
    Hubspot,
    /// Pipedrive.
    Pipedrive,
}

impl From<ProviderParam> for Provider {
    fn from(p: ProviderParam) -> Self {
        match p {
            ProviderParam::Hubspot => Self::Hubspot,
            ProviderParam::Pipedrive => Self::Pipedrive,
        }
    }
}

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
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
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
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
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

/// A link with its contact.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct LinkRow {
    /// The contact.
    pub contact_id: String,
    /// The link.
    #[oai(flatten)]
    pub link: LinkView,
}

/// A page of links.
#[derive(Debug, Object)]
pub struct LinkPage {
    /// Links, `error` first.
    pub items: Vec<LinkRow>,
    /// Links matching the filter.
    pub total: u64,
}

/// Health of one CRM connection.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ConnectionView {
    /// The CRM.
    pub provider: String,
    /// When a sync with it last succeeded.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Poll cursor: records changed at or after this time are read next.
    pub poll_cursor: Option<chrono::DateTime<chrono::Utc>>,
    /// When the last poll finished.
    pub last_poll_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Failed outcomes / all outcomes in the last hour.
    pub error_rate_1h: f64,
    /// Links waiting for a push.
    pub links_pending: u64,
    /// Links up to date.
    pub links_synced: u64,
    /// Links failed for good.
    pub links_error: u64,
    /// Calls granted in the current rate-limit window.
    pub rate_limit_used: u64,
    /// Calls allowed per window.
    pub rate_limit: u32,
}

response!(QueuesResponse, 200, Vec<QueueOverview>, {
    Unavailable = 503
});
response!(HistoryResponse, 200, Vec<QueueHistory>, { BadRequest = 400, Unavailable = 503 });
response!(JobsResponse, 200, Vec<JobView>, { BadRequest = 400, NotFound = 404, Unavailable = 503 });
response!(CountResponse, 200, Count, { BadRequest = 400, NotFound = 404, Conflict = 409, Unavailable = 503 });
response!(MovedResponse, 202, Moved, { BadRequest = 400, NotFound = 404, Unavailable = 503 });
response!(WorkersResponse, 200, Vec<WorkerView>, { Unavailable = 503 });
response!(LinksResponse, 200, LinkPage, { BadRequest = 400, Unavailable = 503 });
response!(LogsResponse, 200, Vec<SyncLogView>, { BadRequest = 400, Unavailable = 503 });
response!(ConnectionsResponse, 200, Vec<ConnectionView>, {
    Unavailable = 503
});

fn ms_time(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    (ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// The operator endpoints.
pub struct OpsApi;

#[OpenApi(tag = "super::Tag::Operators")]
impl OpsApi {
    /// Every queue with its depth per state, recent throughput and failure
    /// rate, and the age of its oldest pending job.
    #[oai(path = "/queues", method = "get")]
    async fn queues(&self, state: poem::web::Data<&ApiState>, _auth: ViewerAuth) -> QueuesResponse {
        let res = async {
            let q = state.enqueuer.queue();
            let mut out = Vec::new();
            for &name in QUEUES {
                let c = q.counts(name).await.map_err(Fail::unavailable)?;
                let t = q.throughput(name, 5).await.map_err(Fail::unavailable)?;
                let oldest = q
                    .oldest_pending_age(name)
                    .await
                    .map_err(Fail::unavailable)?;
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
            Ok::<_, Fail>(QueuesResponse::Ok(Json(out)))
        };
        res.await.unwrap_or_else(Into::into)
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
    ) -> HistoryResponse {
        let res = async {
            let q = state.enqueuer.queue();
            let mut out = Vec::with_capacity(QUEUES.len());
            for &name in QUEUES {
                let minutes = q
                    .history(name, minutes.0.unwrap_or(60))
                    .await
                    .map_err(Fail::unavailable)?;
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
            Ok::<_, Fail>(HistoryResponse::Ok(Json(out)))
        };
        res.await.unwrap_or_else(Into::into)
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
    ) -> JobsResponse {
        let res = async {
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
                .map_err(Fail::unavailable)?;
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                let attempts = q.attempts(&job.id).await.map_err(Fail::unavailable)?;
                out.push(view(job, attempts));
            }
            Ok::<_, Fail>(JobsResponse::Ok(Json(out)))
        };
        res.await.unwrap_or_else(Into::into)
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
    ) -> MovedResponse {
        let res = async {
            let name = known_queue(&queue.0)?;
            let retried = crate::jobs::revive(
                state.enqueuer.queue(),
                &state.store,
                name,
                None,
                error_contains.0.as_deref(),
            )
            .await
            .map_err(Fail::unavailable)?;
            Ok::<_, Fail>(MovedResponse::Ok(Json(Moved { retried })))
        };
        res.await.unwrap_or_else(Into::into)
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
    ) -> CountResponse {
        let res = async {
            let name = known_queue(&queue.0)?;
            let count = state
                .enqueuer
                .queue()
                .purge_done(name, Duration::from_secs(older_than.0.unwrap_or(0)))
                .await
                .map_err(Fail::unavailable)?;
            Ok::<_, Fail>(CountResponse::Ok(Json(Count { count })))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Live workers of every queue.
    #[oai(path = "/workers", method = "get")]
    async fn workers(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
    ) -> WorkersResponse {
        let res = async {
            let mut out = Vec::new();
            for &name in QUEUES {
                for w in state
                    .enqueuer
                    .queue()
                    .workers(name)
                    .await
                    .map_err(Fail::unavailable)?
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
            Ok::<_, Fail>(WorkersResponse::Ok(Json(out)))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Links, `error` first.
    #[oai(path = "/links", method = "get")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn links(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Only this status.
        status: Query<Option<LinkStatusParam>>,
        /// Only this CRM.
        provider: Query<Option<ProviderParam>>,
        /// Links to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Links to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> LinksResponse {
        let res = async {
            let (links, total) = state
                .store
                .list_links(
                    status.0.map(Into::into),
                    provider.0.map(Into::into),
                    offset.0.unwrap_or(0),
                    limit.0.unwrap_or(50) as i64,
                )
                .await
                .map_err(Fail::unavailable)?;
            let items = links
                .iter()
                .map(|l| LinkRow {
                    contact_id: l.contact_id.to_string(),
                    link: LinkView::from(l),
                })
                .collect();
            Ok::<_, Fail>(LinksResponse::Ok(Json(LinkPage { items, total })))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Push a contact to every CRM again.
    #[oai(path = "/contacts/:id/resync", method = "post")]
    async fn resync_contact(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> CountResponse {
        let res = async {
            let id = ContactId::parse(&id.0).map_err(|m| Fail::bad_request("invalid_id", m))?;
            let contact = state
                .store
                .contact(id)
                .await
                .map_err(Fail::unavailable)?
                .ok_or_else(|| Fail::not_found(format!("no contact {id}")))?;
            let count = state.resync(&contact, &state.providers).await?;
            Ok::<_, Fail>(CountResponse::Ok(Json(Count { count })))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Push every contact whose link with a CRM is in `error` again.
    #[oai(path = "/links/resync", method = "post")]
    async fn resync_errors(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        /// The CRM.
        provider: Query<ProviderParam>,
    ) -> CountResponse {
        let res = async {
            let p: Provider = provider.0.into();
            let mut count = 0;
            let (links, _) = state
                .store
                .list_links(Some(SyncStatus::Error), Some(p), 0, 10_000)
                .await
                .map_err(Fail::unavailable)?;
            for l in links {
                if let Some(c) = state
                    .store
                    .contact(l.contact_id)
                    .await
                    .map_err(Fail::unavailable)?
                {
                    count += state.resync(&c, &[p]).await?;
                }
            }
            Ok::<_, Fail>(CountResponse::Ok(Json(Count { count })))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Sync log entries, newest first.
    #[oai(path = "/sync-logs", method = "get")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn sync_logs(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Only this contact.
        #[oai(name = "contactId")]
        contact_id: Query<Option<String>>,
        /// Only this CRM.
        provider: Query<Option<ProviderParam>>,
        /// Only this outcome (`upserted`, `updated`, `deleted`, `created`, `failed`, …).
        #[oai(validator(max_length = 32))]
        outcome: Query<Option<String>>,
        /// Entries to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Entries to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> LogsResponse {
        let res = async {
            let contact = contact_id
                .0
                .as_deref()
                .map(|c| ContactId::parse(c).map_err(|m| Fail::bad_request("invalid_id", m)))
                .transpose()?;
            let filter = LogFilter {
                contact,
                provider: provider.0.map(Into::into),
                outcome: outcome.0,
            };
            let logs = state
                .store
                .list_logs(&filter, offset.0.unwrap_or(0), limit.0.unwrap_or(50) as i64)
                .await
                .map_err(Fail::unavailable)?;
            Ok::<_, Fail>(LogsResponse::Ok(Json(
                logs.iter().map(SyncLogView::from).collect(),
            )))
        };
        res.await.unwrap_or_else(Into::into)
    }

    /// Per CRM: last successful sync, poll cursor, error rate, links by
    /// status, rate-limit budget in use.
    #[oai(path = "/connections", method = "get")]
    async fn connections(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
    ) -> ConnectionsResponse {
        let res = async {
            let mut out = Vec::new();
            for p in Provider::ALL {
                let h = state
                    .store
                    .provider_health(p)
                    .await
                    .map_err(Fail::unavailable)?;
                // The default customer's connection; each customer's own
                // are under /api/customers.
                let default = crate::domain::CustomerId::default_customer();
                let cursor = state
                    .store
                    .cursor(&default, p)
                    .await
                    .map_err(Fail::unavailable)?;
                let used = state
                    .enqueuer
                    .queue()
                    .rate_limit_use(&format!("crm:{default}:{p}"), Duration::from_millis(1100))
                    .await
                    .map_err(Fail::unavailable)?;
                let count =
                    |s: SyncStatus| h.links.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
                out.push(ConnectionView {
                    provider: p.to_string(),
                    last_success_at: h.last_success.map(|t| t.to_chrono()),
                    poll_cursor: ms_time(cursor.since_ms),
                    last_poll_at: cursor.last_poll_at.map(|t| t.to_chrono()),
                    error_rate_1h: if h.recent == 0 {
                        0.0
                    } else {
                        h.recent_failed as f64 / h.recent as f64
                    },
                    links_pending: count(SyncStatus::Pending),
                    links_synced: count(SyncStatus::Synced),
                    links_error: count(SyncStatus::Error),
                    rate_limit_used: used,
                    rate_limit: state.rate_limits.get(&p).copied().unwrap_or(0),
                });
            }
            Ok::<_, Fail>(ConnectionsResponse::Ok(Json(out)))
        };
        res.await.unwrap_or_else(Into::into)
    }
}

impl ApiState {
    /// Marks links pending and queues a push per provider the contact's
    /// customer syncs with (its enabled connections); how many.
    async fn resync(
        &self,
        contact: &crate::store::Contact,
        providers: &[Provider],
    ) -> Result<u64, Fail> {
        let enabled = self
            .customers
            .providers(&contact.customer_id)
            .await
            .map_err(Fail::unavailable)?;
        let providers: Vec<Provider> = providers
            .iter()
            .copied()
            .filter(|p| enabled.contains(p))
            .collect();
        if providers.is_empty() {
            return Ok(0);
        }
        self.enqueuer
            .push_contact(
                &self.store,
                contact.id,
                &contact.customer_id,
                &providers,
                contact.version,
            )
            .await
            .map_err(Fail::unavailable)?;
        Ok(providers.len() as u64)
    }
}
