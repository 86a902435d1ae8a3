//! Operator views and actions on the queues: jobs by state, live workers,
//! throughput, purging, filtered revival. Listing reads a bounded page;
//! nothing here scans without a limit.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use crate::error::Error;
use crate::keys::STATS_SLOTS;
use crate::queue::{JobInfo, JobState, Queue};

/// A worker of the pool, as it last reported.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// Unique name.
    pub name: String,
    /// Queue it serves.
    pub queue: String,
    /// Host it runs on.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Jobs it may run at once.
    pub concurrency: Option<u32>,
    /// When it started, ms since the epoch (its own clock).
    pub started_ms: Option<i64>,
    /// Its apalis service stack, as apalis names it.
    pub service: Option<String>,
    /// Last heartbeat, ms since the epoch (Redis clock).
    pub last_heartbeat_ms: i64,
    /// Jobs it holds now.
    pub in_flight: u64,
}

/// What discarding a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Removed.
    Removed,
    /// No such job.
    Unknown,
    /// Running now; it cannot be removed under a worker's feet.
    Running,
}

/// Throughput of a queue over the last minutes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// Minutes covered (the current one included).
    pub minutes: u32,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed.
    pub failed: u64,
}

/// What a queue finished in one minute.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    /// When the minute began, ms since the Unix epoch (Redis' clock).
    pub start_ms: i64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed.
    pub failed: u64,
}

/// Groups a listing of pending jobs looks into, at most.
const MAX_GROUPS_LISTED: usize = 1000;

impl Queue {
    /// Jobs of a queue in one state, a page at a time (newest first for
    /// done and dead, next-to-run first for pending and scheduled).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<JobInfo>, Error> {
        let mut conn = self.conn.clone();
        let (start, stop) = (offset as isize, (offset + limit).saturating_sub(1) as isize);
        let ids: Vec<String> = match state {
            JobState::Pending => {
                // the suspect lane, then the ungrouped jobs, then the jobs
                // waiting in groups, group by group in the order of their
                // turns; each list is claimed from the right
                let mut lists = vec![self.keys.suspects(queue), self.keys.pending(queue)];
                let groups: Vec<String> = conn
                    .lrange(self.keys.groups(queue), -(MAX_GROUPS_LISTED as isize), -1)
                    .await?;
                lists.extend(groups.iter().rev().map(|g| self.keys.group(queue, g)));
                let wanted = (offset + limit) as usize;
                let mut seen = 0usize;
                let mut v = Vec::new();
                for list in &lists {
                    if seen >= wanted {
                        break;
                    }
                    let len: usize = conn.llen(list).await?;
                    let skip = (offset as usize).saturating_sub(seen);
                    if skip < len {
                        let take = (wanted - seen.max(offset as usize)).min(len - skip);
                        let hi = len as isize - 1 - skip as isize;
                        let lo = hi - take as isize + 1;
                        let mut ids: Vec<String> = conn.lrange(list, lo, hi).await?;
                        ids.reverse();
                        v.extend(ids);
                    }
                    seen += len;
                }
                v.truncate(limit as usize);
                v
            }
            JobState::Scheduled => conn.zrange(self.keys.scheduled(queue), start, stop).await?,
            JobState::Done => {
                // the scores are the finish times the jobs' hashes lack
                let done: Vec<(String, f64)> = conn
                    .zrevrange_withscores(self.keys.done(queue), start, stop)
                    .await?;
                let mut out = Vec::with_capacity(done.len());
                for (id, at) in done {
                    if let Some(mut job) = self.stored_job(queue, &id).await? {
                        if job.state == JobState::Running {
                            job.finished_at(at as i64);
                        }
                        out.push(job);
                    }
                }
                return Ok(out);
            }
            JobState::Dead => conn.zrevrange(self.keys.dead(queue), start, stop).await?,
            JobState::Running => {
                let mut all = Vec::new();
                for w in self.worker_names(queue).await? {
                    let ids: Vec<String> = conn.smembers(self.keys.running(queue, &w)).await?;
                    all.extend(ids);
                }
                all.sort();
                all.into_iter()
                    .skip(offset as usize)
                    .take(limit as usize)
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.job_in(queue, &id).await? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Every queue pushed to or served in this namespace, sorted.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn queue_names(&self) -> Result<Vec<String>, Error> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = conn.smembers(self.keys.queues()).await?;
        names.sort();
        Ok(names)
    }

    async fn worker_names(&self, queue: &str) -> Result<Vec<String>, Error> {
        let mut conn = self.conn.clone();
        Ok(conn.zrange(self.keys.workers(queue), 0, -1).await?)
    }

    /// The workers of a queue with their last heartbeat and load.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn workers(&self, queue: &str) -> Result<Vec<WorkerInfo>, Error> {
        let mut conn = self.conn.clone();
        let beats: Vec<(String, f64)> = conn
            .zrange_withscores(self.keys.workers(queue), 0, -1)
            .await?;
        let mut out = Vec::with_capacity(beats.len());
        for (name, beat) in beats {
            let info: HashMap<String, String> =
                conn.hgetall(self.keys.worker_info(queue, &name)).await?;
            let in_flight: u64 = conn.scard(self.keys.running(queue, &name)).await?;
            out.push(WorkerInfo {
                queue: queue.to_owned(),
                host: info.get("host").cloned(),
                pid: info.get("pid").and_then(|p| p.parse().ok()),
                concurrency: info.get("concurrency").and_then(|p| p.parse().ok()),
                started_ms: info.get("started").and_then(|p| p.parse().ok()),
                service: info.get("service").cloned(),
                last_heartbeat_ms: beat as i64,
                in_flight,
                name,
            });
        }
        Ok(out)
    }

