//! The connection state machine, driven by the transport's reports.
//!
//! ```text
//!             opened                    failure (retryable)
//! Connecting ───────► Open ───────────────────────────────┐
//!   ▲  │ failure (retryable)                               ▼
//!   │  └──────────────────────────────────────────► Reconnecting{attempt, delay}
//!   └──────────────── timer fired (reconnect_now) ────────┘
//! Connecting/Open ── 401/403 ──► Authenticating ── token ──► Reconnecting
//!                                        └──── no token ──► Closed
//! any ── 204 or close() ──► Closed (final)
//! ```

use super::backoff::{Backoff, BackoffConfig, Jitter};
use super::resume::{Resume, Verdict};

/// The connection as the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// A connection attempt is under way (`attempt` 0 is the first connect).
    Connecting {
        /// Reconnection attempt number, 0 for the initial connect.
        attempt: u32,
    },
    /// The stream is open and events flow.
    Open,
    /// Waiting `delay_ms` before reconnection attempt `attempt`.
    Reconnecting {
        /// Attempt number since the last stable connection (1-based).
        attempt: u32,
        /// How long this wait lasts, in milliseconds.
        delay_ms: u32,
    },
    /// The server refused the credentials; waiting for the token hook.
    Authenticating,
    /// Closed for good: by the app, a 204, or an auth error with no new token.
    Closed,
}

/// Why a connection attempt failed or an open stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unreachable, dropped, or ended by the server without an HTTP error.
    Network,
    /// The server answered with a status other than 200.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The `Retry-After` header in milliseconds, 0 if absent.
        retry_after_ms: u32,
    },
}

/// What the adapter must do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Wait `delay_ms`, then call [`Session::reconnect_now`] and connect again.
    Reconnect {
        /// Attempt number (1-based).
        attempt: u32,
        /// Delay before the attempt, in milliseconds.
        delay_ms: u32,
    },
    /// Ask the token hook for fresh credentials, then call
    /// [`Session::reauthenticated`].
    Authenticate {
        /// 401 or 403.
        status: u16,
    },
    /// Stop: the session is closed.
    Stop,
}

/// Backoff, resume point and state of one logical subscription.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    backoff: Backoff,
    resume: Resume,
    opened_at_ms: Option<u64>,
}

impl Session {
    /// A session about to make its first connection attempt.
    pub fn new(config: BackoffConfig, resume: Resume) -> Self {
        Self {
            state: State::Connecting { attempt: 0 },
            backoff: Backoff::new(config),
            resume,
            opened_at_ms: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The id to send as `lastEventId` on the next connection.
    pub fn last_event_id(&self) -> Option<&str> {
        self.resume.last_event_id()
    }

    /// The response headers arrived with status 200.
    pub fn opened(&mut self, now_ms: u64) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Open;
        self.opened_at_ms = Some(now_ms);
    }

    /// The server sent `retry: ms`.
    pub fn retry_field(&mut self, ms: u32) {
        self.backoff.set_floor_ms(ms);
    }

    /// An event arrived: deliver it or drop it as a duplicate.
    pub fn event(&mut self, id: Option<&str>) -> Verdict {
        self.resume.accept(id)
    }

    /// The attempt failed or the open stream ended.
    pub fn failed(&mut self, failure: Failure, now_ms: u64, jitter: &mut impl Jitter) -> Decision {
        if self.state == State::Closed {
            return Decision::Stop;
        }
        if let Some(opened_at) = self.opened_at_ms.take() {
            self.backoff.connection_ended(opened_at, now_ms);
        }
        match failure {
            Failure::Status { status: 204, .. } => {
                self.state = State::Closed;
                Decision::Stop
            }
            Failure::Status {
                status: status @ (401 | 403),
                ..
            } => {
                self.state = State::Authenticating;
                Decision::Authenticate { status }
            }
            Failure::Status { retry_after_ms, .. } => self.schedule(jitter, retry_after_ms),
            Failure::Network => self.schedule(jitter, 0),
        }
    }

    /// The token hook answered: with a token the session reconnects after a
    /// backoff delay (so a hook handing out bad tokens cannot spin), without
    /// one it closes.
    pub fn reauthenticated(&mut self, got_token: bool, jitter: &mut impl Jitter) -> Decision {
        if self.state != State::Authenticating {
            return Decision::Stop;
        }
        if got_token {
            self.schedule(jitter, 0)
        } else {
            self.state = State::Closed;
            Decision::Stop
        }
    }

    /// The reconnect delay is over; returns whether to connect (false once
    /// closed).
    #[must_use]
    pub fn reconnect_now(&mut self) -> bool {
        match self.state {
            State::Reconnecting { attempt, .. } => {
                self.state = State::Connecting { attempt };
                true
            }
            _ => false,
        }
    }

    /// The app closed the client.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.opened_at_ms = None;
    }

