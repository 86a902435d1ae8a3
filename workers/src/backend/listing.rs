//! The apalis traits dashboards read a backend through: `FetchById`,
//! `Metrics`, `ListWorkers`, `ListQueues`, `ListTasks`, `ListAllTasks`.
//! "All queues" are the names in the `{ns}:queues` set, written by every
//! push and heartbeat.
//!
//! apalis' [`Status`] and this crate's [`JobState`]:
//!
//! | `Status` | `JobState` |
//! |---|---|
//! | `Pending` | `Pending` (ready to run) |
//! | `Queued` | `Scheduled` (waits for its run time: delayed, or a retry's backoff) |
//! | `Running` | `Running` |
//! | `Done` | `Done` (kept for `done_retention`) |
//! | `Failed` | `Dead` |
//! | `Killed` | none: lists nothing |

use std::future::Future;

use apalis_core::backend::queue::Queue as QueueName;
use apalis_core::backend::{
    FetchById, Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers, Metrics as BackendMetrics,
    QueueInfo, RunningWorker, StatType, Statistic,
};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use serde::de::DeserializeOwned;

use crate::backend::RedisBackend;
use crate::error::Error;
use crate::queue::{JobInfo, JobState, Queue, QueueCounts};

const STATES: [JobState; 5] = [
    JobState::Pending,
    JobState::Scheduled,
    JobState::Running,
    JobState::Done,
    JobState::Dead,
];

fn state_of(status: &Status) -> Option<JobState> {
    match status {
        Status::Pending => Some(JobState::Pending),
        Status::Queued => Some(JobState::Scheduled),
        Status::Running => Some(JobState::Running),
        Status::Done => Some(JobState::Done),
        Status::Failed => Some(JobState::Dead),
        _ => None,
    }
}

fn status_of(state: JobState) -> Status {
    match state {
        JobState::Pending => Status::Pending,
        JobState::Scheduled => Status::Queued,
        JobState::Running => Status::Running,
        JobState::Done => Status::Done,
        JobState::Dead => Status::Failed,
    }
}

fn count_of(c: &QueueCounts, state: JobState) -> u64 {
    match state {
        JobState::Pending => c.pending,
        JobState::Scheduled => c.scheduled,
        JobState::Running => c.running,
        JobState::Done => c.done,
        JobState::Dead => c.dead,
    }
}

/// A stored job as an apalis task (payload as JSON text).
fn task_of(job: JobInfo) -> Task<String> {
    let mut b = TaskBuilder::new(job.payload.to_string())
        .task_id(TaskId::from_string(job.id))
        .attempt(job.attempts as usize)
        .max_attempts(job.max_attempts as usize)
        .status(status_of(job.state))
        .queue(QueueName::from(job.queue))
        .lock_by(job.worker);
    if matches!(job.state, JobState::Done | JobState::Dead) {
        b = b.done_at(Some((job.updated_ms / 1000).max(0) as u64));
    }
    b.build()
}

/// The statistics of a queue, under the names apalis' dashboards look up
/// (`PENDING_JOBS`, …; a dead job is apalis' `Failed`), then ours.
fn stats(c: &QueueCounts, workers: usize) -> Vec<Statistic> {
    let rows = [
        ("PENDING_JOBS", c.pending),
        ("QUEUED_JOBS", c.scheduled),
        ("RUNNING_JOBS", c.running),
        ("DONE_JOBS", c.done),
        ("FAILED_JOBS", c.dead),
        (
            "TOTAL_JOBS",
            c.pending + c.scheduled + c.running + c.done + c.dead,
        ),
        ("COMPLETED_TOTAL", c.completed_total),
        ("FAILED_ATTEMPTS_TOTAL", c.failed_total),
        ("WORKERS", workers as u64),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, (title, value))| Statistic {
            title: (*title).to_owned(),
            stat_type: StatType::Number,
            value: value.to_string(),
            priority: Some(i as u64),
        })
        .collect()
}

