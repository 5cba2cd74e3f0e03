//! The client's shared state: one session, the live connection, the
//! reconnect timer and the handlers. Transports report through a [`Link`]
//! that stays valid only while its connection is the current one, so a late
//! report from a replaced or closed connection is ignored.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use gloo_timers::callback::Timeout;
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};

use super::builder::TokenHook;
use super::handlers::{Handler, HandlerId, Registry};
use crate::error::Error;
use crate::event::{Event, RawEvent};
use crate::reconnect::{
    AuthReason, BackoffConfig, Decision, Failure, Resume, Session, State, Verdict, subscribe_url,
};
use crate::transport::{ConnectRequest, Connection, Sink, Transport, now_ms};

/// The server's gap notice: the resume point left its history.
pub(super) const GAP_EVENT: &str = "tidings.gap";
/// The server's notice that the token expired; it ends the stream next.
const EXPIRED_EVENT: &str = "tidings.expired";
/// The server's own events (`tidings.*`): never dropped as duplicates, and
/// their id, when they carry one, is a resume point like a message's.
const CONTROL_PREFIX: &str = "tidings.";

pub(super) struct Config {
    pub url: String,
    pub topics: Vec<String>,
    pub transport: Transport,
    pub headers: Vec<(String, String)>,
    pub with_credentials: bool,
    pub token: Option<String>,
    pub token_hook: Option<TokenHook>,
    pub backoff: BackoffConfig,
    pub last_event_id: Option<String>,
    /// `presence=1`: joins and leaves on this stream.
    pub presence: bool,
    /// `presenceInfo`: what presence shows without a token.
    pub presence_info: Option<String>,
}

pub(super) struct Inner {
    config: Config,
    me: Weak<Inner>,
    session: RefCell<Session>,
    token: RefCell<Option<String>>,
    handlers: RefCell<Registry>,
    connection: RefCell<Option<(Rc<Link>, Connection)>>,
    timer: RefCell<Option<Timeout>>,
    generation: Cell<u32>,
    reported_state: Cell<Option<State>>,
}

/// A transport's way back to the client, valid for one connection.
struct Link {
    inner: Weak<Inner>,
    generation: u32,
}

impl Link {
    fn current(&self) -> Option<Rc<Inner>> {
        let inner = self.inner.upgrade()?;
        (inner.generation.get() == self.generation).then_some(inner)
    }
}

impl Sink for Link {
    fn opened(&self) {
        if let Some(inner) = self.current() {
            inner.session.borrow_mut().opened(now_ms());
            inner.notify_state();
        }
    }

    fn event(&self, event: RawEvent) {
        if let Some(inner) = self.current() {
            inner.dispatch(event);
        }
    }

    fn retry(&self, ms: u32) {
        if let Some(inner) = self.current() {
            inner.session.borrow_mut().retry_field(ms);
        }
    }

    fn error(&self, error: Error) {
        if let Some(inner) = self.current() {
            inner.report(&error);
        }
    }

    fn failed(&self, failure: Failure) {
        if let Some(inner) = self.current() {
            inner.failed(failure);
        }
    }
}

fn jitter() -> f64 {
    js_sys::Math::random()
}

/// Drops `value` after the current callback returns: the value may own the
/// very closure that is running.
fn retire<T: 'static>(value: T) {
    wasm_bindgen_futures::spawn_local(async move { drop(value) });
}

impl Inner {
    pub fn start(mut config: Config) -> Rc<Self> {
        let resume = Resume::starting_after(config.last_event_id.take());
        let inner = Rc::new_cyclic(|me| Self {
            session: RefCell::new(Session::new(config.backoff, resume)),
            token: RefCell::new(config.token.clone()),
            config,
            me: me.clone(),
            handlers: RefCell::default(),
            connection: RefCell::new(None),
            timer: RefCell::new(None),
            generation: Cell::new(0),
            reported_state: Cell::new(None),
        });
        inner.connect();
        inner
    }

    pub fn state(&self) -> State {
        self.session.borrow().state()
    }

    pub fn last_event_id(&self) -> Option<String> {
        self.session.borrow().last_event_id().map(String::from)
    }

    pub fn add_handler(&self, handler: Handler) -> HandlerId {
        if self.state() == State::Closed {
            // Streams registered on a closed client end at once.
            return 0;
        }
        if let Handler::Event { event_type, .. } = &handler
            && let Some((_, connection)) = &*self.connection.borrow()
        {
            connection.listen(event_type);
        }
        self.handlers.borrow_mut().add(handler)
    }

    pub fn remove_handler(&self, id: HandlerId) {
        let removed = self.handlers.borrow_mut().remove(id);
        drop(removed);
    }

    /// The options the client was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The token in use now (the configured one, or the hook's latest).
    pub fn current_token(&self) -> Option<String> {
        self.token.borrow().clone()
    }

    pub fn close(&self) {
        self.session.borrow_mut().close();
        self.stop();
    }

    fn connect(&self) {
        let session = self.session.borrow();
        let token = self.token.borrow();
        let mut headers = self.config.headers.clone();
        let query_token = match (self.config.transport, token.as_deref()) {
            (Transport::Fetch, Some(token)) => {
                headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
                headers.push(("Authorization".into(), ["Bearer ", token].concat()));
                None
            }
            (_, token) => token,
        };
        let mut url = subscribe_url(
            &self.config.url,
            &self.config.topics,
            session.last_event_id(),
            query_token,
        );
        if self.config.presence {
            url.push_str("&presence=1");
        }
        if let Some(info) = &self.config.presence_info {
            url.push_str("&presenceInfo=");
            crate::reconnect::encode_component(&mut url, info);
        }
        let request = ConnectRequest {
            url,
            headers,
            with_credentials: self.config.with_credentials,
        };
        drop((session, token));

        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let link = Rc::new(Link {
            inner: self.me.clone(),
            generation,
        });
        let sink: Weak<dyn Sink> = Rc::downgrade(&link) as Weak<dyn Sink>;
        let event_types = self.handlers.borrow().event_types();
        match Connection::open(self.config.transport, &request, &event_types, sink) {
            Ok(connection) => {
                let old = self.connection.replace(Some((link, connection)));
                retire(old);
                self.notify_state();
            }
            Err(error) => {
                self.report(&error);
                self.close();
            }
        }
    }

