//! Where presence entries live: the [`PresenceStore`] trait and its types.

use std::{fmt, str::FromStr, time::Duration};

use tidings_core::{message::ConnectionId, topic::Topic};

use crate::engine::{BoxFuture, EngineError};

/// One stream's entry under one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The stream (its `tidings.connected` id).
    pub connection: ConnectionId,
    /// When it subscribed, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The client's entry as listed, compact JSON:
    /// `{"connectionId":"…","info":{…},"since":…,"verified":…}`.
    pub record: String,
}

impl Member {
    /// Where this member sorts in a listing (oldest first).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            since_ms: self.since_ms,
            connection: self.connection,
        }
    }
}

/// A position in a topic's listing (members sort by `since`, then
/// connection id); written `SINCE.CONNECTION` in `next` and `cursor`.
///
/// ```
/// use tidings_server::presence::Cursor;
///
/// let cursor: Cursor = "1700000000000.000000000000000000000000000000ff".parse().unwrap();
/// assert_eq!(cursor.to_string(), "1700000000000.000000000000000000000000000000ff");
/// assert!("garbage".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The member's `since`.
    pub since_ms: u64,
    /// The member's connection.
    pub connection: ConnectionId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.since_ms, self.connection)
    }
}

/// A `cursor` that is not one this server wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCursor;

impl fmt::Display for BadCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`cursor` must be the `next` value of an earlier /presence answer")
    }
}

impl std::error::Error for BadCursor {}

impl FromStr for Cursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (since, connection) = s.split_once('.').ok_or(BadCursor)?;
        Ok(Self {
            since_ms: since.parse().map_err(|_| BadCursor)?,
            connection: connection.parse().map_err(|_| BadCursor)?,
        })
    }
}

/// One page of a topic's listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Live members of the topic, on every instance.
    pub total: usize,
    /// Up to the asked limit, oldest first, after the asked cursor.
    pub members: Vec<Member>,
    /// Where the next page starts, when there is more.
    pub next: Option<Cursor>,
}

/// An entry that expired: its instance stopped refreshing it (killed, or
/// cut off from the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The topic it was listed under.
    pub topic: Topic,
    /// The entry.
    pub member: Member,
}

/// Presence entries of every instance of a deployment.
///
/// One entry per (topic, stream). The instance that holds a stream adds
/// its entries when the stream opens and removes them when it ends;
/// stores shared between instances also expire entries that are not
/// [`refresh`](Self::refresh)ed within their time to live, and hand each
/// expired entry to exactly one [`sweep`](Self::sweep) (which publishes its
/// `tidings.leave`).
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds `member` under every topic of `topics`, living `ttl`.
    fn add<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Removes `member`'s entries under `topics`; answers, per topic,
    /// whether the entry was still there (an entry already expired was
    /// swept, and its leave told, by a [`sweep`](Self::sweep)).
    fn remove<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Vec<bool>, EngineError>>;

    /// Up to `limit` live members of `topic` after `after`, oldest first,
    /// and the topic's total.
    fn list<'a>(
        &'a self,
        topic: &'a Topic,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, EngineError>>;

    /// Extends the life of this instance's entries by `ttl` from now, and
    /// adds back those that are missing (the engine lost them, or they
    /// expired while this instance could not reach it); answers the
    /// indices of the entries added back (their joins are told again).
    /// Stores of one process need not expire anything.
    fn refresh<'a>(
        &'a self,
        _entries: &'a [(Topic, Member)],
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Removes entries whose life ended and returns them; each expired
    /// entry is returned by one call only, on whichever instance.
    fn sweep(&self) -> BoxFuture<'_, Result<Vec<Expired>, EngineError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// True when entries expire (the store is shared by instances).
    fn expires(&self) -> bool {
        false
    }
}
