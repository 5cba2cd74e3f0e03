//! The JavaScript API, wrapped by the `tidings` npm package (`web/src`),
//! which adds `connect()`, unsubscribe functions, async iterators and the
//! TypeScript types.

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::client::{Client, ClientBuilder, Subscription};
use crate::error::Error;
use crate::reconnect::State;
use crate::transport::Transport;

/// What a JS handler was registered for.
#[derive(PartialEq)]
enum Kind {
    Event(String),
    State,
    Error,
}

struct JsHandler {
    kind: Kind,
    function: Function,
    _subscription: Subscription,
}

/// A Tidings client for JavaScript. Use the npm package's `connect()`.
#[wasm_bindgen(js_name = TidingsClient)]
pub struct JsClient {
    client: Client,
    handlers: RefCell<Vec<JsHandler>>,
}

#[wasm_bindgen(js_class = TidingsClient)]
impl JsClient {
    /// Connects to `url` with options `{topics, transport, headers, token,
    /// getToken, withCredentials, initialDelay, maxDelay, resetAfter,
    /// lastEventId, presence, presenceInfo}`.
    #[wasm_bindgen(constructor)]
    pub fn new(url: String, options: JsValue) -> Result<JsClient, JsValue> {
        let client = builder(url, &options)?
            .connect()
            .map_err(|e| to_js_error(&e))?;
        Ok(Self {
            client,
            handlers: RefCell::new(Vec::new()),
        })
    }

    /// Calls `handler(data, {id, type})` for each event of `type`.
    pub fn on(&self, event_type: String, handler: Function) {
        let function = handler.clone();
        let name = event_type.clone();
        let subscription = self.client.on_raw(&event_type, move |raw, data| {
            let meta = Object::new();
            set(
                &meta,
                "id",
                &raw.id.as_deref().map_or(JsValue::NULL, JsValue::from_str),
            );
            set(&meta, "type", &JsValue::from_str(&raw.event_type));
            function
                .call2(&JsValue::UNDEFINED, data, &meta)
                .map(|_| ())
                .map_err(|thrown| Error::Handler {
                    event_type: name.clone(),
                    message: describe(&thrown),
                })
        });
        self.push(Kind::Event(event_type), handler, subscription);
    }

    /// Removes `handler` from `type` (every handler of `type` without one).
    pub fn off(&self, event_type: String, handler: Option<Function>) {
        self.remove(&Kind::Event(event_type), handler.as_ref());
    }

    /// Calls `handler({kind, attempt?, delayMs?})` on every state change.
    #[wasm_bindgen(js_name = onState)]
    pub fn on_state(&self, handler: Function) {
        let function = handler.clone();
        let subscription = self.client.on_state(move |state| {
            let _ = function.call1(&JsValue::UNDEFINED, &state_to_js(state));
        });
        self.push(Kind::State, handler, subscription);
    }

    /// Removes a state handler.
    #[wasm_bindgen(js_name = offState)]
    pub fn off_state(&self, handler: Function) {
        self.remove(&Kind::State, Some(&handler));
    }

    /// Calls `handler(error)` for every error; `error.kind` is `http`,
    /// `auth`, `network`, `decode`, `handler` or `config`, `error.status`
    /// the HTTP status when there is one.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&self, handler: Function) {
        let function = handler.clone();
        let subscription = self.client.on_error(move |error| {
            let _ = function.call1(&JsValue::UNDEFINED, &to_js_error(error));
        });
        self.push(Kind::Error, handler, subscription);
    }

    /// Removes an error handler.
    #[wasm_bindgen(js_name = offError)]
    pub fn off_error(&self, handler: Function) {
        self.remove(&Kind::Error, Some(&handler));
    }

    /// The connection state: `{kind, attempt?, delayMs?}`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> JsValue {
        state_to_js(self.client.state())
    }

    /// The token in use now (the configured one, or `getToken`'s latest),
    /// for requests the package makes beside the stream (`presence()`).
    #[wasm_bindgen(getter)]
    pub fn token(&self) -> Option<String> {
        self.client.current_token()
    }

    /// The id the client resumes after.
    #[wasm_bindgen(getter, js_name = lastEventId)]
    pub fn last_event_id(&self) -> Option<String> {
        self.client.last_event_id()
    }

    /// Closes for good and frees every handler.
    pub fn close(&self) {
        self.client.close();
        let handlers = core::mem::take(&mut *self.handlers.borrow_mut());
        drop(handlers);
    }
}

impl JsClient {
    fn push(&self, kind: Kind, function: Function, subscription: Subscription) {
        self.handlers.borrow_mut().push(JsHandler {
            kind,
            function,
            _subscription: subscription,
        });
    }

    fn remove(&self, kind: &Kind, function: Option<&Function>) {
        let mut removed = Vec::new();
        self.handlers.borrow_mut().retain_mut(|handler| {
            let matches =
                handler.kind == *kind && function.is_none_or(|f| Object::is(f, &handler.function));
            if matches {
                removed.push(handler.function.clone());
            }
            !matches
        });
        // Dropping the subscriptions happened in `retain_mut`; nothing else.
        drop(removed);
    }
}