/// One page over the given queues: in each queue the states asked for, in
/// the order of `STATES`, jobs in each state as `Queue::list` orders them.
async fn page(q: &Queue, queues: &[String], filter: &Filter) -> Result<Vec<Task<String>>, Error> {
    let states: Vec<JobState> = match &filter.status {
        None => STATES.to_vec(),
        Some(s) => state_of(s).into_iter().collect(),
    };
    let mut skip = u64::from(filter.offset());
    let mut left = u64::from(filter.limit());
    let mut out = Vec::new();
    for name in queues {
        let counts = q.counts(name).await?;
        for &state in &states {
            if left == 0 {
                return Ok(out);
            }
            let n = count_of(&counts, state);
            if skip >= n {
                skip -= n;
                continue;
            }
            let jobs = q.list(name, state, skip, left).await?;
            skip = 0;
            left = left.saturating_sub(jobs.len() as u64);
            out.extend(jobs.into_iter().map(task_of));
        }
    }
    Ok(out)
}

async fn workers_of(q: &Queue, queue: &str) -> Result<Vec<RunningWorker>, Error> {
    let workers = q.workers(queue).await?;
    Ok(workers
        .into_iter()
        .map(|w| RunningWorker {
            id: w.name,
            queue: w.queue,
            backend: "workers::RedisBackend".to_owned(),
            started_at: (w.started_ms.unwrap_or(0) / 1000).max(0) as u64,
            last_heartbeat: (w.last_heartbeat_ms / 1000).max(0) as u64,
            layers: w.service.unwrap_or_default(),
        })
        .collect())
}

impl<Args> FetchById for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn fetch_by_id(
        &mut self,
        task_id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task<String>>, Error>> + Send {
        let (q, id) = (self.queue.clone(), task_id.to_string());
        async move { Ok(q.job(&id).await?.map(task_of)) }
    }
}

impl<Args> BackendMetrics for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn global(&self) -> impl Future<Output = Result<Vec<Statistic>, Error>> + Send {
        let q = self.queue.clone();
        async move {
            let mut total = QueueCounts::default();
            let mut workers = 0;
            for name in q.queue_names().await? {
                let c = q.counts(&name).await?;
                total.pending += c.pending;
                total.scheduled += c.scheduled;
                total.running += c.running;
                total.done += c.done;
                total.dead += c.dead;
                total.completed_total += c.completed_total;
                total.failed_total += c.failed_total;
                workers += q.workers(&name).await?.len();
            }
            Ok(stats(&total, workers))
        }
    }

    fn fetch_by_queue(&self) -> impl Future<Output = Result<Vec<Statistic>, Error>> + Send {
        let (q, name) = (self.queue.clone(), self.cfg.queue.clone());
        async move {
            let c = q.counts(&name).await?;
            Ok(stats(&c, q.workers(&name).await?.len()))
        }
    }
}

impl<Args> ListWorkers for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn list_workers(&self) -> impl Future<Output = Result<Vec<RunningWorker>, Error>> + Send {
        let (q, name) = (self.queue.clone(), self.cfg.queue.clone());
        async move { workers_of(&q, &name).await }
    }

    fn list_all_workers(&self) -> impl Future<Output = Result<Vec<RunningWorker>, Error>> + Send {
        let q = self.queue.clone();
        async move {
            let mut all = Vec::new();
            for name in q.queue_names().await? {
                all.extend(workers_of(&q, &name).await?);
            }
            Ok(all)
        }
    }
}

impl<Args> ListQueues for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    /// Every queue with its counts and workers. `activity` (apalis: the
    /// last 7 days) stays empty: this crate keeps an hour of per-minute
    /// counts (`Queue::throughput`), not days.
    fn list_queues(&self) -> impl Future<Output = Result<Vec<QueueInfo>, Error>> + Send {
        let q = self.queue.clone();
        async move {
            let mut out = Vec::new();
            for name in q.queue_names().await? {
                let c = q.counts(&name).await?;
                let workers: Vec<String> = q
                    .workers(&name)
                    .await?
                    .into_iter()
                    .map(|w| w.name)
                    .collect();
                out.push(QueueInfo {
                    stats: stats(&c, workers.len()),
                    name,
                    workers,
                    activity: Vec::new(),
                });
            }
            Ok(out)
        }
    }
}

impl<Args> ListTasks for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn list_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<String>>, Error>> + Send {
        let (q, name, filter) = (self.queue.clone(), self.cfg.queue.clone(), filter.clone());
        async move { page(&q, &[name], &filter).await }
    }
}

impl<Args> ListAllTasks for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn list_all_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<String>>, Error>> + Send {
        let (q, filter) = (self.queue.clone(), filter.clone());
        async move {
            let names = q.queue_names().await?;
            page(&q, &names, &filter).await
        }
    }
}
