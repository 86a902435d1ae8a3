//! The worker's side of the queue: claim, acknowledge, settle, heartbeat,
//! recover the jobs of dead workers. Each call is one script, and every
//! script that ends a claim only acts on a job still in the caller's running
//! set, so the backend may repeat a call whose reply was lost (Redis
//! restarting, a timeout) without counting or moving anything twice.

use std::time::Duration;

use redis::AsyncCommands;

use crate::error::Error;
use crate::keys::{LOG_KEEP, STATS_SLOTS};
use crate::queue::{AttemptRecord, Queue};
use crate::retry::Backoff;

/// Most jobs claimed, acknowledged or trimmed off the done set in one
/// script call: the scripts `unpack` them, and Lua's stack takes ~8,000
/// values (an ack passes two per job to ZADD or DEL).
pub(crate) const MAX_BATCH: usize = 1000;

/// A string of a script's reply.
fn text(v: redis::Value, what: &str) -> Result<String, Error> {
    redis::from_redis_value(v).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// A count of a script's reply (an integer, or its text).
fn count(v: redis::Value, what: &str) -> Result<u32, Error> {
    redis::from_redis_value(v).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// One claimed job, as `fetch.lua` returns it.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) payload: String,
    /// The attempt it runs as; for a job to bury, the attempts it used.
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    /// Set when the job must not run again, only be dead-lettered: why.
    pub(crate) bury: Option<String>,
}

/// What happens to a job that did not succeed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    /// Run again after the delay; the attempt stays counted.
    Retry(Duration),
    /// A dependency was down: give the attempt back and wait the postpone
    /// backoff, at least the given delay.
    Postpone(Duration),
    /// Dead-lettering failed: keep the reason, try again after the postpone
    /// backoff.
    Bury,
    /// Park in the dead set.
    Dead,
    /// Put back as it was, giving the interrupted attempt back.
    Requeue,
}

/// Bounds and backoffs the settle script applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettleLimits {
    pub(crate) postpone: Backoff,
    pub(crate) dead_retention: Duration,
    pub(crate) dead_keep: u64,
}