fn builder(url: String, options: &JsValue) -> Result<ClientBuilder, JsValue> {
    let mut builder = Client::builder(url);
    let get =
        |name: &str| Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    let config_error = |message: &str| to_js_error(&Error::Config(message.into()));
    let topics = get("topics");
    if let Some(topic) = topics.as_string() {
        builder = builder.topic(topic);
    } else if Array::is_array(&topics) {
        for topic in Array::from(&topics).iter() {
            builder = builder.topic(
                topic
                    .as_string()
                    .ok_or_else(|| config_error("topics must be strings"))?,
            );
        }
    }
    match get("transport").as_string().as_deref() {
        None | Some("eventsource") => {}
        Some("fetch") => builder = builder.transport(Transport::Fetch),
        Some(other) => {
            return Err(config_error(
                &[
                    "unknown transport `",
                    other,
                    "`: use `eventsource` or `fetch`",
                ]
                .concat(),
            ));
        }
    }
    let headers = get("headers");
    if headers.is_object() {
        for entry in Object::entries(headers.unchecked_ref()).iter() {
            let pair = Array::from(&entry);
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                builder = builder.header(name, value);
            }
        }
    }
    if let Some(token) = get("token").as_string() {
        builder = builder.token(token);
    }
    if let Some(with_credentials) = get("withCredentials").as_bool() {
        builder = builder.with_credentials(with_credentials);
    }
    if let Some(id) = get("lastEventId").as_string() {
        builder = builder.last_event_id(id);
    }
    if let Some(presence) = get("presence").as_bool() {
        builder = builder.presence(presence);
    }
    let info = get("presenceInfo");
    if let Some(text) = info.as_string() {
        builder = builder.presence_info(text);
    } else if info.is_object() {
        if let Some(text) = js_sys::JSON::stringify(&info)
            .ok()
            .and_then(|t| t.as_string())
        {
            builder = builder.presence_info(text);
        }
    }
    let ms = |name: &str| {
        get(name)
            .as_f64()
            .map(|ms| ms.clamp(0.0, f64::from(u32::MAX)) as u32)
    };
    let (initial, max) = (ms("initialDelay"), ms("maxDelay"));
    if initial.is_some() || max.is_some() {
        builder = builder.backoff_ms(initial.unwrap_or(1_000), max.unwrap_or(30_000));
    }
    if let Some(reset) = ms("resetAfter") {
        builder = builder.reset_backoff_after_ms(reset);
    }
    if let Ok(hook) = get("getToken").dyn_into::<Function>() {
        let hook = Rc::new(hook);
        builder = builder.token_hook(move || {
            let hook = hook.clone();
            async move { call_token_hook(&hook).await }
        });
    }
    Ok(builder)
}

/// Calls `getToken()`, awaiting it if it returns a promise; a throw, a
/// rejection or a non-string means "no token".
async fn call_token_hook(hook: &Function) -> Option<String> {
    let value = hook.call0(&JsValue::UNDEFINED).ok()?;
    let value = match value.dyn_into::<Promise>() {
        Ok(promise) => JsFuture::from(promise).await.ok()?,
        Err(value) => value,
    };
    value.as_string()
}

fn set(object: &Object, name: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(name), value);
}

fn state_to_js(state: State) -> JsValue {
    let object = Object::new();
    let kind = match state {
        State::Connecting { attempt } => {
            set(&object, "attempt", &attempt.into());
            "connecting"
        }
        State::Open => "open",
        State::Reconnecting { attempt, delay_ms } => {
            set(&object, "attempt", &attempt.into());
            set(&object, "delayMs", &delay_ms.into());
            "reconnecting"
        }
        State::Authenticating => "authenticating",
        _ => "closed",
    };
    set(&object, "kind", &JsValue::from_str(kind));
    object.into()
}

fn to_js_error(error: &Error) -> JsValue {
    let object = js_sys::Error::new(&error.to_string());
    let kind = match error {
        Error::Http { .. } => "http",
        Error::Auth { .. } | Error::Expired => "auth",
        Error::Network => "network",
        Error::Decode { .. } => "decode",
        Error::Handler { .. } => "handler",
        Error::Config(_) => "config",
    };
    set(&object, "kind", &JsValue::from_str(kind));
    if let Some(status) = error.status() {
        set(&object, "status", &status.into());
    }
    if let Error::Decode { event_type, .. } | Error::Handler { event_type, .. } = error {
        set(&object, "eventType", &JsValue::from_str(event_type));
    }
    if let Error::Decode { id: Some(id), .. } = error {
        set(&object, "id", &JsValue::from_str(id));
    }
    object.into()
}

fn describe(thrown: &JsValue) -> String {
    if let Some(error) = thrown.dyn_ref::<js_sys::Error>() {
        return error.message().into();
    }
    thrown
        .as_string()
        .unwrap_or_else(|| String::from("a non-Error value"))
}
