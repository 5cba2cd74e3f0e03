//! Client options.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;

use super::Client;
use super::inner::{Config, Inner};
use crate::error::Error;
use crate::reconnect::BackoffConfig;
use crate::transport::Transport;

/// Returns a fresh token after a 401/403 or when the token expires on an open
/// stream (`tidings.expired`), or `None` to give up.
pub type TokenHook = Rc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<String>>>>>;

/// Configures and connects a [`Client`].
///
/// ```no_run
/// use tidings_wasm::{Client, Transport};
/// let client = Client::builder("/events")
///     .topic("chat:room:1")
///     .topic("presence:>")
///     .transport(Transport::Fetch)
///     .token("eyJ...")
///     .token_hook(|| async { Some(String::from("eyJ...fresh")) })
///     .backoff_ms(500, 20_000)
///     .connect()?;
/// # Ok::<(), tidings_wasm::Error>(())
/// ```
#[must_use = "a builder does nothing until `connect`"]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    pub(super) fn new(url: impl Into<String>) -> Self {
        Self {
            config: Config {
                url: url.into(),
                topics: Vec::new(),
                transport: Transport::default(),
                headers: Vec::new(),
                with_credentials: false,
                token: None,
                token_hook: None,
                backoff: BackoffConfig::default(),
                last_event_id: None,
                presence: false,
                presence_info: None,
            },
        }
    }

    /// Adds a topic or pattern (`order:*`, `news:>`) to the stream.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.config.topics.push(topic.into());
        self
    }

    /// Chooses the transport (default: `EventSource`).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.config.transport = transport;
        self
    }

    /// Adds a request header (fetch transport only; `EventSource` cannot).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), value.into()));
        self
    }

    /// Sends cookies cross-origin (`withCredentials` / `credentials: include`).
    pub fn with_credentials(mut self, with_credentials: bool) -> Self {
        self.config.with_credentials = with_credentials;
        self
    }

    /// A JWT: sent as `Authorization: Bearer` by the fetch transport, as the
    /// `access_token` query parameter by `EventSource`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// Asked for a fresh token after a 401/403, and when the token expires on
    /// an open stream (the client then resumes after its last id, at once
    /// after a stream that was stable); `None` stops the client.
    pub fn token_hook<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = Option<String>> + 'static,
    {
        self.config.token_hook = Some(Rc::new(move || Box::pin(hook())));
        self
    }

    /// Backoff bounds: the first retry waits up to `initial_ms`, later ones
    /// double up to `max_ms` (full jitter; the server's `retry:` is a floor).
    pub fn backoff_ms(mut self, initial_ms: u32, max_ms: u32) -> Self {
        self.config.backoff.initial_ms = initial_ms;
        self.config.backoff.max_ms = max_ms.max(initial_ms);
        self
    }

    /// A connection that stayed up this long resets the backoff.
    pub fn reset_backoff_after_ms(mut self, ms: u32) -> Self {
        self.config.backoff.reset_after_ms = ms;
        self
    }

    /// Asks for `tidings.join` / `tidings.leave` events (`presence=1`): who
    /// subscribes to or leaves this stream's topics, on every instance.
    /// Listen with `on::<PresenceEvent<I>>("tidings.join", ...)`.
    pub fn presence(mut self, on: bool) -> Self {
        self.config.presence = on;
        self
    }

    /// What presence shows about this client when it has no token: a JSON
    /// object of at most 256 bytes, e.g. `{"name":"Ann"}`. The server marks
    /// it unverified; with a token, the token's `tidings.info` is used.
    pub fn presence_info(mut self, json: impl Into<String>) -> Self {
        self.config.presence_info = Some(json.into());
        self
    }

    /// Resumes after an id kept from an earlier session.
    pub fn last_event_id(mut self, id: impl Into<String>) -> Self {
        self.config.last_event_id = Some(id.into());
        self
    }

    /// Validates the options and opens the stream.
    pub fn connect(self) -> Result<Client, Error> {
        if self.config.topics.is_empty() {
            return Err(Error::Config("add at least one topic or pattern".into()));
        }
        if self.config.url.is_empty() {
            return Err(Error::Config("the subscribe URL is empty".into()));
        }
        Ok(Client {
            inner: Inner::start(self.config),
        })
    }
}