impl Queue {
    pub(crate) async fn fetch(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        max_stalls: u32,
        lane_ttl: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let mut conn = self.conn.clone();
        let flat: Vec<redis::Value> = self
            .scripts
            .fetch
            .key(self.keys.pending(queue))
            .key(self.keys.scheduled(queue))
            .key(self.keys.running(queue, worker))
            .arg(self.keys.job_prefix(queue))
            .arg(max.min(MAX_BATCH))
            .arg(MAX_BATCH)
            .arg(worker)
            .arg(max_stalls.max(1))
            .arg(self.keys.queue_prefix(queue))
            .arg(lane_ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 5);
        let mut it = flat.into_iter();
        while let (Some(id), Some(payload), Some(attempt), Some(max), Some(reason)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        {
            let reason = text(reason, "bury reason")?;
            out.push(Claimed {
                id: text(id, "id")?,
                payload: text(payload, "payload")?,
                attempt: count(attempt, "attempts")?,
                max_attempts: count(max, "max")?,
                bury: Some(reason).filter(|r| !r.is_empty()),
            });
        }
        Ok(out)
    }

    /// Marks `ids` done (those still claimed by `worker`), then trims the
    /// done set to `retention` and `keep`, deleting what it trims. With no
    /// ids it only trims (see `ack.lua`). At most [`MAX_BATCH`] ids a call.
    pub(crate) async fn ack(
        &self,
        queue: &str,
        worker: &str,
        ids: &[String],
        retention: Duration,
        keep: u64,
    ) -> Result<(), Error> {
        debug_assert!(ids.len() <= MAX_BATCH, "ack.lua unpacks the ids");
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.ack.prepare_invoke();
        inv.key(self.keys.running(queue, worker))
            .key(self.keys.done(queue))
            .key(self.keys.stats(queue))
            .arg(self.keys.job_prefix(queue))
            .arg(retention.as_millis() as u64)
            .arg(keep)
            .arg(STATS_SLOTS)
            .arg(MAX_BATCH);
        for id in ids {
            inv.arg(id);
        }
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    pub(crate) async fn settle(
        &self,
        queue: &str,
        worker: &str,
        id: &str,
        how: Settle,
        error: &str,
        limits: &SettleLimits,
    ) -> Result<(), Error> {
        let (outcome, delay) = match how {
            Settle::Retry(d) => ("retry", d),
            Settle::Postpone(d) => ("postpone", d),
            Settle::Bury => ("bury", Duration::ZERO),
            Settle::Dead => ("dead", Duration::ZERO),
            Settle::Requeue => ("requeue", Duration::ZERO),
        };
        let jitter: f64 = rand::random();
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .settle
            .key(self.keys.running(queue, worker))
            .key(self.keys.scheduled(queue))
            .key(self.keys.dead(queue))
            .key(self.keys.pending(queue))
            .key(self.keys.stats(queue))
            .arg(self.keys.job_prefix(queue))
            .arg(id)
            .arg(outcome)
            .arg(delay.as_millis() as u64)
            .arg(error)
            .arg(limits.postpone.base.as_millis().max(1) as u64)
            .arg(limits.postpone.max.as_millis().max(1) as u64)
            .arg(jitter)
            .arg(limits.dead_retention.as_millis() as u64)
            .arg(limits.dead_keep)
            .arg(STATS_SLOTS)
            .arg(self.keys.queue_prefix(queue))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn record_attempt(
        &self,
        queue: &str,
        id: &str,
        rec: &AttemptRecord,
    ) -> Result<(), Error> {
        let body = serde_json::to_string(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let log = self.keys.job_log(queue, id);
        let () = redis::pipe()
            .rpush(&log, body)
            .ignore()
            .ltrim(&log, -(LOG_KEEP as isize), -1)
            .ignore()
            .hset(self.keys.job(queue, id), "error", &rec.error)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Logs a failed attempt that the retry layer runs again in place, and
    /// counts it in the queue's stats (an attempt whose failure is settled
    /// in Redis is counted by `settle.lua`).
    pub(crate) async fn record_retried_attempt(
        &self,
        queue: &str,
        id: &str,
        rec: &AttemptRecord,
    ) -> Result<(), Error> {
        let body = serde_json::to_string(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .retried
            .key(self.keys.job(queue, id))
            .key(self.keys.job_log(queue, id))
            .key(self.keys.stats(queue))
            .arg(body)
            .arg(&rec.error)
            .arg(LOG_KEEP)
            .arg(STATS_SLOTS)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn bump_attempt(&self, queue: &str, id: &str) -> Result<u32, Error> {
        let mut conn = self.conn.clone();
        Ok(conn.hincr(self.keys.job(queue, id), "attempts", 1).await?)
    }

    /// Says the worker is alive; the score is the Redis clock (see
    /// `heartbeat.lua`). Returns it.
    pub(crate) async fn heartbeat(
        &self,
        queue: &str,
        worker: &str,
        info: &[(&str, String)],
        ttl: Duration,
    ) -> Result<i64, Error> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(self.keys.workers(queue))
            .key(self.keys.worker_info(queue, worker))
            .arg(worker)
            .arg(ttl.as_millis().max(1) as u64);
        for (field, value) in info {
            inv.arg(*field).arg(value);
        }
        let now = inv.invoke_async(&mut conn).await?;
        let _: i64 = conn.sadd(self.keys.queues(), queue).await?;
        Ok(now)
    }

    /// Recovers the jobs of peers silent for `dead_after` (never `worker`'s).
    pub(crate) async fn reap(
        &self,
        queue: &str,
        worker: &str,
        dead_after: Duration,
    ) -> Result<u64, Error> {
        self.reap_script(queue, worker, dead_after, "peers").await
    }

    /// Recovers the claims a previous life of `worker` left behind when it
    /// died, as if a peer had reaped them (see `reap.lua`).
    pub(crate) async fn recover_own(&self, queue: &str, worker: &str) -> Result<u64, Error> {
        self.reap_script(queue, worker, Duration::ZERO, "own").await
    }

    async fn reap_script(
        &self,
        queue: &str,
        worker: &str,
        dead_after: Duration,
        mode: &str,
    ) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        Ok(self
            .scripts
            .reap
            .key(self.keys.workers(queue))
            .key(self.keys.suspects(queue))
            .arg(self.keys.queue_prefix(queue))
            .arg(self.keys.job_prefix(queue))
            .arg(dead_after.as_millis() as u64)
            .arg(worker)
            .arg(mode)
            .arg(LOG_KEEP)
            .invoke_async(&mut conn)
            .await?)
    }

    /// The ids `worker` holds claimed in Redis.
    pub(crate) async fn claimed_by(&self, queue: &str, worker: &str) -> Result<Vec<String>, Error> {
        let mut conn = self.conn.clone();
        Ok(conn.smembers(self.keys.running(queue, worker)).await?)
    }

    /// Leaves the pool: the worker's own claims go back to the queue first,
    /// their interrupted attempts given back.
    pub(crate) async fn leave(
        &self,
        queue: &str,
        worker: &str,
        limits: &SettleLimits,
    ) -> Result<(), Error> {
        for id in self.claimed_by(queue, worker).await? {
            self.settle(queue, worker, &id, Settle::Requeue, "", limits)
                .await?;
        }
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .zrem(self.keys.workers(queue), worker)
            .ignore()
            .del(self.keys.worker_info(queue, worker))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
