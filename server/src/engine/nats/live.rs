//! Live fan-out by interest: core subscriptions on the republished
//! subjects that this instance's streams need, never one per client and
//! never everything.
//!
//! [`Live::set_interest`] takes every pattern the instance's streams watch;
//! it subscribes to the minimal cover (a pattern covered by another one is
//! not subscribed twice) and drops subscriptions no longer needed. Every
//! republished message arrives as a [`LiveEvent::Entry`] with its stream
//! sequence and the previous sequence on its subject, for the core
//! follower's per-subject chains. Core NATS is at-most-once: a
//! [`ConnectionEvent`](super::ConnectionEvent) (a reconnect, or the client
//! dropping messages for a slow reader) means messages may be missing and the subscribed patterns must be
//! scanned with [`Stream::next_matching`](super::Stream::next_matching).

use std::collections::HashMap;

use futures_core::Stream as _;
use parking_lot::Mutex;
use tidings_core::topic::Pattern;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Stream, StreamEntry, Subjects, entry::from_republished};

/// What the live subscriptions report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A message the stream stored and republished.
    Entry(StreamEntry),
    /// The subscription for `pattern` is in place on the server: messages
    /// stored from now on arrive; earlier ones must be fetched.
    Subscribed(Pattern),
}

/// The instance's live subscriptions (see `engine/nats/live.rs`).
#[derive(Debug)]
pub struct Live {
    client: async_nats::Client,
    subjects: Subjects,
    subscribed: Mutex<HashMap<Pattern, JoinHandle<()>>>,
    tx: mpsc::Sender<LiveEvent>,
}

impl Live {
    /// Live subscriptions on `stream`'s connection; events arrive on the
    /// receiver, which holds up to `capacity` (a full receiver slows the
    /// subscriptions down, and then the client drops messages and reports
    /// [`ConnectionEvent::Lagged`](super::ConnectionEvent::Lagged)).
    pub fn new(stream: &Stream, capacity: usize) -> (Self, mpsc::Receiver<LiveEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let live = Self {
            client: stream.client().clone(),
            subjects: stream.subjects().clone(),
            subscribed: Mutex::new(HashMap::new()),
            tx,
        };
        (live, rx)
    }

    /// The patterns subscribed now (the minimal cover of the interest).
    pub fn subscribed(&self) -> Vec<Pattern> {
        let mut patterns: Vec<Pattern> = self.subscribed.lock().keys().cloned().collect();
        patterns.sort();
        patterns
    }

    /// Subscribes to what `interest` needs and drops the rest; each new
    /// subscription is confirmed by the server (a flush) before its
    /// [`LiveEvent::Subscribed`] is sent.
    pub async fn set_interest(&self, interest: &[Pattern]) -> Result<(), String> {
        let cover = minimal_cover(interest);
        let added: Vec<Pattern> = {
            let mut subscribed = self.subscribed.lock();
            subscribed.retain(|pattern, task| {
                let keep = cover.contains(pattern);
                if !keep {
                    // Dropping the subscriber unsubscribes.
                    task.abort();
                }
                keep
            });
            cover
                .iter()
                .filter(|p| !subscribed.contains_key(*p))
                .cloned()
                .collect()
        };
        let mut started = Vec::new();
        for pattern in &added {
            let subscriber = self
                .client
                .subscribe(self.subjects.live_filter(pattern))
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(forward(subscriber, self.subjects.clone(), self.tx.clone()));
            self.subscribed.lock().insert(pattern.clone(), task);
            started.push(pattern.clone());
        }
        if !started.is_empty() {
            self.client.flush().await.map_err(|e| e.to_string())?;
            for pattern in started {
                let _ = self.tx.send(LiveEvent::Subscribed(pattern)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for task in self.subscribed.lock().values() {
            task.abort();
        }
    }
}

async fn forward(
    mut subscriber: async_nats::Subscriber,
    subjects: Subjects,
    tx: mpsc::Sender<LiveEvent>,
) {
    while let Some(msg) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut subscriber).poll_next(cx)).await
    {
        match from_republished(&subjects, &msg.subject, msg.headers.as_ref(), msg.payload) {
            Some(entry) => {
                if tx.send(LiveEvent::Entry(entry)).await.is_err() {
                    return;
                }
            }
            None => {
                tracing::warn!(subject = %msg.subject, "skipping a republished message Tidings cannot read")
            }
        }
    }
}

/// The patterns of `interest` not covered by another one (each once).
pub fn minimal_cover(interest: &[Pattern]) -> Vec<Pattern> {
    let mut unique: Vec<Pattern> = interest.to_vec();
    unique.sort();
    unique.dedup();
    unique
        .iter()
        .filter(|p| !unique.iter().any(|q| q != *p && q.covers(p)))
        .cloned()
        .collect()
}
