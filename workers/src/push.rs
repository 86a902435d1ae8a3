//! Enqueueing: one job, a backlog, de-duplicated webhook items, and the
//! typed tasks apalis' `TaskSink` hands the backend (each with its own id,
//! attempts and run time, all in one round trip). Every path runs
//! `push.lua`, so pushing an id that exists already does nothing.

use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::queue::{new_job_id, PushOptions, Queue};

/// Separates the de-duplication keys of one item inside the push script.
pub(crate) const KEY_SEPARATOR: char = '\u{1f}';

/// `(id, payload, dedup keys or "", group or "")`, as the push script takes
/// each job.
type Item = (String, String, String, String);

/// One job of a batch push.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) max_attempts: u32,
    pub(crate) delay: Duration,
    /// The fair-share group ("" for none; see [`PushOptions::group`]).
    pub(crate) group: String,
}

/// Refuses an item with no de-duplication key, or with a key that is empty
/// or holds [`KEY_SEPARATOR`].
pub(crate) fn check_keys<'a>(
    mut items: impl Iterator<Item = &'a Vec<String>>,
) -> Result<(), Error> {
    let bad = |k: &String| k.is_empty() || k.contains(KEY_SEPARATOR);
    match items.find(|keys| keys.is_empty() || keys.iter().any(bad)) {
        Some(keys) => Err(Error::Corrupt(format!(
            "unusable de-duplication keys {keys:?}"
        ))),
        None => Ok(()),
    }
}

impl Queue {
    /// Enqueues one job; returns its id.
    ///
    /// # Errors
    /// When the payload cannot be serialised or Redis fails.
    pub async fn push<T: Serialize>(
        &self,
        queue: &str,
        payload: &T,
        opts: PushOptions,
    ) -> Result<String, Error> {
        let body = serde_json::to_string(payload).map_err(|e| Error::Corrupt(e.to_string()))?;
        let minted = opts.id.is_none();
        let id = opts.id.clone().unwrap_or_else(new_job_id);
        let group = opts.group.clone().unwrap_or_default();
        self.push_script(
            queue,
            &[(id.clone(), body, String::new(), group)],
            &opts,
            Duration::ZERO,
            minted,
        )
        .await?;
        Ok(id)
    }

    /// Enqueues many already-serialised payloads, a thousand per script call;
    /// returns their ids in order. For backlogs and benchmarks (`opts.id` is
    /// ignored: each job gets a fresh id).
    ///
    /// # Errors
    /// When Redis fails; jobs of earlier batches stay queued.
    pub async fn push_many_raw(
        &self,
        queue: &str,
        payloads: &[String],
        opts: PushOptions,
    ) -> Result<Vec<String>, Error> {
        let mut ids = Vec::with_capacity(payloads.len());
        let group = opts.group.clone().unwrap_or_default();
        for chunk in payloads.chunks(1000) {
            let jobs: Vec<Item> = chunk
                .iter()
                .map(|body| (new_job_id(), body.clone(), String::new(), group.clone()))
                .collect();
            self.push_script(queue, &jobs, &opts, Duration::ZERO, true)
                .await?;
            ids.extend(jobs.into_iter().map(|(id, _, _, _)| id));
        }
        Ok(ids)
    }

    /// Enqueues each `(dedup keys, payload JSON)` item with a key not seen in
    /// the last `seen_ttl`, in one script call; returns per item the new
    /// job's id, or `None` for a duplicate (every key seen, by an earlier
    /// call or an earlier item of this one). A key is marked seen (in
    /// `{ns}:q:{queue}:seen:{key}`, holding the job id, for `seen_ttl`;
    /// keys are per queue) exactly when a
    /// job standing for it is created, so a webhook delivered twice makes
    /// one job. An item stands for several events when it carries several
    /// keys (one job per CRM record for all of a batch's events on it).
    /// `opts.id` is ignored.
    ///
    /// # Errors
    /// When Redis fails; then nothing of this call was written.
    pub async fn push_unique(
        &self,
        queue: &str,
        items: &[(Vec<String>, String)],
        opts: PushOptions,
        seen_ttl: Duration,
    ) -> Result<Vec<Option<String>>, Error> {
        let items: Vec<(Vec<String>, String, Option<String>)> = items
            .iter()
            .map(|(keys, body)| (keys.clone(), body.clone(), opts.group.clone()))
            .collect();
        self.push_unique_grouped(queue, &items, opts, seen_ttl)
            .await
    }

