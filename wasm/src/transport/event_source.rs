//! The `EventSource` transport. The browser's own reconnection is switched
//! off (the source is closed on its first `error`): it would retry without
//! backoff, give up for good after an HTTP error, and keep the original URL.
//! The client reconnects itself, with `lastEventId` in a fresh URL.

use alloc::rc::Weak;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{Event, EventSource, EventSourceInit, MessageEvent};

use super::probe::Probe;
use super::{ConnectRequest, Sink};
use crate::error::Error;
use crate::event::RawEvent;
use crate::reconnect::Failure;

/// A live `EventSource` and every closure it calls.
pub(crate) struct EventSourceConnection {
    source: EventSource,
    on_open: Closure<dyn FnMut(Event)>,
    on_error: Closure<dyn FnMut(Event)>,
    on_message: Closure<dyn FnMut(MessageEvent)>,
    listened: RefCell<Vec<String>>,
    probe: alloc::rc::Rc<RefCell<Option<Probe>>>,
}

impl EventSourceConnection {
    /// Opens the source; fails only for a URL the browser cannot parse.
    pub fn open(
        request: &ConnectRequest,
        event_types: &[String],
        sink: Weak<dyn Sink>,
    ) -> Result<Self, Error> {
        let init = EventSourceInit::new();
        init.set_with_credentials(request.with_credentials);
        let source = EventSource::new_with_event_source_init_dict(&request.url, &init)
            .map_err(|_| Error::Config(["`", &request.url, "` is not a valid URL"].concat()))?;
        let probe = alloc::rc::Rc::new(RefCell::new(None));

        let open_sink = sink.clone();
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            if let Some(sink) = open_sink.upgrade() {
                sink.opened();
            }
        });
        let message_sink = sink.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
            if let Some(sink) = message_sink.upgrade() {
                let id = message.last_event_id();
                sink.event(RawEvent {
                    id: (!id.is_empty()).then_some(id),
                    event_type: message.type_(),
                    data: message.data().as_string().unwrap_or_default(),
                });
            }
        });
        let error_source = source.clone();
        let error_request = request.clone();
        let error_probe = probe.clone();
        let on_error = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            error_source.close();
            let started = {
                let mut slot = error_probe.borrow_mut();
                if slot.is_some() {
                    return; // One report per connection.
                }
                *slot = Probe::start(&error_request, sink.clone());
                slot.is_some()
            };
            if !started && let Some(sink) = sink.upgrade() {
                sink.failed(Failure::Network);
            }
        });

        let connection = Self {
            source,
            on_open,
            on_error,
            on_message,
            listened: RefCell::new(Vec::new()),
            probe,
        };
        let source = &connection.source;
        source.set_onopen(Some(connection.on_open.as_ref().unchecked_ref()));
        source.set_onerror(Some(connection.on_error.as_ref().unchecked_ref()));
        // The server's own events always: their ids are resume points.
        for builtin in [
            "message",
            "tidings.connected",
            "tidings.gap",
            "tidings.expired",
        ] {
            connection.listen(builtin);
        }
        for event_type in event_types {
            connection.listen(event_type);
        }
        Ok(connection)
    }

    /// Named events reach only listeners registered for their exact type.
    pub fn listen(&self, event_type: &str) {
        let mut listened = self.listened.borrow_mut();
        if listened.iter().any(|t| t == event_type) {
            return;
        }
        let _ = self
            .source
            .add_event_listener_with_callback(event_type, self.on_message.as_ref().unchecked_ref());
        listened.push(event_type.into());
    }
}

impl Drop for EventSourceConnection {
    fn drop(&mut self) {
        let source = &self.source;
        source.close();
        source.set_onopen(None);
        source.set_onerror(None);
        for event_type in self.listened.borrow().iter() {
            let _ = source.remove_event_listener_with_callback(
                event_type,
                self.on_message.as_ref().unchecked_ref(),
            );
        }
        // Aborts a probe in flight.
        self.probe.borrow_mut().take();
    }
}
