//! [`NatsEngine`]: the thin driver of NATS mode over the core hub.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tidings_core::{
    broker::{Placement, Subscribed},
    hub::HubConfig,
    log::GapReason,
    message::{ConnectionId, Epoch, Frame, MessageId, Outgoing},
    topic::Pattern,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    NatsHealth, NatsPresence, NatsPublishError, NatsSettings, NatsStartError, Publication, Stream,
    StreamEntry,
    follow::{Control, Follower, outgoing},
    run_probe,
};
use crate::engine::{
    Accepted, BoxFuture, Engine, EngineError, Hub, KeyReused, Opened, PublishError, ReplayFeed,
    ReplayFeeder, clock,
};

/// How often the probe asks the stream for its leader and replicas.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long opening the stream is retried at start while the cluster
/// elects its JetStream meta leader or finds room for an R3 stream.
const OPEN_PATIENCE: Duration = Duration::from_secs(20);

/// NATS mode. See [the module docs](super) and `docs/nats.md`.
///
/// - Publishes go to the stream with `Nats-Msg-Id` = topic and
///   idempotency key; ids are `EPOCH-SEQ` with the stream sequence and the
///   stream's creation time as epoch.
/// - One follower task per instance holds core subscriptions on the
///   republished subjects its streams need, merges them in stream order,
///   repairs per-subject chains with direct gets and feeds the hub.
/// - A stream opened here gets its interest in place first; a resume is
///   replayed from the stream with direct gets, then joins live at the
///   head read once the interest was in place.
#[derive(Debug)]
pub struct NatsEngine {
    hub: Arc<Hub>,
    stream: Stream,
    /// The stream's creation time (ns): the log's epoch.
    epoch: Arc<AtomicU64>,
    settings: NatsSettings,
    health: Arc<NatsHealth>,
    control: mpsc::UnboundedSender<Control>,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Most messages replayed to one stream (its queue's bound).
    replay_limit: usize,
    /// Presence entries of every instance, in NATS KV.
    presence: Arc<NatsPresence>,
}

impl NatsEngine {
    /// Connects, creates or checks the stream, and starts following it.
    pub async fn start(settings: NatsSettings, config: HubConfig) -> Result<Self, NatsStartError> {
        let started = Instant::now();
        let (stream, events) = loop {
            match Stream::open_with_events(&settings).await {
                Ok(opened) => break opened,
                // A cluster just started answers JetStream requests once it
                // has elected its meta leader, and places an R3 stream once
                // its peers are known: be patient a moment.
                Err(e @ (NatsStartError::Stream { .. } | NatsStartError::NoJetStream { .. }))
                    if started.elapsed() < OPEN_PATIENCE =>
                {
                    tracing::info!(error = %e, "the stream cannot be opened yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let epoch = Epoch::from_random(stream.epoch().max(1));
        let shared_epoch = Arc::new(AtomicU64::new(epoch.get()));
        let floor = stream
            .head()
            .await
            .map_err(|reason| NatsStartError::Stream {
                stream: settings.stream.clone(),
                reason,
            })?
            .last_seq;
        let replicas = stream.head().await.map_or(1, |h| h.replicas);
        let presence = NatsPresence::open(&stream, replicas)
            .await
            .map_err(|reason| NatsStartError::Stream {
                stream: settings.stream.clone(),
                reason: format!("presence bucket: {reason}"),
            })?;
        let hub = Arc::new(Hub::new(config, epoch, floor));
        let health = Arc::new(NatsHealth::default());
        let stop = CancellationToken::new();
        let (control, control_rx) = mpsc::unbounded_channel();
        let follower = Follower {
            hub: hub.clone(),
            stream: stream.clone(),
            epoch: shared_epoch.clone(),
            health: health.clone(),
            control: control_rx,
            events,
            subscribers: Default::default(),
            streams: Vec::new(),
            reservations: Vec::new(),
            held: Vec::new(),
            disconnected: false,
            rescan: false,
            watch: super::follow::loss_watch(floor),
            since: Default::default(),
            check_cost: 0,
            walking: None,
        };
        let tasks = vec![
            tokio::spawn(follower.run(stop.clone())),
            tokio::spawn(run_probe(
                stream.clone(),
                health.clone(),
                PROBE_EVERY,
                stop.clone(),
            )),
        ];
        tracing::info!(
            stream = %stream.name(),
            %epoch,
            position = floor,
            "NATS mode: following the JetStream stream"
        );
        let replay_limit = config.broker.queue_capacity.max(1);
        Ok(Self {
            hub,
            stream,
            epoch: shared_epoch,
            settings,
            health,
            control,
            stop,
            tasks: std::sync::Mutex::new(tasks),
            replay_limit,
            presence: Arc::new(presence),
        })
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The settings in force.
    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// The log's epoch (from the stream's creation time).
    pub fn epoch(&self) -> Epoch {
        Epoch::from_random(self.epoch.load(Relaxed))
    }

    /// Live interest for `patterns` in place on the server.
    async fn want(&self, patterns: &[Pattern]) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Want {
                patterns: patterns.to_vec(),
                reply,
            })
            .map_err(|_| EngineError::new("the NATS follower has stopped"))?;
        answer
            .await
            .map_err(|_| EngineError::new("the NATS follower has stopped"))?
            .map_err(|e| EngineError::new(format!("cannot subscribe on NATS: {e}")))
    }

    async fn append(&self, batch: &[Outgoing]) -> Result<Vec<Accepted>, PublishError> {
        let publications: Vec<Publication> = batch
            .iter()
            .map(|m| Publication {
                topic: m.topic.clone(),
                event_type: m.event_type.as_str().to_owned(),
                data: m.data.clone(),
                exclude: m.exclude.map(|c| c.to_string()),
                // The stream's dedupe window is per stream; keys are per
                // topic (a topic has no spaces).
                idempotency_key: m
                    .idempotency_key
                    .as_ref()
                    .map(|k| format!("{} {}", m.topic, k.as_str())),
            })
            .collect();
        let sent = Instant::now();
        let published = self
            .stream
            .publish(&publications, clock::unix_micros())
            .await
            .map_err(|e| {
                self.health.publish_failures.fetch_add(1, Relaxed);
                let detail = EngineError::new(format!("stream `{}`: {e}", self.stream.name()));
                match e {
                    NatsPublishError::NotTaken { stored, .. } if stored.is_empty() => {
                        PublishError::Unavailable(detail)
                    }
                    _ => PublishError::Uncertain(detail),
                }
            })?;
        let waited = sent.elapsed();
        let mut accepted = Vec::with_capacity(published.len());
        for (index, (p, message)) in published.iter().zip(batch).enumerate() {
            self.health.record_ack(waited);
            let id = MessageId::new(self.epoch(), p.seq);
            if p.duplicate {
                self.health.duplicates.fetch_add(1, Relaxed);
                // Same key: the same message, or a conflict.
                if !self.same_message(p.seq, message).await {
                    return Err(PublishError::KeyReused(KeyReused {
                        index,
                        original: Some(id),
                    }));
                }
            } else {
                self.health.acks.fetch_add(1, Relaxed);
            }
            accepted.push(Accepted {
                id,
                repeat: p.duplicate,
            });
        }
        Ok(accepted)
    }

    /// Whether the stream's message `seq` is `message` (same topic, type
    /// and data); when it cannot be read, it counts as the same (the key
    /// matched).
    async fn same_message(&self, seq: u64, message: &Outgoing) -> bool {
        let filter = self.stream.subjects().stored(&message.topic);
        match self.stream.next_matching(&filter, seq).await {
            Ok(Some(stored)) if stored.seq == seq => {
                stored.event_type == message.event_type.as_str()
                    && stored.data == message.data.as_bytes()
            }
            Ok(_) => false,
            Err(_) => true,
        }
    }

    /// Replays `patterns` from the stream after `after` up to `head` as SSE
    /// frames: as many as a stream may queue at once, and when more remain,
    /// a feed that reads the rest page by page while the stream sends.
    async fn replay_frames(
        &self,
        patterns: &[Pattern],
        after: u64,
        head: u64,
    ) -> Result<(Bytes, usize, Option<ReplayFeed>), EngineError> {
        if head <= after {
            return Ok((Bytes::new(), 0, None));
        }
        let epoch = self.epoch();
        let found = self
            .stream
            .replay(patterns, after, head, self.replay_limit)
            .await
            .map_err(|e| EngineError::new(format!("cannot replay from the stream: {e}")))?;
        let (bytes, count) = encode_replayed(&found.entries, patterns, epoch);
        let feed = match found.entries.last() {
            Some(last) if found.truncated => Some(self.feed(patterns, last.seq, head, epoch)),
            _ => None,
        };
        Ok((bytes, count, feed))
    }

    /// Reads what follows `after` up to `head` in a task of its own, page by
    /// page, while the stream sends: at most one page waits for the stream.
    fn feed(&self, patterns: &[Pattern], after: u64, head: u64, epoch: Epoch) -> ReplayFeed {
        let (feeder, feed) = ReplayFeed::channel();
        let pages = feed_pages(
            self.stream.clone(),
            patterns.to_vec(),
            (after, head),
            (epoch, self.epoch.clone()),
            feeder,
        );
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = pages => {}
                _ = stop.cancelled() => {}
            }
        });
        feed
    }
}

/// Feeds the stream's messages for `patterns` in `(after, head]` to
/// `feeder`, a page at a time, until done, the stream's reader goes away,
/// or the log's epoch changes (then the stream ends with an error and its
/// client resumes, to be told the gap).
async fn feed_pages(
    stream: Stream,
    patterns: Vec<Pattern>,
    (mut after, head): (u64, u64),
    (epoch, current): (Epoch, Arc<AtomicU64>),
    feeder: ReplayFeeder,
) {
    while after < head {
        let found = match stream
            .replay(&patterns, after, head, ReplayFeed::PAGE)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                let error = EngineError::new(format!("cannot replay from the stream: {e}"));
                let _ = feeder.send(Err(error)).await;
                return;
            }
        };
        if current.load(Relaxed) != epoch.get() {
            let error = EngineError::new("the stream was recreated during the replay");
            let _ = feeder.send(Err(error)).await;
            return;
        }
        let Some(last) = found.entries.last().map(|e| e.seq) else {
            return;
        };
        let (bytes, count) = encode_replayed(&found.entries, &patterns, epoch);
        if count > 0 && feeder.send(Ok((bytes, count))).await.is_err() {
            return; // The stream ended.
        }
        if !found.truncated {
            return;
        }
        after = last;
    }
}

