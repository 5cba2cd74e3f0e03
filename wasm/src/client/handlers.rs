//! The handler registry: who gets which event type, state change or error.
//!
//! Dispatch clones the matching `Rc`s out before calling them, so a handler
//! may add or remove handlers, or close the client, while it runs.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use wasm_bindgen::JsValue;

use crate::error::Error;
use crate::event::RawEvent;
use crate::reconnect::State;

/// Receives an event with its data parsed as JSON (or the parse error, which
/// the dispatcher reports once). Returns a decode error to report.
pub(crate) type EventHandler = Rc<dyn Fn(&RawEvent, Result<&JsValue, &Error>) -> Result<(), Error>>;
pub(crate) type StateHandler = Rc<dyn Fn(State)>;
pub(crate) type ErrorHandler = Rc<dyn Fn(&Error)>;

/// Identifies one registration; dropping its `Subscription` removes it.
pub(crate) type HandlerId = u32;

pub(crate) enum Handler {
    Event {
        event_type: String,
        handler: EventHandler,
    },
    State(StateHandler),
    Error(ErrorHandler),
}

#[derive(Default)]
pub(crate) struct Registry {
    next_id: HandlerId,
    entries: Vec<(HandlerId, Handler)>,
}

impl Registry {
    pub fn add(&mut self, handler: Handler) -> HandlerId {
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.push((self.next_id, handler));
        self.next_id
    }

    /// Removes a registration; returns it so the caller drops it outside the
    /// registry's borrow (its destructor may run app code).
    pub fn remove(&mut self, id: HandlerId) -> Option<Handler> {
        let index = self.entries.iter().position(|(entry, _)| *entry == id)?;
        Some(self.entries.remove(index).1)
    }

    /// Removes everything (on close): streams see their end.
    pub fn take_all(&mut self) -> Vec<(HandlerId, Handler)> {
        core::mem::take(&mut self.entries)
    }

    /// Every event type some handler listens to.
    pub fn event_types(&self) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for (_, handler) in &self.entries {
            if let Handler::Event { event_type, .. } = handler
                && !types.contains(event_type)
            {
                types.push(event_type.clone());
            }
        }
        types
    }

    pub fn event_handlers(&self, event_type: &str) -> Vec<EventHandler> {
        self.entries
            .iter()
            .filter_map(|(_, h)| match h {
                Handler::Event {
                    event_type: t,
                    handler,
                } if t == event_type => Some(handler.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn state_handlers(&self) -> Vec<StateHandler> {
        self.entries
            .iter()
            .filter_map(|(_, h)| match h {
                Handler::State(handler) => Some(handler.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn error_handlers(&self) -> Vec<ErrorHandler> {
        self.entries
            .iter()
            .filter_map(|(_, h)| match h {
                Handler::Error(handler) => Some(handler.clone()),
                _ => None,
            })
            .collect()
    }
}
