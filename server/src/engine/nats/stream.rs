//! The deployment's JetStream stream: opening it (created or checked),
//! publishing to it, reading from it.

use std::time::Duration;

use async_nats::{
    Client, ConnectOptions, ServerAddr,
    jetstream::{
        self,
        context::PublishErrorKind,
        message::PublishMessage,
        stream::{
            Config, DirectGetErrorKind, DiscardPolicy, Republish, RetentionPolicy, StorageType,
        },
    },
};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use tidings_core::topic::{Pattern, Topic};
use tokio::sync::mpsc;

use super::{
    NatsAuth, NatsSettings, NatsStartError, Publication, StreamEntry, Subjects,
    entry::{from_stored, headers},
};

/// The acknowledgement of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its stream sequence (the original one for a duplicate).
    pub seq: u64,
    /// The idempotency key was seen within the window: nothing new was
    /// stored.
    pub duplicate: bool,
}

/// Where the stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// Oldest sequence kept (0 when empty).
    pub first_seq: u64,
    /// Newest sequence stored (0 when nothing was ever stored).
    pub last_seq: u64,
    /// The stream's leader, if it has one.
    pub leader: Option<String>,
    /// Replicas (leader included) and how many of them are current.
    pub replicas: usize,
    /// Replicas current with the leader (the leader counts).
    pub current: usize,
    /// The stream's creation time (ns since the Unix epoch): its epoch.
    pub created_ns: u64,
}

impl StreamHead {
    /// A leader and a majority of current replicas: publishes can be
    /// acknowledged.
    pub fn has_quorum(&self) -> bool {
        self.leader.is_some() && self.current * 2 > self.replicas
    }
}

/// What [`Stream::replay`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// In stream order, each once.
    pub entries: Vec<StreamEntry>,
    /// The limit cut the list: more messages match.
    pub truncated: bool,
}

/// A publish the stream did not acknowledge (answered with 503).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsPublishError {
    /// No stream leader took the message (no quorum, leader election, or
    /// the stream is gone): nothing was stored from `failed_at` on.
    #[error(
        "the message engine (NATS JetStream) is unavailable: {reason}; nothing was published from message {failed_at} on, retry later"
    )]
    NotTaken {
        /// Index in the batch of the first message not stored.
        failed_at: usize,
        /// Sequences of the messages before it, which were stored.
        stored: Vec<Published>,
        /// Why.
        reason: String,
    },
    /// No acknowledgement in time: the message may have been stored.
    #[error(
        "the message engine (NATS JetStream) did not acknowledge message {failed_at} in time ({reason}); it may have been taken: retry with the same Idempotency-Key"
    )]
    MaybeTaken {
        /// Index in the batch of the first message not acknowledged.
        failed_at: usize,
        /// Sequences of the messages before it, which were stored.
        stored: Vec<Published>,
        /// Why.
        reason: String,
    },
}

/// What the connection reports that may have cost live messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The connection to NATS was lost.
    Disconnected,
    /// Connected again (subscriptions are restored by the client; what was
    /// republished meanwhile is lost to them).
    Reconnected,
    /// The client dropped messages for a subscription whose reader fell
    /// behind.
    Lagged,
}

/// The deployment's stream, opened. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Stream {
    client: Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    subjects: Subjects,
    name: String,
    epoch: u64,
}

impl Stream {
    /// Connects, checks that JetStream is on, and creates the stream or
    /// checks that the existing one fits `settings`.
    pub async fn open(settings: &NatsSettings) -> Result<Self, NatsStartError> {
        let subjects = Subjects::new(&settings.subject_prefix)?;
        let client = connect(settings, ConnectOptions::new()).await?;
        Self::open_with(client, settings, subjects).await
    }

