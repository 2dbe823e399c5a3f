//! [`Backoff`]: capped exponential delays between reconnect attempts.

use std::time::Duration;

use rand::Rng as _;

/// First delay after a failure.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest delay between attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Doubles from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], with ±20 % jitter so
/// many processes do not reconnect in lockstep.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Starts at [`BACKOFF_MIN`].
    pub(super) fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    /// The delay to wait now; the following one is twice as long (capped).
    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(rand::rng().random_range(0.8..=1.2))
    }

    /// Back to [`BACKOFF_MIN`] (after a connection that worked).
    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN.mul_f64(0.8) && delays[0] <= BACKOFF_MIN.mul_f64(1.2));
        assert!(delays[3] > delays[0] * 4);
        for delay in &delays {
            assert!(*delay <= BACKOFF_MAX.mul_f64(1.2));
        }
        assert!(delays[9] >= BACKOFF_MAX.mul_f64(0.8));
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_MIN.mul_f64(1.2));
    }
}