    /// Completed jobs and failed attempts over the last `minutes` minutes
    /// (the current one included; at most 60, the length of the ring the
    /// counts are kept in).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn throughput(&self, queue: &str, minutes: u32) -> Result<Throughput, Error> {
        let history = self.history(queue, minutes).await?;
        Ok(Throughput {
            minutes: history.len() as u32,
            completed: history.iter().map(|m| m.completed).sum(),
            failed: history.iter().map(|m| m.failed).sum(),
        })
    }

    /// Completed jobs and failed attempts minute by minute, oldest first,
    /// over the last `minutes` minutes (the current one last; at most 60,
    /// the length of the ring the counts are kept in). A minute nothing
    /// finished in is there with zeros.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn history(&self, queue: &str, minutes: u32) -> Result<Vec<Minute>, Error> {
        let minutes = minutes.clamp(1, STATS_SLOTS);
        let mut conn = self.conn.clone();
        // the ring is written with the Redis clock, so it is read with it too
        let ((secs, _micros), stats): ((i64, i64), HashMap<String, i64>) = redis::pipe()
            .cmd("TIME")
            .hgetall(self.keys.stats(queue))
            .query_async(&mut conn)
            .await?;
        let now_min = secs / 60;
        let field = |name: &str, slot: i64| stats.get(&format!("{name}:{slot}")).copied();
        let count = |name: &str, slot: i64| field(name, slot).unwrap_or(0).max(0) as u64;
        let out = ((now_min - i64::from(minutes) + 1)..=now_min)
            .map(|minute| {
                let slot = minute.rem_euclid(i64::from(STATS_SLOTS));
                // a slot still holding an older lap's minute counts nothing
                let current = field("m", slot) == Some(minute);
                Minute {
                    start_ms: minute * 60_000,
                    completed: if current { count("c", slot) } else { 0 },
                    failed: if current { count("f", slot) } else { 0 },
                }
            })
            .collect();
        Ok(out)
    }

    /// Age of the job that has waited longest to be claimed, if any.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn oldest_pending_age(&self, queue: &str) -> Result<Option<Duration>, Error> {
        let mut conn = self.conn.clone();
        let mut id: Option<String> = conn.lindex(self.keys.suspects(queue), -1).await?;
        if id.is_none() {
            id = conn.lindex(self.keys.pending(queue), -1).await?;
        }
        if id.is_none() {
            // the group whose turn is next: its next job has waited about
            // as long as any (groups take turns)
            let next: Option<String> = conn.lindex(self.keys.groups(queue), -1).await?;
            if let Some(g) = next {
                id = conn.lindex(self.keys.group(queue, &g), -1).await?;
            }
        }
        let Some(id) = id else { return Ok(None) };
        // a pushed job has no `updated` until it changes state
        let (updated, created): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys.job(queue, &id))
            .arg("updated")
            .arg("created")
            .query_async(&mut conn)
            .await?;
        let now = self.server_ms().await?;
        Ok(updated
            .or(created)
            .map(|c| Duration::from_millis((now - c).max(0) as u64)))
    }

    /// Removes a job that is not running.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn discard_job(&self, id: &str) -> Result<Discard, Error> {
        match self.job(id).await? {
            None => Ok(Discard::Unknown),
            Some(j) if j.state == JobState::Running => Ok(Discard::Running),
            Some(_) => Ok(if self.discard(id).await? {
                Discard::Removed
            } else {
                Discard::Unknown
            }),
        }
    }

    /// Deletes finished jobs older than `age`; returns how many.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn purge_done(&self, queue: &str, age: Duration) -> Result<u64, Error> {
        let cutoff = self.server_ms().await? - age.as_millis() as i64;
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore(self.keys.done(queue), "-inf", cutoff)
            .await?;
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.del(self.keys.job(queue, id)).ignore();
                pipe.del(self.keys.job_log(queue, id)).ignore();
                pipe.zrem(self.keys.done(queue), id).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(ids.len() as u64)
    }

    /// Revives the dead jobs of a queue whose last error contains `needle`
    /// (all of them when `None`); returns how many moved.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn retry_dead_matching(
        &self,
        queue: &str,
        needle: Option<&str>,
    ) -> Result<u64, Error> {
        let Some(needle) = needle.filter(|n| !n.is_empty()) else {
            return self.retry_all_dead(queue).await;
        };
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.zrange(self.keys.dead(queue), 0, -1).await?;
        let mut matching = Vec::new();
        for id in ids {
            let err: Option<String> = conn.hget(self.keys.job(queue, &id), "error").await?;
            if err.is_some_and(|e| e.contains(needle)) {
                matching.push(id);
            }
        }
        self.retry_dead(queue, &matching).await
    }

    /// Grants used in the current window of a rate limiter.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn rate_limit_use(&self, key: &str, window: Duration) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        let now_us = self.server_ms().await? * 1000;
        let from = now_us - window.as_micros() as i64;
        Ok(conn.zcount(self.keys.rate_limit(key), from, "+inf").await?)
    }
}
