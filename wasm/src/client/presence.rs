//! `client.presence(topic)`: who is subscribed to a topic, on every
//! instance (`GET /presence`), with the client's own credentials.

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestCredentials, RequestInit, Response};

use super::Client;
use crate::error::Error;
use crate::reconnect::presence_url;
use crate::transport::global_fetch;

/// One page of a topic's presence: the streams subscribed to it exactly.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence<I = ()> {
    /// The topic asked about.
    pub topic: String,
    /// Up to the page's limit, oldest first.
    pub clients: Vec<PresenceClient<I>>,
    /// How many streams are subscribed in all (on every instance).
    pub total: u64,
    /// Give it as [`PresenceQuery::cursor`] for the next page; `None` on
    /// the last.
    pub next: Option<String>,
}

/// One stream in a [`Presence`] answer, or the data of a `tidings.join` /
/// `tidings.leave` event (which also carry `topic`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceClient<I = ()> {
    /// The stream's id (its `tidings.connected` `connectionId`).
    pub connection_id: String,
    /// What its token says about it (`tidings.info`, else `{"sub"}`), or
    /// what an anonymous client said (`presence_info`, unverified).
    pub info: I,
    /// When it subscribed, milliseconds since the Unix epoch.
    pub since: f64,
    /// True when `info` comes from a token the server checked.
    pub verified: bool,
}

/// The data of `tidings.join` and `tidings.leave` events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent<I = ()> {
    /// The topic joined or left.
    pub topic: String,
    /// Who.
    #[serde(flatten)]
    pub client: PresenceClient<I>,
}

/// Paging for [`Client::presence_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceQuery {
    /// Most clients in the answer (the server caps it).
    pub limit: Option<u32>,
    /// Where to continue: the previous answer's [`Presence::next`].
    pub cursor: Option<String>,
}

impl Client {
    /// Who is subscribed to `topic` (the first page, up to the server's
    /// default of 100), with `info` decoded as `I`.
    ///
    /// ```no_run
    /// # async fn run(client: tidings_wasm::Client) -> Result<(), tidings_wasm::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Player { name: String }
    /// let room = client.presence::<Player>("quiz:room1").await?;
    /// for player in &room.clients {
    ///     let _ = &player.info.name;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn presence<I: DeserializeOwned>(&self, topic: &str) -> Result<Presence<I>, Error> {
        self.presence_page(topic, &PresenceQuery::default()).await
    }

    /// One page of who is subscribed to `topic`.
    pub async fn presence_page<I: DeserializeOwned>(
        &self,
        topic: &str,
        query: &PresenceQuery,
    ) -> Result<Presence<I>, Error> {
        let json = self.presence_json(topic, query).await?;
        serde_wasm_bindgen::from_value(json).map_err(|e| Error::Decode {
            event_type: "presence".into(),
            id: None,
            message: e.to_string(),
        })
    }

    /// The answer as parsed JSON.
    async fn presence_json(&self, topic: &str, query: &PresenceQuery) -> Result<JsValue, Error> {
        let config = self.inner.config();
        let url = presence_url(&config.url, topic, query.limit, query.cursor.as_deref());
        let init = RequestInit::new();
        init.set_credentials(if config.with_credentials {
            RequestCredentials::Include
        } else {
            RequestCredentials::SameOrigin
        });
        init.set_cache(web_sys::RequestCache::NoStore);
        if let Ok(headers) = Headers::new() {
            for (name, value) in &config.headers {
                let _ = headers.set(name, value);
            }
            if let Some(token) = self.inner.current_token() {
                let _ = headers.set("Authorization", &["Bearer ", &token].concat());
            }
            init.set_headers(&headers);
        }
        let response: Response = JsFuture::from(global_fetch(&url, &init))
            .await
            .map_err(|_| Error::Network)?
            .dyn_into()
            .map_err(|_| Error::Network)?;
        match response.status() {
            200 => {}
            status @ (401 | 403) => return Err(Error::Auth { status }),
            status => return Err(Error::Http { status }),
        }
        let body = response.json().map_err(|_| Error::Network)?;
        JsFuture::from(body).await.map_err(|e| Error::Decode {
            event_type: "presence".into(),
            id: None,
            message: e
                .as_string()
                .unwrap_or_else(|| "the answer is not JSON".into()),
        })
    }
}
