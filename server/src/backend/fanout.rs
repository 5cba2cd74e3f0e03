//! Local delivery: the core broker over pre-encoded SSE frames.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tidings_core::{
    broker::{
        Broker, BrokerConfig, BrokerStats, MessageId, PublishError, Subscribed, Subscription,
        SubscriptionId, SyncBroker, Weigh,
    },
    sse::Event,
    topic::Pattern,
};

use super::Outgoing;

/// A message as streams see it: its SSE frame, encoded once and shared by
/// every subscriber, and when it was accepted (for the latency metric).
#[derive(Debug, Clone)]
pub struct Frame {
    /// `id:`, `event:` and `data:` lines and the blank line.
    pub bytes: Bytes,
    /// When this process accepted it.
    pub published_at: Instant,
}

impl Weigh for Frame {
    fn weight(&self) -> usize {
        self.bytes.len()
    }
}

/// A stream's subscription to the fan-out; dropping it unsubscribes.
pub type FrameSubscription = Subscription<Frame, parking_lot::RawMutex>;

/// A stream's public identity: 128 random bits, written as 32 hex digits.
/// Publishers name it in `exclude`; being unguessable, it cannot be used to
/// silence someone else's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u128);

impl ConnectionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for ConnectionId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 {
            return Err(());
        }
        u128::from_str_radix(s, 16).map(Self).map_err(|_| ())
    }
}

/// The process's broker of frames plus the map from connection ids to
/// subscriptions (for `exclude`). Cheap to share in an `Arc`.
pub struct Fanout {
    broker: SyncBroker<Frame>,
    connections: Mutex<HashMap<ConnectionId, SubscriptionId>>,
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fanout {
    /// A fan-out whose broker sees no id below `first`.
    ///
    /// One process passes `MessageId::new(now_ms, 0)`, so ids from before
    /// a restart are reported as a gap; a cluster passes the oldest id of
    /// its shared log.
    pub fn new(config: BrokerConfig, first: MessageId) -> Self {
        Self {
            broker: SyncBroker::new(Broker::new(config, first)),
            connections: Mutex::default(),
        }
    }

    /// The underlying broker (for stats or direct use).
    pub fn broker(&self) -> &SyncBroker<Frame> {
        &self.broker
    }

    /// Broker counters.
    pub fn stats(&self) -> BrokerStats {
        self.broker.lock().stats()
    }

    /// Subscribes `connection` to `patterns`, replaying after `resume`.
    pub fn subscribe(
        &self,
        patterns: &[Pattern],
        resume: Option<MessageId>,
        connection: ConnectionId,
    ) -> (FrameSubscription, Subscribed) {
        let (subscription, subscribed) = self.broker.subscribe(patterns, resume);
        self.connections_lock().insert(connection, subscribed.id);
        (subscription, subscribed)
    }

    /// Forgets `connection` (its stream ended).
    pub fn forget(&self, connection: ConnectionId) {
        self.connections_lock().remove(&connection);
    }

    /// Open connections known to this fan-out.
    pub fn connection_count(&self) -> usize {
        self.connections_lock().len()
    }

    fn connections_lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, SubscriptionId>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn excluded(&self, exclude: Option<&str>) -> Option<SubscriptionId> {
        let id = exclude?.parse::<ConnectionId>().ok()?;
        self.connections_lock().get(&id).copied()
    }

    /// Publishes a batch in order with ids from this process's clock
    /// (`unix_ms-seq`, like a Redis stream id), each encoded once.
    pub fn publish_batch(&self, batch: &[Outgoing]) -> Vec<MessageId> {
        let excludes: Vec<_> = batch
            .iter()
            .map(|m| self.excluded(m.exclude.as_deref()))
            .collect();
        let now = Instant::now();
        let time = unix_millis();
        let mut broker = self.broker.lock();
        let mut ids = Vec::with_capacity(batch.len());
        for (message, exclude) in batch.iter().zip(excludes) {
            let id = match broker.last_id() {
                Some(last) if last.time >= time => last.successor(),
                _ => MessageId::new(time, 0),
            };
            let frame = Frame {
                bytes: encode(id, message),
                published_at: now,
            };
            match broker.publish_with_id(id, message.topic.clone(), frame.clone(), exclude) {
                Ok(_) => ids.push(id),
                // The clock went below the broker's floor (set at start):
                // continue from the broker's own sequence.
                Err(PublishError::IdNotIncreasing { .. }) | Err(_) => {
                    let published = broker.publish(message.topic.clone(), frame, exclude);
                    ids.push(published.id);
                }
            }
        }
        ids
    }

    /// Publishes a message whose id was chosen by a shared log (the cluster
    /// reader calls this for every entry, in log order).
    pub fn publish_with_id(&self, id: MessageId, message: &Outgoing) -> Result<(), PublishError> {
        self.publish_with_id_at(id, message, Instant::now())
    }

    /// [`publish_with_id`](Self::publish_with_id) for a message accepted at
    /// `published_at` (by whichever instance took the publish), for the
    /// latency metric.
    pub fn publish_with_id_at(
        &self,
        id: MessageId,
        message: &Outgoing,
        published_at: Instant,
    ) -> Result<(), PublishError> {
        let exclude = self.excluded(message.exclude.as_deref());
        let frame = Frame {
            bytes: encode(id, message),
            published_at,
        };
        self.broker
            .lock()
            .publish_with_id(id, message.topic.clone(), frame, exclude)
            .map(|_| ())
    }

    /// Ends every subscription (shutdown): streams drain and close.
    pub fn close_all(&self) {
        self.broker.lock().close_all();
    }
}

/// The SSE frame of a message: `id`, `event` and `data` lines.
pub fn encode(id: MessageId, message: &Outgoing) -> Bytes {
    let id = id.to_string();
    let event = Event::new(&message.data)
        .with_id(&id)
        .with_event(&message.event_type);
    // Event types are checked for line breaks before they get here; if one
    // slips through, the frame is sent as a plain `message` rather than lost.
    let bytes = event
        .to_vec()
        .or_else(|_| Event::new(&message.data).with_id(&id).to_vec())
        .unwrap_or_default();
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use tidings_core::topic::Topic;

    use super::*;

    fn outgoing(topic: &str, data: &str) -> Outgoing {
        Outgoing {
            topic: Topic::new(topic).unwrap(),
            event_type: "status".into(),
            data: data.into(),
            exclude: None,
        }
    }

    #[test]
    fn connection_ids_round_trip_and_reject_junk() {
        let id = ConnectionId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<ConnectionId>(), Ok(id));
        assert!("xyz".parse::<ConnectionId>().is_err());
        assert_ne!(ConnectionId::random(), ConnectionId::random());
    }

