//! The Redis key layout, in one place. Every key starts with the namespace so
//! several deployments (or test runs) can share one Redis.

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

    /// Prefix of every job hash: `{ns}:job:{id}` (and `{…}:log` for attempts).
    pub(crate) fn job_prefix(&self) -> String {
        format!("{}:job:", self.ns)
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.ns)
    }

    pub(crate) fn job_log(&self, id: &str) -> String {
        format!("{}:job:{id}:log", self.ns)
    }

    /// Prefix of the per-queue keys: `{ns}:q:{queue}:`.
    pub(crate) fn queue_prefix(&self, queue: &str) -> String {
        format!("{}:q:{queue}:", self.ns)
    }

    pub(crate) fn pending(&self, queue: &str) -> String {
        format!("{}pending", self.queue_prefix(queue))
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

    pub(crate) fn worker_info(&self, worker: &str) -> String {
        format!("{}:worker:{worker}", self.ns)
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

    /// Prefix of the de-duplication keys of [`Queue::push_unique`]:
    /// `{ns}:seen:{key}`.
    ///
    /// [`Queue::push_unique`]: crate::Queue::push_unique
    pub(crate) fn seen_prefix(&self) -> String {
        format!("{}:seen:", self.ns)
    }

    pub(crate) fn rate_limit(&self, key: &str) -> String {
        format!("{}:rl:{key}", self.ns)
    }
}
