//! The `fetch` transport: a streamed response body decoded by
//! `tidings_core::sse::Decoder`, so the app can send `Authorization` and other
//! headers and the client sees the HTTP status and the server's `retry:`.

use alloc::rc::Weak;
use alloc::string::String;
use js_sys::{Promise, Reflect, Uint8Array};
use tidings_core::sse::{Decoded, Decoder};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, Headers, ReadableStreamDefaultReader, RequestCredentials, RequestInit,
    Response,
};

use super::{ConnectRequest, Sink, retry_after_ms};
use crate::error::Error;
use crate::event::RawEvent;
use crate::reconnect::Failure;

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, in a window or a worker alike.
    #[wasm_bindgen(js_name = fetch)]
    pub(crate) fn global_fetch(input: &str, init: &RequestInit) -> Promise;
}

/// A request in flight; dropping it aborts the request and ends its reader.
pub(crate) struct FetchConnection {
    abort: Option<AbortController>,
}

impl FetchConnection {
    pub fn open(request: &ConnectRequest, sink: Weak<dyn Sink>) -> Self {
        let abort = AbortController::new().ok();
        let init = RequestInit::new();
        if let Some(abort) = &abort {
            init.set_signal(Some(&abort.signal()));
        }
        init.set_credentials(if request.with_credentials {
            RequestCredentials::Include
        } else {
            RequestCredentials::SameOrigin
        });
        init.set_cache(web_sys::RequestCache::NoStore);
        if let Ok(headers) = Headers::new() {
            let _ = headers.set("Accept", "text/event-stream");
            for (name, value) in &request.headers {
                let _ = headers.set(name, value);
            }
            init.set_headers(&headers);
        }
        let promise = global_fetch(&request.url, &init);
        wasm_bindgen_futures::spawn_local(async move {
            let failure = read_stream(promise, &sink).await;
            if let Some(sink) = sink.upgrade() {
                sink.failed(failure);
            }
        });
        Self { abort }
    }
}

impl Drop for FetchConnection {
    fn drop(&mut self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }
}

/// Reads the response until it fails or ends; returns why it stopped. Stops
/// early, quietly, once the sink is gone (the connection was dropped).
async fn read_stream(promise: Promise, sink: &Weak<dyn Sink>) -> Failure {
    let response: Response = match JsFuture::from(promise).await {
        Ok(response) => response.unchecked_into(),
        Err(_) => return Failure::Network,
    };
    let status = response.status();
    if status != 200 {
        return Failure::Status {
            status,
            retry_after_ms: retry_after_ms(&response.headers()),
        };
    }
    let Some(body) = response.body() else {
        return Failure::Network;
    };
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    match sink.upgrade() {
        Some(sink) => sink.opened(),
        None => return Failure::Network,
    }
    let mut decoder = Decoder::default();
    loop {
        let Ok(chunk) = JsFuture::from(reader.read()).await else {
            return Failure::Network;
        };
        let done = Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            return Failure::Network;
        }
        let Ok(value) = Reflect::get(&chunk, &"value".into()) else {
            return Failure::Network;
        };
        let bytes = Uint8Array::new(&value).to_vec();
        let Some(sink) = sink.upgrade() else {
            let _ = reader.cancel();
            return Failure::Network;
        };
        for item in decoder.feed(&bytes) {
            match item {
                Ok(Decoded::Event(event)) => sink.event(RawEvent {
                    id: (!event.last_event_id.is_empty()).then_some(event.last_event_id),
                    event_type: event.event_type,
                    data: event.data,
                }),
                Ok(Decoded::Retry(ms)) => sink.retry(u32::try_from(ms).unwrap_or(u32::MAX)),
                Ok(_) => {}
                // Over the decoder's line or event size limit: that event is
                // skipped. (A fixed message keeps integer formatting out of
                // the bundle.)
                Err(_) => sink.error(Error::Decode {
                    event_type: String::new(),
                    id: None,
                    message: "a line or event over the size limit was skipped".into(),
                }),
            }
        }
    }
}