    /// Like [`open`](Self::open), with the connection's
    /// [`ConnectionEvent`]s on the returned receiver.
    pub async fn open_with_events(
        settings: &NatsSettings,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ConnectionEvent>), NatsStartError> {
        let subjects = Subjects::new(&settings.subject_prefix)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let options = ConnectOptions::new().event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let event = match event {
                    async_nats::Event::Disconnected => Some(ConnectionEvent::Disconnected),
                    async_nats::Event::Connected => Some(ConnectionEvent::Reconnected),
                    async_nats::Event::SlowConsumer(_) => Some(ConnectionEvent::Lagged),
                    _ => None,
                };
                if let Some(event) = event {
                    let _ = tx.send(event);
                }
            }
        });
        let client = connect(settings, options).await?;
        Ok((Self::open_with(client, settings, subjects).await?, rx))
    }

    /// Like [`open`](Self::open) on a client already connected.
    pub async fn open_with(
        client: Client,
        settings: &NatsSettings,
        subjects: Subjects,
    ) -> Result<Self, NatsStartError> {
        let urls = shown_urls(settings);
        check_jetstream(&client, &urls).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(settings.publish_timeout);
        let failed = |reason: String| NatsStartError::Stream {
            stream: settings.stream.clone(),
            reason,
        };
        let mut stream = match js.get_stream(&settings.stream).await {
            Ok(stream) => {
                check_config(&stream.cached_info().config, settings, &subjects)?;
                stream
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref api)
                        if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                let replicas = settings
                    .replicas
                    .unwrap_or_else(|| default_replicas(&client));
                let config = wanted_config(settings, &subjects, replicas);
                match js.create_stream(config).await {
                    Ok(stream) => {
                        tracing::info!(
                            stream = %settings.stream,
                            replicas,
                            subjects = %subjects.stored_all(),
                            "created the JetStream stream"
                        );
                        stream
                    }
                    Err(e) => {
                        // Another instance may have created it meanwhile.
                        match js.get_stream(&settings.stream).await {
                            Ok(stream) => {
                                check_config(&stream.cached_info().config, settings, &subjects)?;
                                stream
                            }
                            Err(_) => return Err(failed(e.to_string())),
                        }
                    }
                }
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        let info = stream.info().await.map_err(|e| failed(e.to_string()))?;
        // The creation time in ns since the Unix epoch.
        let epoch = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
        Ok(Self {
            client,
            js,
            name: settings.stream.clone(),
            stream,
            subjects,
            epoch,
        })
    }

    /// The stream's incarnation: its creation time in ns. A stream deleted
    /// and created again (sequences restart at 1) has another one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The subject mapping.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NATS client (for live subscriptions).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes `batch` in order and waits for every acknowledgement.
    /// All messages are sent before the first acknowledgement is awaited,
    /// so a batch costs one round trip, but it is not atomic: see
    /// [`NatsPublishError`] for what a failure leaves stored.
    pub async fn publish(
        &self,
        batch: &[Publication],
        accepted_us: u64,
    ) -> Result<Vec<Published>, NatsPublishError> {
        let mut pending = Vec::with_capacity(batch.len());
        let mut stored = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            let publish = PublishMessage::build()
                .payload(Bytes::copy_from_slice(message.data.as_bytes()))
                .headers(headers(message, accepted_us));
            match self
                .js
                .send_publish(self.subjects.stored(&message.topic), publish)
                .await
            {
                Ok(ack) => pending.push(ack),
                Err(e) => {
                    // Sent messages may still be acknowledged: wait for
                    // them so the answer says what was stored.
                    for ack in pending {
                        match ack.await {
                            Ok(ack) => stored.push(Published {
                                seq: ack.sequence,
                                duplicate: ack.duplicate,
                            }),
                            Err(_) => break,
                        }
                    }
                    return Err(publish_error(
                        e.kind(),
                        e.to_string(),
                        stored.len().min(i),
                        stored,
                    ));
                }
            }
        }
        for (i, ack) in pending.into_iter().enumerate() {
            match ack.await {
                Ok(ack) => stored.push(Published {
                    seq: ack.sequence,
                    duplicate: ack.duplicate,
                }),
                Err(e) => return Err(publish_error(e.kind(), e.to_string(), i, stored)),
            }
        }
        Ok(stored)
    }

    /// The first stored message at or after `from_seq` on a subject
    /// `filter` matches (a stored subject or a wildcard filter from
    /// [`Subjects::stored_filter`]); `None` when there is none. Served by
    /// any replica, so it answers without quorum too.
    pub async fn next_matching(
        &self,
        filter: &str,
        from_seq: u64,
    ) -> Result<Option<StreamEntry>, String> {
        let mut from = from_seq.max(1);
        loop {
            match self
                .stream
                .direct_get_next_for_subject(filter, Some(from))
                .await
            {
                Ok(msg) => {
                    if let Some(entry) = from_stored(
                        &self.subjects,
                        &msg.subject,
                        msg.sequence,
                        &msg.headers,
                        msg.payload,
                    ) {
                        return Ok(Some(entry));
                    }
                    // Not a topic of ours (written by someone else): skip.
                    from = msg.sequence + 1;
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The topics with messages in the stream that `pattern` matches (one
    /// stream info with a subjects filter, paged by the client), at most
    /// `limit`: `None` when there are more.
    pub async fn topics_matching(
        &self,
        pattern: &Pattern,
        limit: usize,
    ) -> Result<Option<Vec<Topic>>, String> {
        let filter = self.subjects.stored_filter(pattern);
        let mut listed = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| e.to_string())?;
        let mut topics = Vec::new();
        while let Some((subject, _count)) = listed.try_next().await.map_err(|e| e.to_string())? {
            if topics.len() == limit {
                return Ok(None);
            }
            // Subjects that are not topics of ours are someone else's.
            if let Some(topic) = self.subjects.topic_of_stored(&subject) {
                topics.push(topic);
            }
        }
        Ok(Some(topics))
    }

    /// Every stored message a pattern of `patterns` matches with a sequence
    /// in `after + 1 ..= up_to`, in stream order, each once (patterns may
    /// overlap), at most `limit` of them; `truncated` when the limit cut the
    /// list. For resumes (from the resume id to the head read once the live
    /// subscription is in place) and for rescans after a reconnect or a
    /// leader change. One direct get per message and per pattern at the end.
    pub async fn replay(
        &self,
        patterns: &[Pattern],
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Replay, String> {
        let mut entries: Vec<StreamEntry> = Vec::new();
        let mut truncated = false;
        for pattern in super::minimal_cover(patterns) {
            let filter = self.subjects.stored_filter(&pattern);
            let mut from = after.saturating_add(1);
            let mut taken = 0;
            while from <= up_to {
                let Some(entry) = self.next_matching(&filter, from).await? else {
                    break;
                };
                if entry.seq > up_to {
                    break;
                }
                if taken == limit {
                    truncated = true;
                    break;
                }
                from = entry.seq + 1;
                taken += 1;
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        if entries.len() > limit {
            entries.truncate(limit);
            truncated = true;
        }
        Ok(Replay { entries, truncated })
    }

    /// The stream's first and last sequence, leader and replicas.
    pub async fn head(&self) -> Result<StreamHead, String> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| e.to_string())?;
        let (leader, replicas, current) = match &info.cluster {
            Some(cluster) => {
                let leader = cluster.leader.clone().filter(|l| !l.is_empty());
                let followers_current = cluster
                    .replicas
                    .iter()
                    .filter(|p| p.current && !p.offline)
                    .count();
                let current = followers_current + usize::from(leader.is_some());
                (leader, cluster.replicas.len() + 1, current)
            }
            // A single server without clustering: it is the leader.
            None => (Some(String::new()), 1, 1),
        };
        Ok(StreamHead {
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            leader,
            replicas,
            current,
            created_ns: u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0),
        })
    }
}

fn publish_error(
    kind: PublishErrorKind,
    reason: String,
    failed_at: usize,
    stored: Vec<Published>,
) -> NatsPublishError {
    match kind {
        // "no responders": no stream leader listens; nothing stored.
        PublishErrorKind::StreamNotFound => NatsPublishError::NotTaken {
            failed_at,
            stored,
            reason: "no stream leader answered (quorum lost, leader election, or the stream was deleted)"
                .into(),
        },
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            NatsPublishError::NotTaken {
                failed_at,
                stored,
                reason,
            }
        }
        _ => NatsPublishError::MaybeTaken {
            failed_at,
            stored,
            reason,
        },
    }
}

/// The URLs without credentials, for messages.
fn shown_urls(settings: &NatsSettings) -> String {
    settings
        .urls
        .iter()
        .map(|u| match u.split_once('@') {
            Some((scheme_and_creds, host)) => match scheme_and_creds.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://{host}"),
                None => host.to_owned(),
            },
            None => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects with `settings`' credentials and TLS.
pub(super) async fn connect(
    settings: &NatsSettings,
    options: ConnectOptions,
) -> Result<Client, NatsStartError> {
    let urls = shown_urls(settings);
    if settings.urls.is_empty() {
        return Err(NatsStartError::BadUrl("no URL given".into()));
    }
    let addrs = settings
        .urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| NatsStartError::BadUrl(format!("`{u}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = options
        .name("tidings-server")
        .connection_timeout(Duration::from_secs(2))
        .require_tls(settings.tls.require);
    if let Some(ca) = &settings.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &settings.tls.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options = match &settings.auth {
        NatsAuth::None => options,
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredentialsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| NatsStartError::Credentials {
                    path: path.clone(),
                    source,
                })?
        }
    };
    options
        .connect(addrs)
        .await
        .map_err(|e| NatsStartError::Unreachable {
            urls,
            reason: e.to_string(),
        })
}

/// `$JS.API.INFO` answers when JetStream is on. (async-nats 0.46's
/// `query_account` cannot parse 2.9's reply, so only the error is read.)
async fn check_jetstream(client: &Client, urls: &str) -> Result<(), NatsStartError> {
    let no_js = |reason: String| NatsStartError::NoJetStream {
        urls: urls.to_owned(),
        reason,
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("$JS.API.INFO", Bytes::new()),
    )
    .await
    .map_err(|_| no_js("no answer to $JS.API.INFO within 5 s".into()))?
    .map_err(|e| no_js(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| no_js(format!("unreadable $JS.API.INFO reply: {e}")))?;
    if let Some(error) = value.get("error") {
        return Err(no_js(error.to_string()));
    }
    Ok(())
}

/// 3 when the cluster has 3 or more servers (as the server announces its
/// peers' client URLs), else 1.
fn default_replicas(client: &Client) -> usize {
    let info = client.server_info();
    let mut servers: Vec<&String> = info.connect_urls.iter().collect();
    servers.sort();
    servers.dedup();
    if servers.len() >= 3 { 3 } else { 1 }
}

/// The stream this instance would create.
fn wanted_config(settings: &NatsSettings, subjects: &Subjects, replicas: usize) -> Config {
    Config {
        name: settings.stream.clone(),
        description: Some("Tidings messages (SSE pub/sub)".into()),
        subjects: vec![subjects.stored_all()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        max_age: settings.max_age.unwrap_or_default(),
        max_bytes: settings.max_bytes.unwrap_or(-1),
        duplicate_window: settings.duplicate_window,
        allow_direct: true,
        republish: Some(republish(subjects)),
        ..Default::default()
    }
}

fn republish(subjects: &Subjects) -> Republish {
    Republish {
        source: subjects.stored_all(),
        destination: subjects.live_all(),
        headers_only: false,
    }
}

/// Every way `existing` does not fit what Tidings needs or what the flags
/// ask for; none is an error only when it fits.
pub(super) fn check_config(
    existing: &Config,
    settings: &NatsSettings,
    subjects: &Subjects,
) -> Result<(), NatsStartError> {
    let mut conflicts = Vec::new();
    if !existing.subjects.contains(&subjects.stored_all()) {
        conflicts.push(format!(
            "its subjects are {:?}, not {} (another --nats-subject-prefix?)",
            existing.subjects,
            subjects.stored_all()
        ));
    }
    if existing.republish.as_ref() != Some(&republish(subjects)) {
        conflicts.push(format!(
            "it must republish {} to {} (it has {:?})",
            subjects.stored_all(),
            subjects.live_all(),
            existing.republish
        ));
    }
    if !existing.allow_direct {
        conflicts.push("allow_direct is off".into());
    }
    if existing.retention != RetentionPolicy::Limits {
        conflicts.push(format!(
            "its retention is {:?}, not limits",
            existing.retention
        ));
    }
    if existing.duplicate_window < settings.duplicate_window {
        conflicts.push(format!(
            "its duplicate window is {:?}, shorter than the idempotency window {:?}",
            existing.duplicate_window, settings.duplicate_window
        ));
    }
    if let Some(replicas) = settings.replicas {
        if existing.num_replicas != replicas {
            conflicts.push(format!(
                "it has {} replicas, --nats-replicas says {replicas}",
                existing.num_replicas
            ));
        }
    }
    if let Some(max_age) = settings.max_age {
        if existing.max_age != max_age {
            conflicts.push(format!(
                "its max age is {:?}, --nats-max-age says {max_age:?}",
                existing.max_age
            ));
        }
    }
    if let Some(max_bytes) = settings.max_bytes {
        if existing.max_bytes != max_bytes {
            conflicts.push(format!(
                "its max bytes are {}, --nats-max-bytes says {max_bytes}",
                existing.max_bytes
            ));
        }
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(NatsStartError::Conflict {
            stream: settings.stream.clone(),
            conflicts: conflicts.join("; "),
        })
    }
}
