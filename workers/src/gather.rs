//! Gathered pushes: the new items of one delivery (a webhook batch) queued
//! as one job, de-duplicated item by item in the same script call. See
//! `lua/gather.lua`.

use std::time::Duration;

use crate::error::Error;
use crate::push::{check_keys, KEY_SEPARATOR};
use crate::queue::{new_job_id, PushOptions, Queue};

/// One delivery's items, to be queued as one job.
#[derive(Debug, Clone, Default)]
pub struct Gathering {
    /// `(dedup keys, payload JSON)` per item; an item is new when one of
    /// its keys was not seen within the TTL.
    pub items: Vec<(Vec<String>, String)>,
    /// What goes before the new items' payloads, joined by `,`, in the
    /// gathered job's payload (say `{"batch":[`)...
    pub head: String,
    /// ...and after them (say `]}`).
    pub tail: String,
    /// The fair-share group of the job (see [`PushOptions::group`]).
    pub group: Option<String>,
}

/// What became of a [`Gathering`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    /// The job queued, or `None` when every item had been seen.
    pub job: Option<String>,
    /// How many items were new (and are in the job).
    pub new: usize,
}

impl Queue {
    /// Queues each gathering's new items as one job, all in one round trip.
    /// A job of one new item has that item's payload; a job of several has
    /// `head`, their payloads joined by `,`, and `tail` (the consumer tells
    /// them apart). An item is new when one of its keys was not seen in the
    /// last `window` (keys are remembered for at least `window` and at most
    /// twice that, in one set per window: `{ns}:q:{queue}:seen-in:{n}`;
    /// keep `window` the same from call to call, as a new one starts the
    /// memory afresh). A key is marked seen exactly when the job holding
    /// its item is created, so a delivery made twice is queued once.
    /// `opts.id` and `opts.delay` are ignored: each job is new and ready.
    /// Short keys (a digest of the event's identity) keep the sets small.
    /// These keys are apart from [`Queue::push_unique`]'s.
    ///
    /// # Errors
    /// When a key is empty or holds the separator `\u{1f}`, or Redis fails;
    /// a gathering either is queued and remembered whole or not at all.
    pub async fn push_gathered(
        &self,
        queue: &str,
        gatherings: &[Gathering],
        opts: &PushOptions,
        window: Duration,
    ) -> Result<Vec<Gathered>, Error> {
        check_keys(
            gatherings
                .iter()
                .flat_map(|g| &g.items)
                .map(|(keys, _)| keys),
        )?;
        let nothing = Gathered { job: None, new: 0 };
        let calls: Vec<&Gathering> = gatherings.iter().filter(|g| !g.items.is_empty()).collect();
        if calls.is_empty() {
            return Ok(vec![nothing; gatherings.len()]);
        }
        self.register(queue).await?;
        let window = window.max(Duration::from_millis(1)).as_millis() as u64;
        let invocations: Vec<_> = calls
            .iter()
            .map(|g| {
                let mut inv = self.scripts.gather.prepare_invoke();
                inv.key(self.keys.pending(queue))
                    .arg(self.keys.job_prefix(queue))
                    .arg(self.keys.seen_sets_prefix(queue))
                    .arg(opts.max_attempts)
                    .arg(window)
                    .arg(self.keys.queue_prefix(queue))
                    .arg(new_job_id())
                    .arg(g.group.as_deref().unwrap_or(""))
                    .arg(&g.head)
                    .arg(&g.tail);
                for (keys, payload) in &g.items {
                    inv.arg(keys.join(&KEY_SEPARATOR.to_string())).arg(payload);
                }
                inv
            })
            .collect();
        let mut conn = self.conn.clone();
        let replies: Vec<(String, usize)> = if let [inv] = invocations.as_slice() {
            // one call: EVALSHA, loading the script only if Redis lacks it
            vec![inv.invoke_async(&mut conn).await?]
        } else {
            let mut pipe = redis::pipe();
            // a pipeline does not load scripts by itself; loading is idempotent
            pipe.load_script(&self.scripts.gather).ignore();
            for inv in &invocations {
                pipe.invoke_script(inv);
            }
            pipe.query_async(&mut conn).await?
        };
        let mut replies = replies.into_iter();
        Ok(gatherings
            .iter()
            .map(|g| {
                if g.items.is_empty() {
                    return nothing.clone();
                }
                let (id, new) = replies.next().unwrap_or_default();
                Gathered {
                    job: (!id.is_empty()).then_some(id),
                    new,
                }
            })
            .collect())
    }
}
