//! Learns why an `EventSource` failed. The browser hides the HTTP status (and
//! gives up for good after an HTTP error), so after an `error` event the
//! client asks the same URL once with `fetch` and aborts as soon as the
//! headers arrive: a 401 becomes an auth error, a 503 its `Retry-After`, a
//! refused connection a network error. When the server answers 200 again
//! (the stream broke but the server is up), the probe reads the first chunk,
//! at most for a second, to learn the server's `retry:`, which
//! `EventSource` keeps to itself.

use alloc::rc::Weak;
use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use tidings_core::sse::{Decoded, Decoder};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, ReadableStreamDefaultReader, RequestCredentials, RequestInit, Response,
};

use super::{ConnectRequest, Sink, retry_after_ms};
use crate::reconnect::Failure;

/// How long the probe waits for the first chunk of a 200 response.
const RETRY_WAIT_MS: i32 = 1_000;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

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
                    let status = response.status();
                    if status == 200
                        && let Some(ms) = first_retry(&response).await
                        && let Some(sink) = sink.upgrade()
                    {
                        sink.retry(ms);
                    }
                    // Nothing else matters; free the connection now.
                    controller.abort();
                    match status {
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

/// The `retry:` in the first chunk of the body, if it comes within
/// [`RETRY_WAIT_MS`] (Tidings sends it first, at once).
async fn first_retry(response: &Response) -> Option<u32> {
    let reader: ReadableStreamDefaultReader = response.body()?.get_reader().unchecked_into();
    let mut timer = JsValue::UNDEFINED;
    let timeout = Promise::new(&mut |resolve, _| timer = set_timeout(&resolve, RETRY_WAIT_MS));
    let first = JsFuture::from(Promise::race(&Array::of2(&reader.read(), &timeout))).await;
    clear_timeout(&timer);
    let value = Reflect::get(&first.ok()?, &"value".into()).ok()?;
    if !value.is_object() {
        return None; // The timeout won, or the body ended.
    }
    let bytes = Uint8Array::new(&value).to_vec();
    Decoder::default().feed(&bytes).find_map(|item| match item {
        Ok(Decoded::Retry(ms)) => Some(u32::try_from(ms).unwrap_or(u32::MAX)),
        _ => None,
    })
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.abort.abort();
    }
}
