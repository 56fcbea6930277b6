//! When a watcher counts as too far behind.

use std::time::Duration;

/// A connection's unsent output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// Unsent bytes plus a small charge per queued message (what the queue costs in memory).
    pub bytes: usize,
    pub oldest_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// `watcher_queue_bytes`: queued bytes past which a watcher is over its bound.
    pub queue_bytes: usize,
    /// `watcher_max_lag_ms`: a live picture this late is worse than a skipped one.
    pub max_lag: Duration,
    /// A watcher over its bound this long is closed with 1008.
    pub slow_close_after: Duration,
}

impl Policy {
    pub fn is_over(&self, b: Backlog) -> bool {
        b.bytes > self.queue_bytes || b.oldest_wait > self.max_lag
    }

    /// Behind by an eighth of the bound: nothing is skipped yet, but when every watcher of a
    /// stream is this far behind, reading its publisher faster would only deepen every queue
    /// (and the latency): the publisher waits, and TCP pushes back on it instead.
    pub fn is_behind(&self, b: Backlog) -> bool {
        b.bytes > self.queue_bytes / 8 || b.oldest_wait > self.max_lag / 8
    }
}
