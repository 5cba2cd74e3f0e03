//! The clocks the adapter feeds the core with.

use std::{
    sync::OnceLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Microseconds on this process's monotonic clock: the `now` passed to the
/// core, and the time base of [`Frame::published_us`](tidings_core::message::Frame).
pub fn now_us() -> u64 {
    origin().elapsed().as_micros() as u64
}

/// Time elapsed since `us` on the [`now_us`] clock.
pub fn since_us(us: u64) -> Duration {
    Duration::from_micros(now_us().saturating_sub(us))
}

/// Microseconds since the Unix epoch (wall clock; what other instances can
/// read too).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A wall-clock acceptance time written by whichever instance took the
/// publish, on this process's [`now_us`] clock, so latency metrics include
/// the trip through the engine. Other hosts' clocks may disagree: anything
/// not within the last minute counts as now.
pub fn from_unix_micros(accepted_unix_us: Option<u64>) -> u64 {
    let now = now_us();
    let Some(accepted) = accepted_unix_us else {
        return now;
    };
    match unix_micros().checked_sub(accepted) {
        Some(age) if age <= 60_000_000 => now.saturating_sub(age),
        _ => now,
    }
}

/// 64 random bits for a new epoch.
pub fn random_epoch() -> tidings_core::message::Epoch {
    tidings_core::message::Epoch::from_random(rand::random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_time_comes_from_the_entry_within_a_minute() {
        let _ = now_us();
        std::thread::sleep(Duration::from_millis(20));
        let now_unix = unix_micros();
        let five_ms_ago = from_unix_micros(Some(now_unix - 5_000));
        assert!(since_us(five_ms_ago) >= Duration::from_millis(5));
        // An hour old or in the future (clock skew): counted from now.
        for skewed in [now_unix - 3_600_000_000, now_unix + 3_600_000_000] {
            assert!(since_us(from_unix_micros(Some(skewed))) < Duration::from_secs(1));
        }
        assert!(since_us(from_unix_micros(None)) < Duration::from_secs(1));
    }
}
