//! The wall clock that expiry reads. PIN lifetimes are wall-clock instants (they are stored
//! and must mean the same after a restart), so the service reads [`Clock::System`]; tests of
//! expiry and of the sweep use a [`ManualClock`] and move it forward instead of sleeping.

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where "now" comes from.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(ManualClock),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(millis)
                .unwrap_or(0),
            Clock::Manual(manual) => manual.0.load(Ordering::SeqCst),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::System => f.write_str("System"),
            Clock::Manual(manual) => write!(f, "Manual({} ms)", manual.0.load(Ordering::SeqCst)),
        }
    }
}

/// A clock for tests, shared by its clones: [`advance`](ManualClock::advance) moves every copy.
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Starts at the real time, so that timestamps in answers look ordinary.
    pub fn starting_now() -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(Clock::System.now_ms())))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }

    /// The same clock, to put in a [`Config`](super::Config).
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let manual = ManualClock::starting_now();
        let clock = manual.clock();
        let start = clock.now_ms();
        assert!((start - Clock::System.now_ms()).abs() < 60_000);
        manual.advance(Duration::from_secs(3));
        assert_eq!(clock.now_ms(), start + 3_000);
    }
}
