//! Halcyon's clock: the wall clock in production, a clock a test sets and advances (so a test can let two
//! working days pass in a moment, and the node's own timer notices the breaches). Only the deadline timer
//! and what it measures read it; access records keep the wall clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use halcyon_schema::clock::now_ms;

/// The longest a wall-clock sleep lasts before the time is read again (a suspended host, a clock step).
pub const SLEEP_SLICE_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's UTC time.
    #[default]
    System,
    /// A time that moves only when told to (tests).
    Manual(Arc<watch::Sender<i64>>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// A clock standing at `now_ms` until set or advanced.
    pub fn manual(now_ms: i64) -> Clock {
        Clock::Manual(Arc::new(watch::channel(now_ms).0))
    }

    /// Unix milliseconds UTC.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Manual(t) => *t.borrow(),
        }
    }

    /// Sets a manual clock (never backwards); the system clock cannot be set.
    pub fn set(&self, now_ms: i64) {
        match self {
            Clock::System => tracing::warn!("the system clock cannot be set"),
            Clock::Manual(t) => {
                t.send_modify(|t| *t = (*t).max(now_ms));
            }
        }
    }

    /// Steps a manual clock to `now_ms`, backwards too (a clock that was wrong and is put right).
    pub fn step_to(&self, now_ms: i64) {
        match self {
            Clock::System => tracing::warn!("the system clock cannot be set"),
            Clock::Manual(t) => {
                t.send_replace(now_ms);
            }
        }
    }

    pub fn advance(&self, by: Duration) {
        self.set(self.now_ms().saturating_add(by.as_millis() as i64));
    }

    /// Returns once the clock reads `at_ms` or later.
    pub async fn sleep_until(&self, at_ms: i64) {
        match self {
            Clock::System => loop {
                let now = self.now_ms();
                if now >= at_ms {
                    return;
                }
                let wait = Duration::from_millis((at_ms - now) as u64).min(SLEEP_SLICE_MAX);
                tokio::time::sleep(wait).await;
            },
            Clock::Manual(t) => {
                let mut rx = t.subscribe();
                // The sender lives as long as this clock, so the wait ends only when the time is reached.
                let _ = rx.wait_for(|now| *now >= at_ms).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_reaches_their_time() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(5_000).await }
        });
        clock.advance(Duration::from_millis(1_000));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.set(5_000);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .unwrap();
        clock.set(10); // never backwards
        assert_eq!(clock.now_ms(), 5_000);
    }
}
