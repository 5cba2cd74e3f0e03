//! The Rust API: [`Client`], built by [`ClientBuilder`], with RAII
//! [`Subscription`]s and typed [`EventStream`]s.
//!
//! ```no_run
//! use serde::Deserialize;
//! use tidings_wasm::Client;
//!
//! #[derive(Deserialize)]
//! struct Status { state: String }
//!
//! let client = Client::builder("https://example.com/events")
//!     .topic("order:status:acme:*")
//!     .connect()?;
//! let _status = client.on::<Status>("status", |event| {
//!     web_sys_log(&event.data.state);
//! });
//! # fn web_sys_log(_: &str) {}
//! # Ok::<(), tidings_wasm::Error>(())
//! ```

mod builder;
mod handlers;
mod inner;
mod presence;
mod stream;

use alloc::rc::Rc;
use serde::de::DeserializeOwned;

pub use builder::{ClientBuilder, TokenHook};
pub use presence::{Presence, PresenceClient, PresenceEvent, PresenceQuery};
pub use stream::EventStream;

use crate::error::Error;
use crate::event::Event;
use crate::reconnect::State;
use handlers::{Handler, HandlerId};
use inner::Inner;

/// A connection to one Tidings stream carrying several topics and patterns.
///
/// Cloning is cheap and shares the connection; the connection closes when the
/// last `Client` clone, [`Subscription`] and [`EventStream`] is dropped, or at
/// once with [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

/// Keeps a handler registered; dropping it unsubscribes the handler.
#[must_use = "dropping a Subscription unsubscribes its handler at once"]
pub struct Subscription {
    inner: Rc<Inner>,
    id: HandlerId,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.remove_handler(self.id);
    }
}

impl Client {
    /// Starts configuring a client for the subscribe URL (`.../events`).
    pub fn builder(url: impl Into<alloc::string::String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Calls `handler` for each event of type `event_type` whose data decodes
    /// as `T`; data that does not goes to the error handlers instead.
    pub fn on<T: DeserializeOwned + 'static>(
        &self,
        event_type: &str,
        handler: impl FnMut(Event<T>) + 'static,
    ) -> Subscription {
        let handler = core::cell::RefCell::new(handler);
        self.subscribe(Handler::Event {
            event_type: event_type.into(),
            handler: Rc::new(move |raw, json| {
                let Ok(json) = json else { return Ok(()) };
                let event = inner::decode::<T>(raw, json)?;
                if let Ok(mut handler) = handler.try_borrow_mut() {
                    handler(event);
                }
                Ok(())
            }),
        })
    }

    /// Events of type `event_type` as a stream; decoding errors are items
    /// too (and reach the error handlers), and the stream goes on. It ends
    /// when the client closes. Dropping it unsubscribes.
    pub fn stream<T: DeserializeOwned + 'static>(&self, event_type: &str) -> EventStream<T> {
        let (sender, receiver) = futures_channel::mpsc::unbounded();
        let subscription = self.subscribe(Handler::Event {
            event_type: event_type.into(),
            handler: Rc::new(move |raw, json| {
                let item = match json {
                    Ok(json) => inner::decode::<T>(raw, json),
                    Err(error) => Err(error.clone()),
                };
                let result = item.as_ref().map(|_| ()).map_err(Clone::clone);
                let _ = sender.unbounded_send(item);
                // A JSON error is reported once by the dispatcher.
                if json.is_ok() { result } else { Ok(()) }
            }),
        });
        EventStream::new(subscription, receiver)
    }

    /// Calls `handler` with the parsed JSON data, undecoded (the JS API).
    pub(crate) fn on_raw(
        &self,
        event_type: &str,
        handler: impl Fn(&crate::event::RawEvent, &wasm_bindgen::JsValue) -> Result<(), Error> + 'static,
    ) -> Subscription {
        self.subscribe(Handler::Event {
            event_type: event_type.into(),
            handler: Rc::new(move |raw, json| match json {
                Ok(json) => handler(raw, json),
                Err(_) => Ok(()),
            }),
        })
    }

    /// Calls `handler` on every state change.
    pub fn on_state(&self, handler: impl Fn(State) + 'static) -> Subscription {
        self.subscribe(Handler::State(Rc::new(handler)))
    }

    /// Calls `handler` for every error: HTTP statuses, auth and network
    /// errors, data that did not decode.
    pub fn on_error(&self, handler: impl Fn(&Error) + 'static) -> Subscription {
        self.subscribe(Handler::Error(Rc::new(handler)))
    }

    /// Calls `handler` when the server reports `tidings.gap`: events were
    /// lost (the resume point left the server's history); reload your state.
    pub fn on_gap(&self, handler: impl Fn() + 'static) -> Subscription {
        self.subscribe(Handler::Event {
            event_type: inner::GAP_EVENT.into(),
            handler: Rc::new(move |_, _| {
                handler();
                Ok(())
            }),
        })
    }

    /// The connection state now.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// The token in use now: the configured one, or the token hook's latest.
    pub fn current_token(&self) -> Option<alloc::string::String> {
        self.inner.current_token()
    }

    /// The id the client resumes after (keep it to resume after a reload).
    pub fn last_event_id(&self) -> Option<alloc::string::String> {
        self.inner.last_event_id()
    }

    /// Closes the connection for good: no event, timer, listener or closure
    /// is left; streams end.
    pub fn close(&self) {
        self.inner.close();
    }

    fn subscribe(&self, handler: Handler) -> Subscription {
        let id = self.inner.add_handler(handler);
        Subscription {
            inner: self.inner.clone(),
            id,
        }
    }
}
