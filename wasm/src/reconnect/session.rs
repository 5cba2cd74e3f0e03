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
//! Open ── tidings.expired ──► Authenticating ── token ──► Connecting (at once,
//!                                   │                     if the stream was stable)
//!                                   └──── no token ──► Closed
//! any ── 204 or close() ──► Closed (final)
//! ```
//!
//! An expired token is routine, not a failure: after a stream that stayed up
//! [`BackoffConfig::reset_after_ms`], the client reconnects as soon as the
//! token hook answers, without a delay or an attempt counted. Only an expiry
//! that comes sooner (a hook handing out tokens about to expire) goes through
//! the backoff, so it cannot turn into a reconnection storm.

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

/// Why the session needs fresh credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReason {
    /// The server refused the credentials: 401 (token) or 403 (topics).
    Refused {
        /// 401 or 403.
        status: u16,
    },
    /// The server ended an open stream because the token expired
    /// (`tidings.expired`).
    Expired,
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
        /// Refused credentials or an expired token.
        reason: AuthReason,
    },
    /// Connect again now, without a delay (the state is `Connecting`).
    ConnectNow,
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
    /// While authenticating: why, and whether an expired stream was stable.
    auth: Option<(AuthReason, bool)>,
}

impl Session {
    /// A session about to make its first connection attempt.
    pub fn new(config: BackoffConfig, resume: Resume) -> Self {
        Self {
            state: State::Connecting { attempt: 0 },
            backoff: Backoff::new(config),
            resume,
            opened_at_ms: None,
            auth: None,
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

    /// One of the server's own events (`tidings.*`) arrived: it is always
    /// delivered, and its id, if it has one, is the new resume point (a
    /// stream cut before its first message resumes from there).
    pub fn control_event(&mut self, id: Option<&str>) {
        self.resume.advance(id);
    }

    /// The server said the token expired (`tidings.expired`) and ends the
    /// stream: ask the token hook, then resume from the last id.
    pub fn expired(&mut self, now_ms: u64) -> Decision {
        if self.state == State::Closed {
            return Decision::Stop;
        }
        let stable = self
            .opened_at_ms
            .take()
            .is_some_and(|opened_at| self.backoff.connection_ended(opened_at, now_ms));
        self.authenticate(AuthReason::Expired, stable)
    }

    /// The attempt failed or the open stream ended.
    pub fn failed(&mut self, failure: Failure, now_ms: u64, jitter: &mut impl Jitter) -> Decision {
        if self.state == State::Closed {
            return Decision::Stop;
        }
        if let Some(opened_at) = self.opened_at_ms.take() {
            let _ = self.backoff.connection_ended(opened_at, now_ms);
        }
        match failure {
            Failure::Status { status: 204, .. } => {
                self.state = State::Closed;
                Decision::Stop
            }
            Failure::Status {
                status: status @ (401 | 403),
                ..
            } => self.authenticate(AuthReason::Refused { status }, false),
            Failure::Status { retry_after_ms, .. } => self.schedule(jitter, retry_after_ms),
            Failure::Network => self.schedule(jitter, 0),
        }
    }

    /// The token hook answered. With a token the session reconnects: at
    /// once after an expired stable stream, else after a backoff delay (so a
    /// hook handing out bad tokens cannot spin). Without one it closes.
    pub fn reauthenticated(&mut self, got_token: bool, jitter: &mut impl Jitter) -> Decision {
        let Some((reason, stable)) = self.auth.take() else {
            return Decision::Stop;
        };
        if self.state != State::Authenticating {
            return Decision::Stop;
        }
        match (got_token, reason, stable) {
            (false, ..) => {
                self.state = State::Closed;
                Decision::Stop
            }
            (true, AuthReason::Expired, true) => {
                self.state = State::Connecting {
                    attempt: self.backoff.attempt(),
                };
                Decision::ConnectNow
            }
            (true, ..) => self.schedule(jitter, 0),
        }
    }

    /// Why the session is waiting for credentials, if it is.
    pub fn auth_reason(&self) -> Option<AuthReason> {
        self.auth.map(|(reason, _)| reason)
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
        self.auth = None;
    }

    fn authenticate(&mut self, reason: AuthReason, stable: bool) -> Decision {
        self.state = State::Authenticating;
        self.auth = Some((reason, stable));
        Decision::Authenticate { reason }
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
            let refused = Decision::Authenticate {
                reason: AuthReason::Refused { status: code },
            };
            assert_eq!(s.failed(status(code), 0, &mut || 0.5), refused);
            assert_eq!(s.state(), State::Authenticating);
            assert_eq!(
                s.reauthenticated(true, &mut || 1.0),
                Decision::Reconnect {
                    attempt: 1,
                    delay_ms: 100
                }
            );
            assert!(s.reconnect_now());
            assert_eq!(s.failed(status(code), 0, &mut || 0.5), refused);
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
    fn an_expired_stable_stream_resumes_at_once_once_the_hook_answers() {
        let mut s = session();
        let mut rng = || 1.0;
        // A bumpy start: two failed attempts.
        for _ in 0..2 {
            let _ = s.failed(Failure::Network, 0, &mut rng);
            assert!(s.reconnect_now());
        }
        s.opened(1_000);
        assert_eq!(s.event(Some("7")), Verdict::Deliver);
        assert_eq!(
            s.expired(2_000),
            Decision::Authenticate {
                reason: AuthReason::Expired
            }
        );
        assert_eq!(s.state(), State::Authenticating);
        assert_eq!(s.auth_reason(), Some(AuthReason::Expired));
        assert_eq!(s.reauthenticated(true, &mut rng), Decision::ConnectNow);
        assert_eq!(s.state(), State::Connecting { attempt: 0 });
        assert_eq!(s.last_event_id(), Some("7"), "resumes after the last id");
        assert_eq!(s.auth_reason(), None);
        // Not counted: a later failure is the first attempt again.
        s.opened(3_000);
        assert_eq!(
            s.failed(Failure::Network, 3_100, &mut rng),
            Decision::Reconnect {
                attempt: 1,
                delay_ms: 100
            }
        );
    }

    #[test]
    fn expiries_in_quick_succession_back_off() {
        let mut s = session();
        let mut rng = || 1.0;
        let mut delays = Vec::new();
        for n in 0..4u64 {
            s.opened(n * 1_000);
            // Up 100 ms only: the hook keeps handing out tokens about to expire.
            let _ = s.expired(n * 1_000 + 100);
            match s.reauthenticated(true, &mut rng) {
                Decision::Reconnect { delay_ms, .. } => delays.push(delay_ms),
                other => panic!("a quick expiry must back off, got {other:?}"),
            }
            assert!(s.reconnect_now());
        }
        assert_eq!(delays, [100, 200, 400, 800]);
    }

    #[test]
    fn an_expired_token_without_a_new_one_closes() {
        let mut s = session();
        s.opened(0);
        let _ = s.expired(10_000);
        assert_eq!(s.reauthenticated(false, &mut || 0.5), Decision::Stop);
        assert_eq!(s.state(), State::Closed);
        // Closed wins over a late expiry or hook answer.
        assert_eq!(s.expired(20_000), Decision::Stop);
        assert_eq!(s.reauthenticated(true, &mut || 0.5), Decision::Stop);
    }

    #[test]
    fn close_while_refreshing_wins() {
        let mut s = session();
        s.opened(0);
        let _ = s.expired(10_000);
        s.close();
        assert_eq!(s.reauthenticated(true, &mut || 0.5), Decision::Stop);
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn control_events_set_the_resume_point_and_are_never_duplicates() {
        let mut s = session();
        s.opened(0);
        // The first frame carries an id: a cut before any message resumes there.
        s.control_event(Some("e1-40"));
        let _ = s.failed(Failure::Network, 10, &mut || 0.0);
        assert!(s.reconnect_now());
        assert_eq!(s.last_event_id(), Some("e1-40"));
        s.opened(20);
        s.control_event(Some("e1-40"));
        assert_eq!(s.event(Some("e1-41")), Verdict::Deliver);
        // A gap with an id moves the resume point past what was lost.
        s.control_event(Some("e2-1"));
        assert_eq!(s.last_event_id(), Some("e2-1"));
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
