//! A rate limiter shared by every process of the pool, kept in Redis. A
//! per-process tower `RateLimit` would allow N times the budget once N
//! workers run, so the budget lives in one sorted set per key instead.

use std::time::Duration;

use rand::Rng;

use crate::error::Error;
use crate::queue::Queue;

/// Grants at most `limit` calls per `window` to the whole pool, per key.
#[derive(Clone)]
pub struct RateLimiter {
    queue: Queue,
}

impl RateLimiter {
    /// A limiter that keeps its state in the queue's Redis and namespace.
    pub fn new(queue: &Queue) -> Self {
        Self {
            queue: queue.clone(),
        }
    }

    /// Takes a grant under `key` if one is free now: `None`, granted; else
    /// how long to wait before asking again (nothing taken).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn try_acquire(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, Error> {
        let redis_key = self.queue.keys.rate_limit(key);
        let mut conn = self.queue.conn.clone();
        let wait_ms: u64 = self
            .queue
            .scripts
            .rate_limit
            .key(&redis_key)
            .arg(limit.max(1))
            .arg(window.as_millis() as u64)
            .arg(uuid::Uuid::new_v4().to_string())
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    /// Waits until a call under `key` is allowed; returns how long it waited.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn acquire(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Duration, Error> {
        let started = tokio::time::Instant::now();
        loop {
            let Some(wait) = self.try_acquire(key, limit, window).await? else {
                return Ok(started.elapsed());
            };
            let wait_ms = wait.as_millis() as u64;
            // a little jitter so waiting processes do not all ask at once
            let jitter = rand::rng().random_range(0..=wait_ms / 4 + 1);
            tokio::time::sleep(Duration::from_millis(wait_ms + jitter)).await;
        }
    }
}
