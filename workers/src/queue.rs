//! The queue client: connect, look up, revive, discard and count jobs
//! (pushing is in `push`, operator views in `inspect`). The backend uses the
//! same type for its own claim / ack / settle calls (`claim`), so all key
//! handling lives in these modules and the Lua scripts beside them.
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use crate::conn::Conn;
use crate::error::Error;
use crate::keys::Keys;
use crate::model::parse_job;
pub use crate::model::{
    new_job_id, AttemptRecord, Group, JobInfo, JobState, PushOptions, QueueCounts,
};

pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) gather: Script,
    pub(crate) heartbeat: Script,
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) settle: Script,
    pub(crate) reap: Script,
    pub(crate) revive: Script,
    pub(crate) rate_limit: Script,
    pub(crate) lease: Script,
    pub(crate) retried: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            push: Script::new(concat!(
                include_str!("lua/ready.lua"),
                include_str!("lua/push.lua")
            )),
            gather: Script::new(concat!(
                include_str!("lua/ready.lua"),
                include_str!("lua/gather.lua")
            )),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            fetch: Script::new(concat!(
                include_str!("lua/ready.lua"),
                include_str!("lua/fetch.lua")
            )),
            ack: Script::new(include_str!("lua/ack.lua")),
            settle: Script::new(concat!(
                include_str!("lua/ready.lua"),
                include_str!("lua/settle.lua")
            )),
            reap: Script::new(include_str!("lua/reap.lua")),
            revive: Script::new(concat!(
                include_str!("lua/ready.lua"),
                include_str!("lua/revive.lua")
            )),
            rate_limit: Script::new(include_str!("lua/ratelimit.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
            retried: Script::new(include_str!("lua/retried.lua")),
        }
    }
}

/// A handle on the queues of one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) conn: Conn,
    pub(crate) keys: Arc<Keys>,
    pub(crate) scripts: Arc<Scripts>,
    /// Queues this handle has added to the registry (`Keys::queues`).
    registered: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Queue {
    /// Connects to Redis at `url`; every key will start with `namespace`.
    /// A `redis+cluster://h1:p1,h2:p2` URL, or several comma-separated
    /// `redis://` URLs, connect to a Redis Cluster (see `conn`).
    ///
    /// # Errors
    /// When the URL is malformed or Redis cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        let conn = Conn::open(url).await?;
        Ok(Self {
            conn,
            keys: Arc::new(Keys::new(namespace)),
            scripts: Arc::new(Scripts::new()),
            registered: Arc::default(),
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

    /// Adds `queue` to the registry listings read, once per handle. Not
    /// part of the push script: in a cluster the registry lives in another
    /// slot than the queue's keys. Heartbeats add served queues again, so
    /// a registry lost with Redis' data comes back.
    pub(crate) async fn register(&self, queue: &str) -> Result<(), Error> {
        let known = |q: &str| {
            self.registered
                .lock()
                .map(|s| s.contains(q))
                .unwrap_or(false)
        };
        if known(queue) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = conn.sadd(self.keys.queues(), queue).await?;
        if let Ok(mut s) = self.registered.lock() {
            s.insert(queue.to_owned());
        }
        Ok(())
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// One job of any queue, or `None` when the id is unknown (or its
    /// record expired). A job's keys live with its queue's (see `keys`), so
    /// this looks in every known queue; [`Queue::job_in`] looks in one.
    ///
    /// # Errors
    /// When Redis fails or the record is corrupt.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, Error> {
        match self.locate(id).await? {
            Some(queue) => self.job_in(&queue, id).await,
            None => Ok(None),
        }
    }

    /// The queue holding job `id`, if any.
    pub(crate) async fn locate(&self, id: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn.clone();
        let queues: Vec<String> = conn.smembers(self.keys.queues()).await?;
        let found = futures::future::try_join_all(queues.iter().map(|q| {
            let mut conn = self.conn.clone();
            let key = self.keys.job(q, id);
            async move { conn.exists::<_, bool>(key).await }
        }))
        .await?;
        Ok(queues
            .into_iter()
            .zip(found)
            .find_map(|(q, here)| here.then_some(q)))
    }

    /// One job of `queue`, or `None` when the id is unknown there.
    ///
    /// # Errors
    /// When Redis fails or the record is corrupt.
    pub async fn job_in(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, Error> {
        let Some(mut job) = self.stored_job(queue, id).await? else {
            return Ok(None);
        };
        if job.state == JobState::Running {
            let mut conn = self.conn.clone();
            let finished: Option<f64> = conn.zscore(self.keys.done(&job.queue), id).await?;
            if let Some(at) = finished {
                job.finished_at(at as i64);
            }
        }
        Ok(Some(job))
    }

    /// A job as its hash has it. An acknowledged job's hash still says
    /// `running`: `ack.lua` writes only the done set, which holds its id
    /// with the time it finished (see [`JobInfo::finished_at`]).
    pub(crate) async fn stored_job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, Error> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn.hgetall(self.keys.job(queue, id)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        parse_job(queue, id, &map).map(Some)
    }

    /// The failed attempts of a job of any queue, oldest first.
    ///
    /// # Errors
    /// When Redis fails or an entry is corrupt.
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, Error> {
        match self.locate(id).await? {
            Some(queue) => self.attempts_in(&queue, id).await,
            None => Ok(Vec::new()),
        }
    }

    /// The failed attempts of a job of `queue`, oldest first.
    ///
    /// # Errors
    /// When Redis fails or an entry is corrupt.
    pub async fn attempts_in(&self, queue: &str, id: &str) -> Result<Vec<AttemptRecord>, Error> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn.lrange(self.keys.job_log(queue, id), 0, -1).await?;
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
            if let Some(job) = self.job_in(queue, &id).await? {
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
                    .arg(self.keys.job_prefix(queue))
                    .arg(BATCH)
                    .arg(self.keys.queue_prefix(queue));
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
        let group: Option<String> = conn.hget(self.keys.job(q, id), "group").await?;
        if let Some(g) = group {
            // waiting in its group: out of the group's list, and the count
            let removed: i64 = conn.lrem(self.keys.group(q, &g), 0, id).await?;
            if removed > 0 {
                let _: i64 = conn.decr(self.keys.grouped(q), removed).await?;
            }
        }
        let () = redis::pipe()
            .atomic()
            .lrem(self.keys.pending(q), 0, id)
            .lrem(self.keys.suspects(q), 0, id)
            .zrem(self.keys.scheduled(q), id)
            .zrem(self.keys.dead(q), id)
            .zrem(self.keys.done(q), id)
            .del(self.keys.job(q, id))
            .del(self.keys.job_log(q, id))
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
            .hget(self.keys.stats(queue), "failed")
            .get(self.keys.grouped(queue))
            .llen(self.keys.suspects(queue));
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
        let head: Vec<u64> = values.iter().take(8).map(num).collect();
        if head.len() < 8 {
            return Err(Error::Corrupt("short reply to the counts pipeline".into()));
        }
        let head = (
            head[0] + head[6] + head[7],
            head[1],
            head[2],
            head[3],
            Some(head[4]),
            Some(head[5]),
        );
        let running: Vec<u64> = values.iter().skip(8).map(num).collect();
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