    /// [`Self::push_unique`] with a fair-share group per item (see
    /// [`PushOptions::group`]; `opts.group` is ignored).
    ///
    /// # Errors
    /// When Redis fails; then nothing of this call was written.
    pub async fn push_unique_grouped(
        &self,
        queue: &str,
        items: &[(Vec<String>, String, Option<String>)],
        opts: PushOptions,
        seen_ttl: Duration,
    ) -> Result<Vec<Option<String>>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        check_keys(items.iter().map(|(keys, _, _)| keys))?;
        let jobs: Vec<Item> = items
            .iter()
            .map(|(keys, body, group)| {
                (
                    new_job_id(),
                    body.clone(),
                    keys.join(&KEY_SEPARATOR.to_string()),
                    group.clone().unwrap_or_default(),
                )
            })
            .collect();
        let ttl = seen_ttl.max(Duration::from_millis(1));
        self.push_script(queue, &jobs, &opts, ttl, true).await
    }

    /// Enqueues `jobs` in one round trip: runs of jobs with the same
    /// attempts and delay share a script call (a thousand at most), and all
    /// calls go out in one pipeline. An id that exists already is left as
    /// it is.
    ///
    /// # Errors
    /// When Redis fails; calls before the failing one may have been applied.
    pub(crate) async fn push_jobs(&self, queue: &str, jobs: &[NewJob]) -> Result<(), Error> {
        let mut calls: Vec<(PushOptions, Vec<Item>)> = Vec::new();
        for job in jobs {
            let item = (
                job.id.clone(),
                job.payload.clone(),
                String::new(),
                job.group.clone(),
            );
            match calls.last_mut() {
                Some((opts, items))
                    if opts.max_attempts == job.max_attempts
                        && opts.delay == job.delay
                        && items.len() < 1000 =>
                {
                    items.push(item)
                }
                _ => calls.push((
                    PushOptions {
                        max_attempts: job.max_attempts,
                        delay: job.delay,
                        ..PushOptions::default()
                    },
                    vec![item],
                )),
            }
        }
        self.register(queue).await?;
        if let [(opts, items)] = calls.as_slice() {
            // one call: EVALSHA, loading the script only if Redis lacks it
            self.push_script(queue, items, opts, Duration::ZERO, false)
                .await?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        // a pipeline does not load scripts by itself; loading is idempotent
        pipe.load_script(&self.scripts.push).ignore();
        let invocations: Vec<_> = calls
            .iter()
            .map(|(opts, items)| self.push_invocation(queue, items, opts, Duration::ZERO, false))
            .collect();
        for inv in &invocations {
            pipe.invoke_script(inv).ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Runs the push script over `jobs`. `minted`: every id was made for
    /// this call, so none can exist yet and the script need not look.
    async fn push_script(
        &self,
        queue: &str,
        jobs: &[Item],
        opts: &PushOptions,
        seen_ttl: Duration,
        minted: bool,
    ) -> Result<Vec<Option<String>>, Error> {
        self.register(queue).await?;
        let mut conn = self.conn.clone();
        let inv = self.push_invocation(queue, jobs, opts, seen_ttl, minted);
        Ok(inv.invoke_async(&mut conn).await?)
    }

    fn push_invocation<'a>(
        &'a self,
        queue: &str,
        jobs: &[Item],
        opts: &PushOptions,
        seen_ttl: Duration,
        minted: bool,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = self.scripts.push.prepare_invoke();
        inv.key(self.keys.pending(queue))
            .key(self.keys.scheduled(queue))
            .arg(self.keys.job_prefix(queue))
            .arg(self.keys.seen_prefix(queue))
            .arg(opts.max_attempts)
            .arg(opts.delay.as_millis() as u64)
            .arg(seen_ttl.as_millis() as u64)
            .arg(self.keys.queue_prefix(queue))
            .arg(if minted { "1" } else { "0" });
        for (id, body, dedup, group) in jobs {
            inv.arg(id).arg(body).arg(dedup).arg(group);
        }
        inv
    }
}
