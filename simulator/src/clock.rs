//! Wall-clock milliseconds that never go backwards.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds, read as the start-up wall clock plus a
/// monotonic elapsed time, so a wall-clock step back cannot reorder records
/// or rate-limit windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: i64,
    start: Instant,
}

/// The wall clock now, in Unix milliseconds (0 before the epoch).
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base_ms: wall_ms(),
            start: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}
