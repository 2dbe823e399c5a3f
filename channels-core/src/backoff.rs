//! [`Backoff`]: the one retry pause of the project (capped, jittered,
//! exponential), built on the `backon` crate. The consumer runtime, workers
//! and both Redis layers wait with it between attempts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Capped exponential delays with jitter: `min`, then about twice as long
/// each time, never more than `max` (plus up to one delay of jitter, so many
/// processes do not retry in lockstep). [`Backoff::reset`] after a success.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use channels_core::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// ```
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Delays from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The longest pause [`Backoff::next_delay`] gives for a cap of `max`:
    /// the cap plus a full delay of jitter. Whoever waits for the next
    /// attempt must allow this long.
    pub fn longest_delay(max: Duration) -> Duration {
        max.saturating_mul(2)
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts over from the shortest delay (after an attempt succeeded).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_and_resets() {
        let min = Duration::from_millis(50);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= min && delays[0] <= min * 2);
        assert!(delays[4] >= min * 16, "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Backoff::longest_delay(max)),
            "{delays:?}"
        );
        assert!(delays[11] >= max, "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= min * 2);
    }
}
