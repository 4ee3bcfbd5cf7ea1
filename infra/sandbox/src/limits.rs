//! Rate limiters: FUB's sliding window per context and Lofty's fixed 60-second window
//! per API key.

use std::collections::VecDeque;

/// Sliding window: at most `limit` accepted requests in any `window_ms`.
#[derive(Debug, Default)]
pub(crate) struct SlidingWindow {
    hits: VecDeque<i64>,
}

/// Result of a rate-limit check.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict {
    /// Accepted; `remaining` requests left in the window.
    Allowed { remaining: u32 },
    /// Refused; retry after this many seconds.
    Limited { retry_after_secs: u64 },
}

impl SlidingWindow {
    pub(crate) fn check(&mut self, now: i64, window_ms: i64, limit: u32) -> Verdict {
        while let Some(&t) = self.hits.front() {
            if t <= now - window_ms {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if self.hits.len() >= limit as usize {
            let oldest = self.hits.front().copied().unwrap_or(now);
            let wait_ms = (oldest + window_ms - now).max(1);
            return Verdict::Limited {
                retry_after_secs: ((wait_ms + 999) / 1000) as u64,
            };
        }
        self.hits.push_back(now);
        Verdict::Allowed {
            remaining: limit.saturating_sub(self.hits.len() as u32),
        }
    }
}

/// Fixed window that starts with the first request after the previous one ended.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FixedWindow {
    start: i64,
    count: u32,
}

impl FixedWindow {
    /// Returns `(allowed, remaining, reset_epoch_secs)`.
    pub(crate) fn check(&mut self, now: i64, window_ms: i64, limit: u32) -> (bool, u32, i64) {
        if self.count == 0 || now >= self.start + window_ms {
            self.start = now;
            self.count = 0;
        }
        let reset = (self.start + window_ms + 999) / 1000;
        if self.count >= limit {
            return (false, 0, reset);
        }
        self.count += 1;
        (true, limit - self.count, reset)
    }
}
