//! The queue client: enqueue, inspect, revive and discard jobs. The worker
//! runtime uses the same type for its own claim / ack / settle calls, so all
//! key handling lives here and in the Lua scripts beside it.
//!
//! Why not apalis-redis 1.0.0: its fetch promotes every due job with one
//! `unpack(...)` (fails past ~8,000 due jobs, which stalls the queue), its
//! result script re-runs failed jobs up to 25 times on its own, and completed
//! jobs are kept forever. This module keeps a similar layout (pending list,
//! scheduled zset, per-worker running set, dead set) but bounds every loop.
//!
//! Times stored in Redis come from the Redis clock (`TIME` inside the
//! scripts, or [`Queue::server_ms`]), so no two processes ever compare their
//! own clocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::keys::Keys;

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
    fn parse(s: &str) -> Result<Self, Error> {
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
}

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
    /// `RuntimeConfig::max_stalls` it is dead-lettered instead of run again.
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
/// [`LOG_KEEP`](crate::keys::LOG_KEEP) = 25 are kept). An attempt cut short by
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

impl QueueCounts {
    /// Jobs that still have to run (pending, scheduled or running).
    pub fn outstanding(&self) -> u64 {
        self.pending + self.scheduled + self.running
    }
}

pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) heartbeat: Script,
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) settle: Script,
    pub(crate) reap: Script,
    pub(crate) revive: Script,
    pub(crate) rate_limit: Script,
    pub(crate) lease: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            push: Script::new(include_str!("lua/push.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            fetch: Script::new(include_str!("lua/fetch.lua")),
            ack: Script::new(include_str!("lua/ack.lua")),
            settle: Script::new(include_str!("lua/settle.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            revive: Script::new(include_str!("lua/revive.lua")),
            rate_limit: Script::new(include_str!("lua/ratelimit.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
        }
    }
}

/// A handle on the queues of one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: Arc<Keys>,
    pub(crate) scripts: Arc<Scripts>,
}

impl Queue {
    /// Connects to Redis at `url`; every key will start with `namespace`.
    ///
    /// # Errors
    /// When the URL is malformed or Redis cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url)?;
        // The manager reconnects by itself after Redis restarts; the cap keeps
        // its backoff between attempts short so a worker is back within about
        // a second of Redis.
        let config = ConnectionManagerConfig::new().set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            keys: Arc::new(Keys::new(namespace)),
            scripts: Arc::new(Scripts::new()),
        })
    }

    /// Checks that Redis answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// One job, or `None` when the id is unknown (or its record expired).
    ///
    /// # Errors
    /// When Redis fails or the record is corrupt.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, Error> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        parse_job(id, &map).map(Some)
    }

    /// The failed attempts of a job, oldest first.
    ///
    /// # Errors
    /// When Redis fails or an entry is corrupt.
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, Error> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn.lrange(self.keys.job_log(id), 0, -1).await?;
        raw.iter()
            .map(|r| serde_json::from_str(r).map_err(|e| Error::Corrupt(e.to_string())))
            .collect()
    }

    /// Dead jobs of a queue, newest first.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn dead(&self, queue: &str, offset: u64, limit: u64) -> Result<Vec<JobInfo>, Error> {
        let mut conn = self.conn.clone();
        let stop = (offset + limit).saturating_sub(1) as isize;
        let ids: Vec<String> = conn
            .zrevrange(self.keys.dead(queue), offset as isize, stop)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.job(&id).await? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Sends the given dead jobs back to the queue with fresh attempts;
    /// returns how many moved (ids not in the dead set are skipped).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn retry_dead(&self, queue: &str, ids: &[String]) -> Result<u64, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.revive(queue, ids).await
    }

    /// Sends every dead job of the queue back; returns how many moved.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn retry_all_dead(&self, queue: &str) -> Result<u64, Error> {
        self.revive(queue, &[]).await
    }

    /// Revives `ids`, or with none every dead job, a bounded batch per call.
    async fn revive(&self, queue: &str, ids: &[String]) -> Result<u64, Error> {
        const BATCH: u64 = 1000;
        let mut conn = self.conn.clone();
        let mut moved = 0;
        for chunk in ids
            .chunks(BATCH as usize)
            .map(Some)
            .chain(ids.is_empty().then_some(None))
        {
            loop {
                let mut inv = self.scripts.revive.prepare_invoke();
                inv.key(self.keys.dead(queue))
                    .key(self.keys.pending(queue))
                    .arg(self.keys.job_prefix())
                    .arg(BATCH);
                for id in chunk.unwrap_or_default() {
                    inv.arg(id);
                }
                let (taken, n): (u64, u64) = inv.invoke_async(&mut conn).await?;
                moved += n;
                // given ids are one call; "all" repeats until a batch comes short
                if chunk.is_some() || taken < BATCH {
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// Removes a job that is not running; returns false when it is unknown.
    ///
    /// # Errors
    /// When Redis fails or the job is corrupt.
    pub async fn discard(&self, id: &str) -> Result<bool, Error> {
        let Some(job) = self.job(id).await? else {
            return Ok(false);
        };
        let q = &job.queue;
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .lrem(self.keys.pending(q), 0, id)
            .zrem(self.keys.scheduled(q), id)
            .zrem(self.keys.dead(q), id)
            .zrem(self.keys.done(q), id)
            .del(self.keys.job(id))
            .del(self.keys.job_log(id))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(true)
    }

    /// Counts of one queue.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts, Error> {
        let mut conn = self.conn.clone();
        let workers: Vec<String> = conn.zrange(self.keys.workers(queue), 0, -1).await?;
        // One atomic read, so a job moving between states is never missed
        // or counted twice.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .llen(self.keys.pending(queue))
            .zcard(self.keys.scheduled(queue))
            .zcard(self.keys.done(queue))
            .zcard(self.keys.dead(queue))
            .hget(self.keys.stats(queue), "completed")
            .hget(self.keys.stats(queue), "failed");
        for w in &workers {
            pipe.scard(self.keys.running(queue, w));
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let num = |v: &redis::Value| -> u64 {
            match v {
                redis::Value::Int(n) => (*n).max(0) as u64,
                redis::Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            }
        };
        let head: Vec<u64> = values.iter().take(6).map(num).collect();
        if head.len() < 6 {
            return Err(Error::Corrupt("short reply to the counts pipeline".into()));
        }
        let head = (
            head[0],
            head[1],
            head[2],
            head[3],
            Some(head[4]),
            Some(head[5]),
        );
        let running: Vec<u64> = values.iter().skip(6).map(num).collect();
        Ok(QueueCounts {
            pending: head.0,
            scheduled: head.1,
            running: running.iter().sum(),
            done: head.2,
            dead: head.3,
            completed_total: head.4.unwrap_or(0),
            failed_total: head.5.unwrap_or(0),
        })
    }

    /// Waits until the queue has nothing left to run, checking every 20 ms.
    /// Returns the final counts, or `None` at the deadline.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn wait_idle(
        &self,
        queue: &str,
        deadline: Duration,
    ) -> Result<Option<QueueCounts>, Error> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let counts = self.counts(queue).await?;
            if counts.outstanding() == 0 {
                return Ok(Some(counts));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Redis clock, ms since the epoch: the one clock every process of
    /// the pool compares times with.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn server_ms(&self) -> Result<i64, Error> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Claims `key` once for `ttl`: true for the first caller, false for
    /// every other caller until it expires (de-duplicates scheduler ticks
    /// across replicas).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.once(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }
}

/// This process's wall-clock ms since the epoch, for attempt logs only:
/// anything compared across processes uses the Redis clock.
pub(crate) fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_job(id: &str, map: &HashMap<String, String>) -> Result<JobInfo, Error> {
    let get = |k: &str| map.get(k).map(String::as_str);
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let payload =
        get("payload").ok_or_else(|| Error::Corrupt(format!("job {id} has no payload")))?;
    Ok(JobInfo {
        id: id.to_owned(),
        queue: get("queue").unwrap_or_default().to_owned(),
        state: JobState::parse(get("state").unwrap_or("pending"))?,
        attempts: num("attempts").max(0) as u32,
        max_attempts: num("max").max(0) as u32,
        stalls: num("stalls").max(0) as u32,
        postponed: num("postponed").max(0) as u32,
        payload: serde_json::from_str(payload).map_err(|e| Error::Corrupt(e.to_string()))?,
        error: get("error").filter(|e| !e.is_empty()).map(str::to_owned),
        worker: get("worker").map(str::to_owned),
        created_ms: num("created"),
        updated_ms: num("updated"),
    })
}