    fn dispatch(&self, event: RawEvent) {
        let control = event.event_type.starts_with(CONTROL_PREFIX);
        if control {
            self.session.borrow_mut().control_event(event.id.as_deref());
        } else if self.session.borrow_mut().event(event.id.as_deref()) == Verdict::Duplicate {
            return;
        }
        self.deliver(&event);
        if control && event.event_type == EXPIRED_EVENT {
            self.expired();
        }
    }

    /// Calls the handlers of the event's type.
    fn deliver(&self, event: &RawEvent) {
        let handlers = self.handlers.borrow().event_handlers(&event.event_type);
        if handlers.is_empty() {
            return;
        }
        let json = if event.data.is_empty() && event.event_type.starts_with(CONTROL_PREFIX) {
            Ok(JsValue::NULL)
        } else {
            js_sys::JSON::parse(&event.data).map_err(|thrown| Error::Decode {
                event_type: event.event_type.clone(),
                id: event.id.clone(),
                message: thrown
                    .dyn_ref::<js_sys::Error>()
                    .map_or_else(|| String::from("not JSON"), |e| String::from(e.message())),
            })
        };
        for handler in handlers {
            if let Err(error) = handler(event, json.as_ref()) {
                self.report(&error);
            }
        }
        if let Err(error) = json {
            self.report(&error);
        }
    }

    fn failed(&self, failure: Failure) {
        // The connection is finished: make its link stale and free it.
        self.generation.set(self.generation.get().wrapping_add(1));
        retire(self.connection.take());
        let decision = self
            .session
            .borrow_mut()
            .failed(failure, now_ms(), &mut jitter);
        match failure {
            Failure::Status { status: 204, .. } => {}
            Failure::Status {
                status: status @ (401 | 403),
                ..
            } => self.report(&Error::Auth { status }),
            Failure::Status { status, .. } => self.report(&Error::Http { status }),
            Failure::Network => self.report(&Error::Network),
        }
        self.act(decision);
    }

    /// `tidings.expired`: the server ends the stream next. Drop it now (no
    /// error, no probe) and ask the token hook.
    fn expired(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        retire(self.connection.take());
        let decision = self.session.borrow_mut().expired(now_ms());
        self.act(decision);
    }

    /// The hook gave no token: an expired token ends the client with an
    /// auth error (a refused one was reported when it was refused).
    fn give_up(&self) {
        let reason = self.session.borrow().auth_reason();
        let decision = self
            .session
            .borrow_mut()
            .reauthenticated(false, &mut jitter);
        if reason == Some(AuthReason::Expired) {
            self.report(&Error::Expired);
        }
        self.act(decision);
    }

    fn act(&self, decision: Decision) {
        match decision {
            Decision::Reconnect { delay_ms, .. } => {
                self.notify_state();
                let me = self.me.clone();
                let timer = Timeout::new(delay_ms, move || {
                    if let Some(inner) = me.upgrade() {
                        inner.timer_fired();
                    }
                });
                retire(self.timer.replace(Some(timer)));
            }
            Decision::Authenticate { .. } => {
                self.notify_state();
                let Some(hook) = self.config.token_hook.clone() else {
                    return self.give_up();
                };
                let me = self.me.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let token = hook().await;
                    let Some(inner) = me.upgrade() else { return };
                    if token.is_none() {
                        return inner.give_up();
                    }
                    *inner.token.borrow_mut() = token;
                    let decision = inner
                        .session
                        .borrow_mut()
                        .reauthenticated(true, &mut jitter);
                    inner.act(decision);
                });
            }
            Decision::ConnectNow => self.connect(),
            Decision::Stop => self.stop(),
        }
    }

    fn timer_fired(&self) {
        if self.session.borrow_mut().reconnect_now() {
            self.connect();
        }
    }

    /// Frees the connection, the timer and the handlers (streams end) after
    /// telling the state handlers.
    fn stop(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        retire(self.connection.take());
        retire(self.timer.take());
        self.notify_state();
        let handlers = self.handlers.borrow_mut().take_all();
        drop(handlers);
    }

    fn notify_state(&self) {
        let state = self.state();
        if self.reported_state.replace(Some(state)) == Some(state) {
            return;
        }
        let handlers = self.handlers.borrow().state_handlers();
        for handler in handlers {
            handler(state);
        }
    }

    fn report(&self, error: &Error) {
        let handlers = self.handlers.borrow().error_handlers();
        for handler in handlers {
            handler(error);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last user went away: the connection and timer go with us (their
        // destructors close the stream and clear the timeout).
        self.generation.set(self.generation.get().wrapping_add(1));
    }
}

/// Decodes an event's parsed JSON data as `T`.
pub(super) fn decode<T: DeserializeOwned>(
    raw: &RawEvent,
    json: &JsValue,
) -> Result<Event<T>, Error> {
    match serde_wasm_bindgen::from_value::<T>(json.clone()) {
        Ok(data) => Ok(Event {
            id: raw.id.clone(),
            event_type: raw.event_type.clone(),
            data,
        }),
        Err(error) => Err(Error::Decode {
            event_type: raw.event_type.clone(),
            id: raw.id.clone(),
            message: error.to_string(),
        }),
    }
}
