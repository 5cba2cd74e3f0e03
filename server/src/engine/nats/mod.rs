//! NATS JetStream mode: many instances share messages and history through
//! one replicated JetStream stream. See `docs/nats.md` for the design and
//! the facts about NATS 2.9 it rests on.
//!
//! This module holds the NATS-specific parts, each handing over plain
//! [`StreamEntry`] values (topic, stream sequence, previous sequence on the
//! same subject, headers, data) so that the engine driver over the core log
//! follower stays thin:
//!
//! - [`NatsSettings`] and [`Stream::open`]: connect, check JetStream,
//!   create or check the stream (it republishes every stored message for
//!   the live fan-out), and say clearly what is wrong.
//! - [`Subjects`]: topics and patterns as subjects, and back.
//! - [`Stream::publish`]: JetStream publish with acknowledgement,
//!   `Nats-Msg-Id` from the idempotency key.
//! - [`minimal_cover`]: which republished subjects this instance holds
//!   core subscriptions on (by interest); the follower owns them, with
//!   [`ConnectionEvent`]s saying when live messages may have been missed
//!   and a periodic probe of the head for losses nothing else shows.
//! - [`Stream::next_matching`] and [`Stream::head`]: replay and chain repair
//!   with direct gets; the head also tells whether the stream has quorum.

mod args;
mod engine;
mod entry;
mod follow;
mod health;
mod kv;
mod live;
mod presence;
mod stream;
mod subject;

pub use args::{NatsArgs, NatsArgsError};
pub use engine::NatsEngine;
pub use entry::{Publication, StreamEntry};
pub use health::{NatsHealth, run_probe};
pub use kv::open_bucket;
pub use live::minimal_cover;
pub use presence::NatsPresence;
pub use stream::{ConnectionEvent, NatsPublishError, Published, Replay, Stream, StreamHead};
pub use subject::{BadPrefix, Subjects};

use std::{path::PathBuf, time::Duration};

/// Default stream name.
pub const DEFAULT_STREAM: &str = "TIDINGS";
/// Default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "tidings";
/// Default dedupe window of the stream (the idempotency window).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the server authenticates to NATS (as async-nats offers it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (JWT + nkey seed).
    CredentialsFile(PathBuf),
    /// A token.
    Token(String),
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// TLS towards NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Require TLS even if the server does not ask for it.
    pub require: bool,
    /// Extra root certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// NATS mode settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:port`, `tls://...`); any one reachable is
    /// enough, the client learns the rest of the cluster.
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS.
    pub tls: NatsTls,
    /// Name of the JetStream stream; instances that share it form one
    /// deployment.
    pub stream: String,
    /// Prefix of every subject of the deployment.
    pub subject_prefix: String,
    /// Replicas of a stream this instance creates; `None`: 3 when the
    /// cluster has 3 or more servers, else 1. When given, an existing
    /// stream with another value is a conflict.
    pub replicas: Option<usize>,
    /// Messages older than this are removed (`None`: no age limit, or the
    /// existing stream's).
    pub max_age: Option<Duration>,
    /// The stream keeps at most this many bytes (`None`: no limit, or the
    /// existing stream's).
    pub max_bytes: Option<i64>,
    /// Dedupe window for idempotency keys.
    pub duplicate_window: Duration,
    /// How long a publish waits for its acknowledgement.
    pub publish_timeout: Duration,
}

impl NatsSettings {
    /// Defaults for `urls` (comma-separated, as `--nats` takes them).
    pub fn new(urls: &str) -> Self {
        Self {
            urls: urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            stream: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            replicas: None,
            max_age: None,
            max_bytes: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            publish_timeout: Duration::from_secs(3),
        }
    }
}

/// Why NATS mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsStartError {
    /// No URL, or one that is not a NATS URL.
    #[error("`--nats` needs URLs like nats://HOST:4222[,nats://HOST2:4222]: {0}")]
    BadUrl(String),
    /// The subject prefix cannot be used.
    #[error(transparent)]
    BadPrefix(#[from] BadPrefix),
    /// The credentials file cannot be read.
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No server answered.
    #[error(
        "cannot reach NATS at {urls}: {reason}; start NATS or check --nats and its credentials"
    )]
    Unreachable {
        /// The URLs tried (without credentials).
        urls: String,
        /// What failed.
        reason: String,
    },
    /// The server runs without JetStream.
    #[error(
        "NATS at {urls} answers, but JetStream is not enabled ({reason}); start nats-server with -js (and a cluster for replication)"
    )]
    NoJetStream {
        /// The URLs.
        urls: String,
        /// What the server said.
        reason: String,
    },
    /// The stream exists with settings Tidings cannot work with.
    #[error(
        "the JetStream stream `{stream}` exists with other settings: {conflicts}; change the flags to match, or fix the stream (`nats stream edit {stream}`) or name another one with --nats-stream"
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// Every difference, in words.
        conflicts: String,
    },
    /// Creating or reading the stream failed.
    #[error("cannot create or read the JetStream stream `{stream}`: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// What the server said.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
