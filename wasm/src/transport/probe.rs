//! Learns why an `EventSource` failed. The browser hides the HTTP status (and
//! gives up for good after an HTTP error), so after an `error` event the
//! client asks the same URL once with `fetch` and aborts as soon as the
//! headers arrive: a 401 becomes an auth error, a 503 its `Retry-After`, a
//! refused connection a network error.

use alloc::rc::Weak;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, RequestCredentials, RequestInit, Response};

use super::{ConnectRequest, Sink, retry_after_ms};
use crate::reconnect::Failure;

/// A probe in flight; dropping it aborts the request.
pub(crate) struct Probe {
    abort: AbortController,
}

impl Probe {
    pub fn start(request: &ConnectRequest, sink: Weak<dyn Sink>) -> Option<Self> {
        let abort = AbortController::new().ok()?;
        let init = RequestInit::new();
        init.set_signal(Some(&abort.signal()));
        init.set_credentials(if request.with_credentials {
            RequestCredentials::Include
        } else {
            RequestCredentials::SameOrigin
        });
        let promise = super::fetch::global_fetch(&request.url, &init);
        let controller = abort.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let failure = match JsFuture::from(promise).await {
                Ok(response) => {
                    let response: Response = response.unchecked_into();
                    // Only the status line matters; free the connection now.
                    controller.abort();
                    match response.status() {
                        // The server is back: a transient break.
                        200 => Failure::Network,
                        status => Failure::Status {
                            status,
                            retry_after_ms: retry_after_ms(&response.headers()),
                        },
                    }
                }
                Err(_) => Failure::Network,
            };
            // A dropped probe's sink is gone too: nothing stale is reported.
            if let Some(sink) = sink.upgrade() {
                sink.failed(failure);
            }
        });
        Some(Self { abort })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.abort.abort();
    }
}