    #[test]
    fn batch_ids_increase_and_frames_carry_them() {
        let fanout = Fanout::new(BrokerConfig::default(), MessageId::new(unix_millis(), 0));
        let conn = ConnectionId::random();
        let (mut sub, _) = fanout.subscribe(&[Pattern::new("a:>").unwrap()], None, conn);
        let ids = fanout.publish_batch(&[outgoing("a:1", "1"), outgoing("a:2", "{}")]);
        assert!(ids[0] < ids[1]);
        let mut got = Vec::new();
        assert_eq!(sub.try_recv_many(&mut got, 10), Ok(2));
        assert_eq!(
            got[1].payload().bytes,
            format!("id: {}\nevent: status\ndata: {{}}\n\n", ids[1]).as_bytes()
        );
    }

    #[test]
    fn exclude_by_connection_id() {
        let fanout = Fanout::new(BrokerConfig::default(), MessageId::new(unix_millis(), 0));
        let me = ConnectionId::random();
        let (mut sub, _) = fanout.subscribe(&[Pattern::new("a:>").unwrap()], None, me);
        let mut m = outgoing("a:1", "1");
        m.exclude = Some(me.to_string());
        fanout.publish_batch(&[m]);
        let mut got = Vec::new();
        assert_eq!(sub.try_recv_many(&mut got, 10), Ok(0));
        fanout.forget(me);
        assert_eq!(fanout.connection_count(), 0);
    }
}
