//! [`LogLimiter`]: at most one log line per interval for an event that can
//! repeat once per connection or per request (an outage seen by 5,000
//! connections is one warning a second, not 5,000), with the count of the
//! lines held back.
//!
//! Hand-written: `tracing` has no rate limiting of its own, and the few
//! crates that add it wrap the subscriber, which would throttle every line
//! (or need a filter per call site) rather than the repeated ones.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One call site's limiter: put it in a `static`.
///
/// # Examples
/// ```
/// use channels_core::LogLimiter;
///
/// static LAYER_FAILED: LogLimiter = LogLimiter::per_second();
/// for _ in 0..1_000 {
///     if let Some(held_back) = LAYER_FAILED.allow() {
///         eprintln!("the layer failed ({held_back} more like this not logged)");
///     }
/// }
/// ```
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] before which no line is allowed.
    next_at: AtomicU64,
    /// Lines held back since the last one allowed.
    held: AtomicU64,
}

impl LogLimiter {
    /// One line per second.
    pub const fn per_second() -> Self {
        Self::every(Duration::from_secs(1))
    }

    /// One line per `interval`.
    pub const fn every(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            next_at: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether this occurrence may be logged now; if so, how many were held
    /// back since the last line. Otherwise counts it as held back.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_at.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_at
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The process's reference instant for limiters.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::every(Duration::from_millis(50));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..99 {
            assert_eq!(limiter.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limiter.allow(), Some(99));
        assert_eq!(limiter.allow(), None);
    }
}
