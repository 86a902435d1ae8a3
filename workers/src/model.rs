//! The shapes of what the queues hold, as the client sees them: job states,
//! push options, a job and its failed attempts, counts per queue. Read back
//! from Redis, they are parsed again (`parse_job`), not trusted.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to be claimed.
    Pending,
    /// Waiting for its run time (a delayed push or a backoff).
    Scheduled,
    /// Claimed by a worker.
    Running,
    /// Finished successfully; kept for a while for inspection.
    Done,
    /// Out of attempts, failed permanently, or killed its worker too often;
    /// waits for an operator.
    Dead,
}

impl JobState {
    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "pending" => Self::Pending,
            "scheduled" => Self::Scheduled,
            "running" => Self::Running,
            "done" => Self::Done,
            "dead" => Self::Dead,
            other => return Err(Error::Corrupt(format!("unknown job state {other:?}"))),
        })
    }
}

/// Options of one push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// How many attempts the job gets before it is parked in the dead set.
    pub max_attempts: u32,
    /// Run no earlier than this long from now.
    pub delay: Duration,
    /// The id to give the job (so a caller can record it before the push);
    /// a fresh UUIDv7 when `None`.
    pub id: Option<String>,
    /// The job's fair-share group (say, the customer it works for): jobs
    /// of different groups are claimed in turns, so one group's backlog
    /// never holds back another's job. `None`: no group.
    pub group: Option<String>,
}

/// A task's fair-share group, put in the task's data when it is built
/// (`TaskBuilder::new(job).data(Group("customer-42".into()))`): the backend
/// queues it in that group (see [`PushOptions::group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group(pub String);

/// A fresh job id: a UUIDv7, so ids sort by creation time.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            delay: Duration::ZERO,
            id: None,
            group: None,
        }
    }
}

/// A job as stored, for inspection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The queue it belongs to.
    pub queue: String,
    /// Where it is now.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts it may use.
    pub max_attempts: u32,
    /// Times a worker died (stopped heart-beating) while running it; at
    /// `WorkerConfig::max_stalls` it is dead-lettered instead of run again.
    pub stalls: u32,
    /// Times in a row it was put off without using an attempt (a dependency
    /// was unavailable, or dead-lettering it failed); drives their backoff.
    pub postponed: u32,
    /// Its payload as pushed.
    pub payload: serde_json::Value,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// When it was pushed (ms since the epoch, Redis clock).
    pub created_ms: i64,
    /// When its state last changed.
    pub updated_ms: i64,
}

/// One failed attempt, as recorded in the job's log (the last
/// 25 are kept). An attempt cut short by
/// its worker's death is recorded by the worker that recovered the job, with
/// the error "worker {name} stopped while running it".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// Start, ms since the epoch (the worker's clock; the Redis clock for an
    /// attempt cut short by a worker's death). For reading only.
    pub started_ms: i64,
    /// How long it ran.
    pub duration_ms: u64,
    /// Why it failed.
    pub error: String,
}

/// How many jobs a queue holds in each state, and what it has done.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounts {
    /// Ready to run.
    pub pending: u64,
    /// Waiting for their time.
    pub scheduled: u64,
    /// Claimed by live or not yet reaped workers.
    pub running: u64,
    /// Finished jobs still kept for inspection.
    pub done: u64,
    /// Parked for an operator.
    pub dead: u64,
    /// Jobs completed since the queue was created.
    pub completed_total: u64,
    /// Failed attempts since the queue was created.
    pub failed_total: u64,
}

impl JobInfo {
    /// Marks a job whose id the done set holds, finished at `at_ms`: its
    /// hash was left as the claim wrote it (`running`).
    pub(crate) fn finished_at(&mut self, at_ms: i64) {
        self.state = JobState::Done;
        self.updated_ms = at_ms;
    }
}

impl QueueCounts {
    /// Jobs that still have to run (pending, scheduled or running).
    pub fn outstanding(&self) -> u64 {
        self.pending + self.scheduled + self.running
    }
}

/// A job's hash, parsed. `queue` is where it was read: a push leaves the
/// queue out of the hash (its key names it), and `state` when `pending`.
pub(crate) fn parse_job(
    queue: &str,
    id: &str,
    map: &HashMap<String, String>,
) -> Result<JobInfo, Error> {
    let get = |k: &str| map.get(k).map(String::as_str);
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let payload =
        get("payload").ok_or_else(|| Error::Corrupt(format!("job {id} has no payload")))?;
    Ok(JobInfo {
        id: id.to_owned(),
        queue: queue.to_owned(),
        state: JobState::parse(get("state").unwrap_or("pending"))?,
        attempts: num("attempts").max(0) as u32,
        max_attempts: num("max").max(0) as u32,
        stalls: num("stalls").max(0) as u32,
        postponed: num("postponed").max(0) as u32,
        payload: serde_json::from_str(payload).map_err(|e| Error::Corrupt(e.to_string()))?,
        error: get("error").filter(|e| !e.is_empty()).map(str::to_owned),
        worker: get("worker").map(str::to_owned),
        created_ms: num("created"),
        // a push writes no `updated`: the job has not changed since
        updated_ms: get("updated").map_or_else(|| num("created"), |_| num("updated")),
    })
}