/// Encodes replayed entries as SSE frames, with the ids of `epoch`; the
/// frames and how many. Subjects match by NATS's rules, topics by the
/// core's (a wildcard first segment does not match the server's `$`
/// topics), so entries are checked against `patterns` again.
fn encode_replayed(entries: &[StreamEntry], patterns: &[Pattern], epoch: Epoch) -> (Bytes, usize) {
    let mut bytes = Vec::new();
    let mut count = 0;
    for entry in entries
        .iter()
        .filter(|e| patterns.iter().any(|p| p.matches(&e.topic)))
    {
        let frame = Frame::message(
            MessageId::new(epoch, entry.seq),
            &outgoing(entry),
            clock::now_us(),
        );
        bytes.extend_from_slice(&frame.bytes);
        count += 1;
    }
    (Bytes::from(bytes), count)
}

impl Engine for NatsEngine {
    fn presence_store(&self) -> Arc<dyn crate::presence::PresenceStore> {
        self.presence.clone()
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<Accepted>, PublishError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let timeout = self.settings.publish_timeout + Duration::from_millis(500);
            let outcome = tokio::time::timeout(timeout, self.append(&batch))
                .await
                .unwrap_or_else(|_| {
                    self.health.publish_failures.fetch_add(1, Relaxed);
                    Err(PublishError::Uncertain(EngineError::new(format!(
                        "stream `{}` did not acknowledge within {} ms",
                        self.stream.name(),
                        timeout.as_millis()
                    ))))
                });
            match &outcome {
                Ok(accepted) => {
                    if let Some(newest) = accepted.iter().rev().find(|a| !a.repeat) {
                        self.hub.note_acked(newest.id);
                    }
                }
                Err(PublishError::Unavailable(e)) => {
                    tracing::warn!(error = %e, count = batch.len(), "publish refused: NATS JetStream unavailable");
                }
                Err(PublishError::Uncertain(e)) => {
                    tracing::warn!(error = %e, count = batch.len(), "publish not acknowledged by NATS JetStream");
                }
                Err(_) => {}
            }
            outcome
        })
    }

    fn subscribe<'a>(
        &'a self,
        patterns: &'a [Pattern],
        resume: Option<&'a str>,
        connection: Option<ConnectionId>,
    ) -> BoxFuture<'a, Result<Opened, EngineError>> {
        Box::pin(async move {
            // Interest first: everything stored from now on arrives live.
            self.want(patterns).await?;
            let placement = self.hub.place(resume);
            // Where the stream stands once the interest is in place: what
            // comes after it is live, what is at or before it is replayed.
            let head = self
                .stream
                .head()
                .await
                .map_err(|e| EngineError::new(format!("cannot read the stream's head: {e}")))?;
            let seam = head.last_seq.max(self.hub.position().seq);
            let oldest = head.first_seq.max(1);
            // (replay after, gap to tell, position before the replay)
            let from: Option<(u64, Option<GapReason>)> = match placement {
                Placement::Live => None,
                Placement::After(id) | Placement::Ahead(id) if id.epoch == self.epoch() => {
                    if id.seq > seam {
                        // Not produced yet: a gap, then live.
                        let seam_id = MessageId::new(self.epoch(), seam);
                        let (subscription, mut subscribed) =
                            self.hub
                                .subscribe(patterns, Placement::Ahead(seam_id), connection);
                        subscribed.gap = Some(GapReason::FutureId);
                        subscribed.position = seam_id;
                        return self.opened(subscription, subscribed, patterns, Bytes::new());
                    }
                    let trimmed = oldest > id.seq + 1;
                    Some((id.seq, trimmed.then_some(GapReason::HistoryTrimmed)))
                }
                // Another epoch or not an id: a gap, then everything the
                // stream retains, then live.
                Placement::After(_) | Placement::Ahead(_) => {
                    Some((0, Some(GapReason::UnknownEpoch)))
                }
                Placement::Unplaceable(reason) => Some((0, Some(reason))),
            };
            let seam_id = MessageId::new(self.epoch(), seam);
            let Some((after, gap)) = from else {
                let placement = if seam > self.hub.position().seq {
                    Placement::Ahead(seam_id)
                } else {
                    Placement::Live
                };
                let (subscription, subscribed) =
                    self.hub.subscribe(patterns, placement, connection);
                return self.opened(subscription, subscribed, patterns, Bytes::new());
            };
            // Live messages after the seam wait in the subscription's queue
            // while the replay is sent; a replay longer than the queue goes
            // on page by page through a feed (if the live queue overflows
            // meanwhile, the stream ends as lagged and its client resumes
            // from the last replayed id).
            let (replay, count, feed) = self.replay_frames(patterns, after, seam).await?;
            let mut position = MessageId::new(self.epoch(), after.max(oldest - 1).min(seam));
            if gap.is_none() {
                position = MessageId::new(self.epoch(), after);
            }
            let (subscription, mut subscribed) =
                self.hub
                    .subscribe(patterns, Placement::Ahead(seam_id), connection);
            if subscribed.gap.is_some() {
                // The hub's own history could not bridge the seam: its
                // answer stands, the older replay would go backwards.
                return self.opened(subscription, subscribed, patterns, Bytes::new());
            }
            subscribed.gap = gap;
            subscribed.position = position;
            subscribed.replayed += count;
            let mut opened = self.opened(subscription, subscribed, patterns, replay)?;
            opened.replay_feed = feed;
            Ok(opened)
        })
    }

    fn ready(&self) -> Result<(), EngineError> {
        if self.stream.client().connection_state() != async_nats::connection::State::Connected {
            return Err(EngineError::new("not connected to NATS"));
        }
        self.health
            .check()
            .map_err(|why| EngineError::new(format!("NATS stream `{}`: {why}", self.stream.name())))
    }

    fn render_metrics(&self, out: &mut String) {
        self.health.render(out);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        Box::pin(async move {
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

impl NatsEngine {
    /// Registers the stream's interest (kept while the hub holds it).
    fn opened(
        &self,
        subscription: crate::engine::FrameSubscription,
        subscribed: Subscribed,
        patterns: &[Pattern],
        replay: Bytes,
    ) -> Result<Opened, EngineError> {
        let _ = self.control.send(Control::Opened {
            id: subscription.id(),
            patterns: patterns.to_vec(),
        });
        Ok(Opened {
            subscription,
            subscribed,
            replay,
            replay_feed: None,
        })
    }
}

impl Drop for NatsEngine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
