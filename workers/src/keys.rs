//! The Redis key layout, in one place. Every key starts with the namespace so
//! several deployments (or test runs) can share one Redis.
//!
//! Redis Cluster: a script may only touch keys of one hash slot, so every
//! key a script of one queue touches (its lists and sets, its job hashes
//! and attempt logs, its de-duplication keys, its workers' info) carries the
//! queue's name as hash tag: `{ns}:q:{queue}:…`, braces included. The keys
//! shared by all queues (the queue registry, metrics, leases, rate limits,
//! once-keys) are single keys that no script combines with another, so each
//! may live on any node.

/// Minute slots of the per-queue throughput ring in the stats hash.
pub(crate) const STATS_SLOTS: u32 = 60;

/// Entries kept in a job's attempt log (the newest).
pub(crate) const LOG_KEEP: i64 = 25;

/// Builds the keys of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    ns: String,
}

impl Keys {
    pub(crate) fn new(ns: &str) -> Self {
        Self { ns: ns.to_owned() }
    }

    /// Prefix of the per-queue keys: `{ns}:q:{queue}:`, the braces
    /// literal: the queue's hash tag.
    pub(crate) fn queue_prefix(&self, queue: &str) -> String {
        format!("{}:q:{{{queue}}}:", self.ns)
    }

    /// Prefix of a queue's job hashes: `{queue prefix}job:{id}` (and
    /// `{…}:log` for attempts).
    pub(crate) fn job_prefix(&self, queue: &str) -> String {
        format!("{}job:", self.queue_prefix(queue))
    }

    pub(crate) fn job(&self, queue: &str, id: &str) -> String {
        format!("{}job:{id}", self.queue_prefix(queue))
    }

    pub(crate) fn job_log(&self, queue: &str, id: &str) -> String {
        format!("{}job:{id}:log", self.queue_prefix(queue))
    }

    pub(crate) fn pending(&self, queue: &str) -> String {
        format!("{}pending", self.queue_prefix(queue))
    }

    /// The suspect lane: jobs given back by a worker that died running
    /// them among others, each to run alone (see `lua/fetch.lua`).
    pub(crate) fn suspects(&self, queue: &str) -> String {
        format!("{}suspects", self.queue_prefix(queue))
    }

    /// The ring of groups with jobs waiting (see `lua/ready.lua`).
    pub(crate) fn groups(&self, queue: &str) -> String {
        format!("{}groups", self.queue_prefix(queue))
    }

    /// The jobs of one group waiting to be claimed.
    pub(crate) fn group(&self, queue: &str, group: &str) -> String {
        format!("{}g:{group}", self.queue_prefix(queue))
    }

    /// How many jobs wait in groups.
    pub(crate) fn grouped(&self, queue: &str) -> String {
        format!("{}grouped", self.queue_prefix(queue))
    }

    pub(crate) fn scheduled(&self, queue: &str) -> String {
        format!("{}scheduled", self.queue_prefix(queue))
    }

    pub(crate) fn dead(&self, queue: &str) -> String {
        format!("{}dead", self.queue_prefix(queue))
    }

    pub(crate) fn done(&self, queue: &str) -> String {
        format!("{}done", self.queue_prefix(queue))
    }

    pub(crate) fn stats(&self, queue: &str) -> String {
        format!("{}stats", self.queue_prefix(queue))
    }

    pub(crate) fn workers(&self, queue: &str) -> String {
        format!("{}workers", self.queue_prefix(queue))
    }

    pub(crate) fn running(&self, queue: &str, worker: &str) -> String {
        format!("{}running:{worker}", self.queue_prefix(queue))
    }

    /// What a worker of `queue` says about itself (host, pid, …).
    pub(crate) fn worker_info(&self, queue: &str, worker: &str) -> String {
        format!("{}worker:{worker}", self.queue_prefix(queue))
    }

    /// The set of every queue name pushed to or served (for listings
    /// across queues).
    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.ns)
    }

    pub(crate) fn metrics(&self) -> String {
        format!("{}:metrics", self.ns)
    }

    pub(crate) fn once(&self, key: &str) -> String {
        format!("{}:once:{key}", self.ns)
    }

    pub(crate) fn lease(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.ns)
    }

    /// Prefix of the de-duplication keys of [`Queue::push_unique`] for
    /// `queue`: `{queue prefix}seen:{key}`.
    ///
    /// [`Queue::push_unique`]: crate::Queue::push_unique
    pub(crate) fn seen_prefix(&self, queue: &str) -> String {
        format!("{}seen:", self.queue_prefix(queue))
    }

    /// The prefix of the sets of keys [`Queue::push_gathered`] has seen on
    /// `queue`, one per window of time: `{queue prefix}seen-in:{n}`.
    ///
    /// [`Queue::push_gathered`]: crate::Queue::push_gathered
    pub(crate) fn seen_sets_prefix(&self, queue: &str) -> String {
        format!("{}seen-in:", self.queue_prefix(queue))
    }

    pub(crate) fn rate_limit(&self, key: &str) -> String {
        format!("{}:rl:{key}", self.ns)
    }
}