    fn schedule(&mut self, jitter: &mut impl Jitter, retry_after_ms: u32) -> Decision {
        let delay_ms = self.backoff.next_delay_ms(jitter, retry_after_ms);
        let attempt = self.backoff.attempt();
        self.state = State::Reconnecting { attempt, delay_ms };
        Decision::Reconnect { attempt, delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BackoffConfig = BackoffConfig {
        initial_ms: 100,
        max_ms: 800,
        reset_after_ms: 1_000,
    };

    fn status(status: u16) -> Failure {
        Failure::Status {
            status,
            retry_after_ms: 0,
        }
    }

    fn session() -> Session {
        Session::new(CONFIG, Resume::default())
    }

    #[test]
    fn server_errors_back_off_exponentially_with_jitter() {
        let mut s = session();
        let mut rng = || 1.0;
        let mut delays = Vec::new();
        for failure in [
            status(503),
            status(502),
            Failure::Network,
            status(500),
            status(429),
        ] {
            match s.failed(failure, 0, &mut rng) {
                Decision::Reconnect { attempt, delay_ms } => {
                    assert_eq!(s.state(), State::Reconnecting { attempt, delay_ms });
                    delays.push(delay_ms);
                }
                other => panic!("{failure:?} must reconnect, got {other:?}"),
            }
            assert!(s.reconnect_now());
            assert!(matches!(s.state(), State::Connecting { .. }));
        }
        assert_eq!(delays, [100, 200, 400, 800, 800]);
    }

    #[test]
    fn retry_after_and_retry_field_are_floors() {
        let mut s = session();
        s.retry_field(150);
        let mut rng = || 0.0;
        assert_eq!(
            s.failed(Failure::Network, 0, &mut rng),
            Decision::Reconnect {
                attempt: 1,
                delay_ms: 150
            }
        );
        let busy = Failure::Status {
            status: 503,
            retry_after_ms: 2_000,
        };
        assert_eq!(
            s.failed(busy, 0, &mut rng),
            Decision::Reconnect {
                attempt: 2,
                delay_ms: 2_000
            }
        );
    }

    #[test]
    fn no_content_closes_for_good() {
        let mut s = session();
        assert_eq!(s.failed(status(204), 0, &mut || 0.5), Decision::Stop);
        assert_eq!(s.state(), State::Closed);
        assert!(!s.reconnect_now());
        assert_eq!(s.failed(Failure::Network, 0, &mut || 0.5), Decision::Stop);
    }

    #[test]
    fn auth_errors_wait_for_a_token() {
        for code in [401, 403] {
            let mut s = session();
            assert_eq!(
                s.failed(status(code), 0, &mut || 0.5),
                Decision::Authenticate { status: code }
            );
            assert_eq!(s.state(), State::Authenticating);
            assert_eq!(
                s.reauthenticated(true, &mut || 1.0),
                Decision::Reconnect {
                    attempt: 1,
                    delay_ms: 100
                }
            );
            assert!(s.reconnect_now());
            assert_eq!(
                s.failed(status(code), 0, &mut || 0.5),
                Decision::Authenticate { status: code }
            );
            assert_eq!(s.reauthenticated(false, &mut || 0.5), Decision::Stop);
            assert_eq!(s.state(), State::Closed);
        }
    }

    #[test]
    fn close_wins_over_everything_in_flight() {
        let mut s = session();
        assert!(matches!(
            s.failed(Failure::Network, 0, &mut || 0.5),
            Decision::Reconnect { .. }
        ));
        s.close();
        assert!(
            !s.reconnect_now(),
            "a timer firing after close must not reconnect"
        );
        s.opened(5);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.reauthenticated(true, &mut || 0.5), Decision::Stop);
    }

    #[test]
    fn a_connection_that_stayed_up_resets_the_backoff() {
        let mut s = session();
        let mut rng = || 1.0;
        for _ in 0..3 {
            let _ = s.failed(Failure::Network, 0, &mut rng);
            assert!(s.reconnect_now());
        }
        // Open for 999 ms: not stable, the backoff keeps growing.
        s.opened(1_000);
        assert_eq!(
            s.failed(Failure::Network, 1_999, &mut rng),
            Decision::Reconnect {
                attempt: 4,
                delay_ms: 800
            }
        );
        assert!(s.reconnect_now());
        // Open for 1 s: stable, the next attempt is the first again.
        s.opened(3_000);
        assert_eq!(s.state(), State::Open);
        assert_eq!(
            s.failed(Failure::Network, 4_000, &mut rng),
            Decision::Reconnect {
                attempt: 1,
                delay_ms: 100
            }
        );
    }

    #[test]
    fn resume_survives_reconnects_and_drops_replayed_duplicates() {
        let mut s = Session::new(CONFIG, Resume::starting_after(Some("3".into())));
        s.opened(0);
        assert_eq!(s.event(Some("4")), Verdict::Deliver);
        let _ = s.failed(Failure::Network, 10, &mut || 0.5);
        assert!(s.reconnect_now());
        assert_eq!(s.last_event_id(), Some("4"));
        s.opened(20);
        assert_eq!(s.event(Some("4")), Verdict::Duplicate);
        assert_eq!(s.event(Some("5")), Verdict::Deliver);
        assert_eq!(s.last_event_id(), Some("5"));
    }
}
