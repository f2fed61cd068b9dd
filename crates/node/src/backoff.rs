//! Back-off for the node's long-running readers (stream consumers, chain keepers): doubling after each
//! failure up to a ceiling, and back to the start once a run has been healthy for a while, so that one bad
//! hour does not leave every later hiccup waiting the longest pause.

use std::time::Duration;

/// A run at least this long counts as healthy: the next failure waits the initial pause again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The pause after a run that lasted `ran_for` and then failed.
    pub fn after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= HEALTHY_AFTER {
            self.next = self.initial;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let quick = Duration::from_millis(10);
        let pauses: Vec<u128> = (0..8).map(|_| b.after(quick).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.after(HEALTHY_AFTER).as_millis(), 100);
        assert_eq!(b.after(quick).as_millis(), 200);
    }
}
