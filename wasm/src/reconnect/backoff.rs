//! Exponential backoff with full jitter, a server-given floor, and a reset
//! once a connection has proved stable.

/// A source of randomness in `[0, 1)`; `Math.random` in the browser, a fixed
/// sequence in tests.
pub trait Jitter {
    /// The next number in `[0, 1)`.
    fn fraction(&mut self) -> f64;
}

impl<F: FnMut() -> f64> Jitter for F {
    fn fraction(&mut self) -> f64 {
        self()
    }
}

/// How long to wait between reconnection attempts.
///
/// ```
/// use tidings_wasm::reconnect::BackoffConfig;
/// let config = BackoffConfig { initial_ms: 500, max_ms: 10_000, ..BackoffConfig::default() };
/// assert_eq!(config.ceiling_ms(1), 500);
/// assert_eq!(config.ceiling_ms(3), 2_000);
/// assert_eq!(config.ceiling_ms(30), 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Upper bound of the first attempt's delay.
    pub initial_ms: u32,
    /// No delay grows beyond this (except a larger server `retry:` floor).
    pub max_ms: u32,
    /// A connection that stayed open this long resets the attempt count.
    pub reset_after_ms: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            max_ms: 30_000,
            reset_after_ms: 5_000,
        }
    }
}

impl BackoffConfig {
    /// The largest delay attempt `attempt` (1-based) may draw:
    /// `min(max, initial * 2^(attempt - 1))`.
    pub fn ceiling_ms(&self, attempt: u32) -> u32 {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = u64::from(self.initial_ms) << doublings;
        ceiling.min(u64::from(self.max_ms)) as u32
    }
}

/// Attempt counter plus the floor the server asked for.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    floor_ms: u32,
}

impl Backoff {
    /// A fresh backoff: the next attempt is the first.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            attempt: 0,
            floor_ms: 0,
        }
    }

    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The server's `retry:` value: no delay is drawn below it.
    pub fn set_floor_ms(&mut self, floor_ms: u32) {
        self.floor_ms = floor_ms;
    }

    /// Counts one more attempt and draws its delay: uniform in
    /// `[0, ceiling]` ("full jitter"), then raised to the server's floor and to
    /// `extra_floor_ms` (a `Retry-After` for this attempt only).
    pub fn next_delay_ms(&mut self, jitter: &mut impl Jitter, extra_floor_ms: u32) -> u32 {
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.config.ceiling_ms(self.attempt);
        let fraction = jitter.fraction().clamp(0.0, 1.0);
        let drawn = (f64::from(ceiling) * fraction).round() as u32;
        drawn.max(self.floor_ms).max(extra_floor_ms)
    }

    /// A connection that opened at `opened_at_ms` ended at `now_ms`: if it
    /// stayed up long enough, the next attempt counts as the first again.
    /// Returns whether it did (the connection was stable).
    pub fn connection_ended(&mut self, opened_at_ms: u64, now_ms: u64) -> bool {
        let stable = now_ms.saturating_sub(opened_at_ms) >= u64::from(self.config.reset_after_ms);
        if stable {
            self.attempt = 0;
        }
        stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial_ms: 100,
            max_ms: 1_000,
            reset_after_ms: 5_000,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let c = config();
        let ceilings: Vec<u32> = (1..=6).map(|a| c.ceiling_ms(a)).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(c.ceiling_ms(u32::MAX), 1_000);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let mut b = Backoff::new(config());
        assert_eq!(b.next_delay_ms(&mut || 0.0, 0), 0);
        assert_eq!(b.next_delay_ms(&mut || 0.5, 0), 100);
        assert_eq!(b.next_delay_ms(&mut || 0.999_999, 0), 400);
        assert_eq!(b.attempt(), 3);
    }

    #[test]
    fn a_misbehaving_rng_is_clamped() {
        let mut b = Backoff::new(config());
        assert_eq!(b.next_delay_ms(&mut || 7.0, 0), 100);
        assert_eq!(b.next_delay_ms(&mut || -1.0, 0), 0);
        assert_eq!(b.next_delay_ms(&mut || f64::NAN, 0), 0);
    }

    #[test]
    fn server_retry_is_a_floor_not_a_ceiling() {
        let mut b = Backoff::new(config());
        b.set_floor_ms(250);
        assert_eq!(b.next_delay_ms(&mut || 0.0, 0), 250);
        assert_eq!(b.next_delay_ms(&mut || 1.0, 0), 250);
        assert_eq!(b.next_delay_ms(&mut || 1.0, 0), 400);
        // A floor above the maximum wins: the server knows its load.
        b.set_floor_ms(3_000);
        assert_eq!(b.next_delay_ms(&mut || 1.0, 0), 3_000);
    }

    #[test]
    fn retry_after_raises_only_that_attempt() {
        let mut b = Backoff::new(config());
        assert_eq!(b.next_delay_ms(&mut || 0.0, 700), 700);
        assert_eq!(b.next_delay_ms(&mut || 0.0, 0), 0);
    }

    #[test]
    fn a_stable_connection_resets_the_attempts() {
        let mut b = Backoff::new(config());
        for _ in 0..4 {
            b.next_delay_ms(&mut || 1.0, 0);
        }
        assert!(!b.connection_ended(10_000, 14_999));
        assert_eq!(b.attempt(), 4, "up 4.999 s is not stable yet");
        assert!(b.connection_ended(10_000, 15_000));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay_ms(&mut || 1.0, 0), 100);
    }
}
