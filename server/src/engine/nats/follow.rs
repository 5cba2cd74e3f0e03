//! The instance's follower of the stream: one task that owns the live core
//! subscriptions (by interest), merges what they receive in stream order,
//! repairs broken per-subject chains with direct gets, rescans after a
//! reconnect, a slow-consumer drop or a leader change, and feeds the hub.
//!
//! Ordering: async-nats hands each subscription's messages to its own
//! channel, in the order they came off the wire (the stream leader
//! republishes in sequence order). Whenever one channel yields, every
//! channel is drained again until a full pass finds nothing: anything
//! received before the newest message taken is then in the batch, which is
//! sorted by sequence before it is fed. So overlapping or separate
//! subscriptions never reorder messages.
//!
//! Losses nothing else shows: a topic's last message lost on the live path
//! leaves no hole in any chain. Every [`LOSS_PROBE_EVERY`] the follower
//! reads the stream's head (one stream info for the whole instance) and
//! hands it to the core [`LossWatch`]; once a head is [`LOSS_GRACE`] old,
//! the watch asks for a check of the sequences up to it, and a walk over
//! the stream (its own task, beside live delivery) lists with direct gets
//! what did not arrive: by its subscribed patterns, skipping what arrived,
//! or, past the watch's memory of arrivals, by topics, after each topic's
//! newest delivered message. What did not arrive is delivered in order,
//! or, when later messages were delivered already, its topic's streams are
//! told `tidings.gap`.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_core::Stream as _;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tidings_core::{
    broker::SubscriptionId,
    hub::LogEntry,
    log::{Chain, LogState, LossWatch, Probe, Resync, Walk},
    message::{ConnectionId, Epoch, EventType, MessageId, Outgoing},
    topic::{Pattern, Topic},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use super::{
    ConnectionEvent, NatsHealth, Stream, StreamEntry, entry::from_republished, minimal_cover,
};
use crate::engine::{Hub, clock};

/// Live messages held while a rescan is pending, at most (beyond it the
/// instance declares what it could not deliver lost, with `tidings.gap`).
const MAX_HELD: usize = 100_000;
/// Most messages one rescan fetches; beyond it, `tidings.gap`.
const MAX_RESCAN: usize = 10_000;
/// How long an interest asked for by a stream being opened is kept before
/// the stream registers.
const RESERVATION: Duration = Duration::from_secs(30);
/// How often closed streams are looked for and unneeded subscriptions
/// dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often the stream's head is read (one stream info per instance) to
/// find messages the live path lost (and a recreated stream): a lost
/// message is found by the second probe after it was stored (1–2 s), plus
/// the walk.
pub(super) const LOSS_PROBE_EVERY: Duration = Duration::from_secs(1);
/// How old a probed head must be before the sequences up to it are
/// checked: what is merely in flight has arrived by then, so the check
/// rarely fetches a message the live path was about to deliver. A little
/// under [`LOSS_PROBE_EVERY`], so that the next probe checks it.
pub(super) const LOSS_GRACE: Duration = Duration::from_millis(800);
/// Most sequence numbers that arrived remembered between two checks (and
/// so most direct gets a check spends skipping them). Past it, a check
/// walks by topics instead: one stream info per pattern and one direct
/// get per topic the stream holds, whatever arrived.
pub(super) const LOSS_BUDGET: usize = 256;
/// A check costs one direct get per subscribed pattern (plus one per
/// message that arrived), or, walking by topics, one per topic: checks are
/// spaced so that this part stays under this many gets per second (an
/// instance subscribed to 500 patterns or fewer checks every second, one
/// with 10,000 every 20 s).
pub(super) const LOSS_GETS_PER_SECOND: u64 = 500;
/// Most topics a check walking by topics looks at; past it, that check is
/// skipped (and a loss in that interval is found only by its topic's next
/// message).
const LOSS_TOPICS_MAX: usize = 100_000;
/// Patterns a check walks at once.
const LOSS_WALKS_AT_ONCE: usize = 16;

/// What the engine asks of its follower.
pub(super) enum Control {
    /// Subscribe to what `patterns` need (answered once the server has the
    /// subscriptions).
    Want {
        patterns: Vec<Pattern>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A stream opened with these patterns; its interest lasts as long as
    /// the hub holds `id`.
    Opened {
        id: SubscriptionId,
        patterns: Vec<Pattern>,
    },
}

pub(super) struct Follower {
    pub hub: Arc<Hub>,
    pub stream: Stream,
    /// The stream's creation time: the log's epoch (shared with the engine).
    pub epoch: Arc<AtomicU64>,
    pub health: Arc<NatsHealth>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub events: mpsc::UnboundedReceiver<ConnectionEvent>,
    /// The live subscription of each pattern of the cover.
    pub subscribers: HashMap<Pattern, async_nats::Subscriber>,
    pub streams: Vec<(SubscriptionId, Vec<Pattern>)>,
    pub reservations: Vec<(Instant, Vec<Pattern>)>,
    /// Live entries received while a rescan is pending.
    pub held: Vec<StreamEntry>,
    /// Disconnected: hold live entries until reconnected and rescanned.
    pub disconnected: bool,
    pub rescan: bool,
    /// Which stream sequences arrived, and which are checked (core).
    pub watch: Mutex<LossWatch>,
    /// For each subscribed pattern, the sequence after which its messages
    /// arrive live (`u64::MAX` until the next probe reads the head).
    pub since: HashMap<Pattern, u64>,
    /// The direct gets the last check walking by topics asked for (checks
    /// are spaced by it).
    pub check_cost: usize,
    /// A loss check's walk, running beside live delivery (its own task,
    /// aborted when dropped).
    pub walking: Option<AbortOnDropHandle<Walked>>,
}

/// A loss check's walk over the stream. It only reads (the stream, and the
/// hub's chains), so it runs beside live delivery: a message that arrives
/// meanwhile is seen by the time its result is settled, and a lost one
/// found late is told rather than delivered out of order.
struct LossWalk {
    stream: Stream,
    hub: Arc<Hub>,
    /// Each subscribed pattern and the sequence after which it is entitled.
    since: Vec<(Pattern, u64)>,
    after: u64,
    through: u64,
    walk: Walk,
}

/// Each walk's entries (one walk per pattern, or per topic).
type Walks = Vec<Result<Vec<StreamEntry>, String>>;

/// What a walk found.
pub(super) struct Walked {
    after: u64,
    through: u64,
    walk: Walk,
    /// Each walk's entries; `None` past [`LOSS_TOPICS_MAX`] topics.
    found: Result<Option<Walks>, String>,
    /// The direct gets a walk by topics asked for (0 by arrivals).
    cost: usize,
    micros: u64,
}

impl LossWalk {
    async fn run(self) -> Walked {
        let started = Instant::now();
        let (found, cost) = match self.walk {
            Walk::Arrivals => (Ok(Some(self.by_arrivals().await)), 0),
            Walk::Topics => match self.by_topics().await {
                Ok((found, cost)) => (Ok(found), cost),
                Err(e) => (Err(e), 0),
            },
        };
        Walked {
            after: self.after,
            through: self.through,
            walk: self.walk,
            found,
            cost,
            micros: started.elapsed().as_micros() as u64,
        }
    }

    /// Every stored message of each subscribed pattern in `after + 1 ..=
    /// through` (after the pattern's start), arrived or not: one direct get
    /// per message and per pattern, a few patterns at a time.
    async fn by_arrivals(&self) -> Walks {
        let walks: Vec<_> = self
            .since
            .iter()
            .map(|(pattern, since)| {
                let filter = self.stream.subjects().stored_filter(pattern);
                walk_subject(
                    self.stream.clone(),
                    filter,
                    self.after.max(*since),
                    self.through,
                )
            })
            .collect();
        futures_util::stream::iter(walks)
            .buffer_unordered(LOSS_WALKS_AT_ONCE)
            .collect()
            .await
    }

    /// For each topic the stream holds that a subscribed pattern matches,
    /// its stored messages in `after + 1 ..= through` after the newest its
    /// chain accounted for (a chain accounts for every message of its topic
    /// from the pattern's start up to its newest: the hub asks for any hole
    /// in it). A pattern without wildcards is its one topic; the others are
    /// listed with one stream info each. Then one direct get per topic
    /// whose chain is behind `through`, plus one per message found. `None`
    /// past [`LOSS_TOPICS_MAX`] topics.
    async fn by_topics(&self) -> Result<(Option<Walks>, usize), String> {
        let listings: Vec<_> = self
            .since
            .iter()
            .map(|(pattern, since)| async move {
                let start = self.after.max(*since);
                if pattern.is_literal() {
                    let topic = Topic::new(pattern.as_str()).map_err(|e| e.to_string())?;
                    return Ok((Some(vec![topic]), start));
                }
                let topics = self
                    .stream
                    .topics_matching(pattern, LOSS_TOPICS_MAX)
                    .await?;
                Ok::<_, String>((topics, start))
            })
            .collect();
        let listed: Vec<Result<_, String>> = futures_util::stream::iter(listings)
            .buffer_unordered(LOSS_WALKS_AT_ONCE)
            .collect()
            .await;
        let mut from: HashMap<Topic, u64> = HashMap::new();
        for listing in listed {
            let (Some(topics), start) = listing? else {
                return Ok((None, 0));
            };
            for topic in topics {
                let at = from.entry(topic).or_insert(start);
                *at = (*at).min(start);
            }
            if from.len() > LOSS_TOPICS_MAX {
                return Ok((None, 0));
            }
        }
        let cost = self.since.len() + from.len();
        let walks: Vec<_> = from
            .into_iter()
            .filter_map(|(topic, start)| {
                let start = start.max(self.hub.chain(&topic).unwrap_or(0));
                (start < self.through).then(|| {
                    let filter = self.stream.subjects().stored(&topic);
                    walk_subject(self.stream.clone(), filter, start, self.through)
                })
            })
            .collect();
        let found = futures_util::stream::iter(walks)
            .buffer_unordered(LOSS_WALKS_AT_ONCE)
            .collect()
            .await;
        Ok((Some(found), cost))
    }
}

/// Waits for the running walk, if any (never ready without one; a walk
/// that panicked reads as a failed one).
fn poll_walk(
    walking: &mut Option<AbortOnDropHandle<Walked>>,
) -> impl Future<Output = Result<Walked, String>> + '_ {
    std::future::poll_fn(move |cx| match walking.as_mut() {
        Some(walk) => Pin::new(walk).poll(cx).map_err(|e| e.to_string()),
        None => Poll::Pending,
    })
}

/// The loss watch of a follower starting after `start`.
pub(super) fn loss_watch(start: u64) -> Mutex<LossWatch> {
    Mutex::new(LossWatch::new(
        start,
        LOSS_GRACE.as_micros() as u64,
        LOSS_BUDGET,
    ))
}

impl Follower {
    fn epoch(&self) -> Epoch {
        Epoch::from_random(self.epoch.load(Relaxed))
    }

    /// Reads the stream's head once: checks the epoch, and lets the loss
    /// watch judge it.
    async fn probe(&mut self) {
        let ticket = self.hub.resync_ticket();
        let Ok(head) = self.stream.head().await else {
            return;
        };
        if self.check_epoch(&head, ticket) {
            return;
        }
        // Patterns subscribed since the last probe: what is stored after
        // this head reaches them live (what came before is not theirs).
        for since in self.since.values_mut() {
            if *since == u64::MAX {
                *since = head.last_seq;
            }
        }
        if self.rescan || self.disconnected || self.walking.is_some() {
            return;
        }
        let probe = {
            let mut watch = self.watch.lock();
            let cost = self.since.len().max(self.check_cost) as u64;
            watch.set_spacing(cost * 1_000_000 / LOSS_GETS_PER_SECOND);
            watch.probe(clock::now_us(), head.last_seq)
        };
        if let Probe::Check {
            after,
            through,
            walk,
        } = probe
        {
            let walk = LossWalk {
                stream: self.stream.clone(),
                hub: self.hub.clone(),
                since: self.since.iter().map(|(p, &s)| (p.clone(), s)).collect(),
                after,
                through,
                walk,
            };
            self.walking = Some(AbortOnDropHandle::new(tokio::spawn(walk.run())));
        }
    }

    /// A stream deleted and created again restarts its sequences: it is a
    /// new epoch, and every stream here is told. True when it was.
    fn check_epoch(
        &mut self,
        head: &super::StreamHead,
        ticket: tidings_core::log::ResyncTicket,
    ) -> bool {
        let created = head.created_ns.max(1);
        if created == self.epoch.load(Relaxed) {
            return false;
        }
        self.epoch.store(created, Relaxed);
        let state = LogState {
            epoch: Epoch::from_random(created),
            head: head.last_seq,
            oldest: (head.last_seq >= head.first_seq && head.first_seq > 0)
                .then_some(head.first_seq),
        };
        let _ = self.hub.resync(state, ticket, clock::now_us());
        self.held.clear();
        self.walking = None;
        self.watch.lock().restart(head.last_seq);
        // Sequences restart: each pattern's start is the new stream's head.
        for since in self.since.values_mut() {
            *since = head.last_seq;
        }
        tracing::warn!(
            epoch = %Epoch::from_random(created),
            "the JetStream stream was created again (sequences restart): this instance's streams were told with tidings.gap"
        );
        true
    }

    /// Takes what a check's walk found (it ran beside live delivery):
    /// delivers the messages that did not arrive after the position in
    /// order, and tells the streams of the others' topics `tidings.gap`
    /// (later messages were delivered already).
    async fn settle(&mut self, walked: Walked) {
        let Walked {
            after,
            through,
            walk,
            found,
            cost,
            micros,
        } = walked;
        self.health.loss_checks.fetch_add(1, Relaxed);
        self.check_cost = cost;
        if self.rescan || self.disconnected {
            // Live messages are held for a rescan that started while the
            // walk ran: delivering what it found now could pass them. The
            // rescan reads everything after the position; the range is
            // checked again after it.
            return;
        }
        tracing::debug!(
            ?walk,
            after,
            through,
            cost,
            micros,
            "loss check walked the stream"
        );
        let found = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(
                    max = LOSS_TOPICS_MAX,
                    "more topics than a loss check walks: messages lost live in a busy second are found only by their topic's next message"
                );
                self.watch.lock().checked(through);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "loss check failed; the next probe retries");
                return;
            }
        };
        match self.check(through, walk, found).await {
            Ok(()) => self.watch.lock().checked(through),
            Err(e) => tracing::debug!(error = %e, "loss check failed; the next probe retries"),
        }
    }

    /// The messages a walk found: those that did not arrive are delivered
    /// or announced.
    async fn check(&mut self, through: u64, walk: Walk, found: Walks) -> Result<(), String> {
        let mut missing: Vec<StreamEntry> = Vec::new();
        let mut truncated = false;
        for entries in found {
            let entries = entries?;
            // The walk stopped at its limit: what lies beyond is unknown.
            truncated |= entries.len() > MAX_RESCAN;
            let watch = self.watch.lock();
            // A walk by topics lists only what its chain did not account
            // for; a walk by arrivals lists everything, arrived or not.
            missing.extend(
                entries
                    .into_iter()
                    .filter(|e| walk == Walk::Topics || !watch.seen(e.seq)),
            );
        }
        if truncated || missing.len() > MAX_RESCAN {
            self.declare_lost(through);
            return Ok(());
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_by_key(|e| e.seq);
        missing.dedup_by_key(|e| e.seq);
        self.health
            .refetches
            .fetch_add(missing.len() as u64, Relaxed);
        let position = self.hub.position().seq;
        let (late, mut fresh): (Vec<StreamEntry>, Vec<StreamEntry>) =
            missing.into_iter().partition(|e| e.seq <= position);
        // Too late to deliver in order: tell the streams of each topic once
        // (unless its chain went past it: its repair dealt with it).
        let mut told: HashMap<Topic, u64> = HashMap::new();
        for entry in late {
            self.watch.lock().saw(entry.seq);
            if self.hub.chain(&entry.topic).is_some_and(|c| c >= entry.seq) {
                continue;
            }
            let newest = told.entry(entry.topic).or_default();
            *newest = (*newest).max(entry.seq);
        }
        for (topic, seq) in told {
            tracing::warn!(
                %topic, seq,
                "a message was lost on the live path and later ones were delivered already; its topic's streams were told tidings.gap"
            );
            self.hub.give_up(&topic, seq, clock::now_us());
        }
        if fresh.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = fresh.len(),
            first = fresh[0].seq,
            "messages lost on the live path were fetched from the stream"
        );
        // Each topic's chain goes on from where it stood: the check saw
        // every message of its patterns in between.
        let mut last_on: HashMap<Topic, u64> = HashMap::new();
        for entry in &mut fresh {
            let prev = match last_on.get(&entry.topic) {
                Some(&previous) => previous,
                None => self.hub.chain(&entry.topic).unwrap_or(0),
            };
            entry.prev = Some(prev);
            last_on.insert(entry.topic.clone(), entry.seq);
        }
        self.deliver(fresh).await;
        Ok(())
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(LOSS_PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let health = self.health.clone();
        loop {
            let leader_changed = health.leader_changed.notified();
            tokio::select! {
                _ = stop.cancelled() => return,
                control = self.control.recv() => match control {
                    Some(control) => self.handle(control).await,
                    None => return,
                },
                event = self.events.recv() => match event {
                    Some(ConnectionEvent::Disconnected) => {
                        tracing::warn!("lost the NATS connection; live delivery waits for the reconnect and a rescan");
                        self.disconnected = true;
                        self.rescan = true;
                    }
                    Some(ConnectionEvent::Reconnected) => {
                        self.disconnected = false;
                        self.rescan = true;
                        self.try_rescan().await;
                    }
                    Some(ConnectionEvent::Lagged) => {
                        tracing::warn!("the NATS client dropped live messages (slow consumer); rescanning");
                        self.rescan = true;
                        self.try_rescan().await;
                    }
                    None => return,
                },
                _ = leader_changed => {
                    tracing::info!("the stream leader changed; rescanning for messages its predecessor stored but did not republish");
                    self.rescan = true;
                    self.try_rescan().await;
                }
                batch = next_batch(&mut self.subscribers) => {
                    let entries = self.parse(batch);
                    if self.rescan || self.disconnected {
                        self.hold(entries);
                    } else {
                        self.deliver(entries).await;
                    }
                }
                _ = retry.tick(), if self.rescan && !self.disconnected => self.try_rescan().await,
                _ = probe.tick() => self.probe().await,
                walked = poll_walk(&mut self.walking), if self.walking.is_some() => {
                    self.walking = None;
                    match walked {
                        Ok(walked) => self.settle(walked).await,
                        Err(e) => tracing::warn!(error = %e, "a loss check's walk failed; the next probe retries"),
                    }
                }
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    async fn handle(&mut self, control: Control) {
        match control {
            Control::Want { patterns, reply } => {
                self.reservations.push((Instant::now(), patterns.clone()));
                let result = self.subscribe_missing(&patterns).await;
                let _ = reply.send(result);
            }
            Control::Opened { id, patterns } => {
                // Its reservation has served.
                if let Some(at) = self.reservations.iter().position(|(_, p)| *p == patterns) {
                    self.reservations.remove(at);
                }
                self.streams.push((id, patterns));
            }
        }
    }

    /// Subscribes to the patterns of `wanted` that no subscription covers
    /// yet, and waits until the server has them.
    async fn subscribe_missing(&mut self, wanted: &[Pattern]) -> Result<(), String> {
        let missing: Vec<Pattern> = minimal_cover(wanted)
            .into_iter()
            .filter(|p| !self.subscribers.keys().any(|s| s.covers(p)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let client = self.stream.client().clone();
        for pattern in missing {
            let subject = self.stream.subjects().live_filter(&pattern);
            let subscriber = client.subscribe(subject).await.map_err(|e| e.to_string())?;
            self.since.insert(pattern.clone(), u64::MAX);
            self.subscribers.insert(pattern, subscriber);
        }
        tokio::time::timeout(Duration::from_secs(5), client.flush())
            .await
            .map_err(|_| "NATS did not confirm the subscription within 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
        // The server has the subscriptions: what is stored after this head
        // arrives live, what came before was not theirs. (If the head
        // cannot be read now, the next probe's stands in.)
        if let Ok(head) = self.stream.head().await {
            for since in self.since.values_mut() {
                if *since == u64::MAX {
                    *since = head.last_seq;
                }
            }
        }
        Ok(())
    }

    /// Drops what closed streams needed and no open one does.
    async fn sweep(&mut self) {
        {
            let broker = self.hub.broker().lock();
            self.streams.retain(|(id, _)| broker.contains(*id));
        }
        self.reservations
            .retain(|(at, _)| at.elapsed() < RESERVATION);
        let wanted: Vec<Pattern> = self
            .streams
            .iter()
            .flat_map(|(_, p)| p.iter().cloned())
            .chain(
                self.reservations
                    .iter()
                    .flat_map(|(_, p)| p.iter().cloned()),
            )
            .collect();
        let cover = minimal_cover(&wanted);
        // Subscribe first what the cover needs and nothing covers (a
        // broader pattern about to go), then drop the rest.
        if let Err(e) = self.subscribe_missing(&cover).await {
            tracing::warn!(error = %e, "cannot adjust the live subscriptions");
            return;
        }
        let before = self.subscribers.len();
        self.subscribers.retain(|p, _| cover.contains(p));
        self.since.retain(|p, _| cover.contains(p));
        if self.subscribers.len() < before {
            let followed: Vec<Pattern> = self.subscribers.keys().cloned().collect();
            self.hub
                .forget_chains(|topic| followed.iter().any(|p| p.matches(topic)));
        }
    }

    fn parse(&self, batch: Vec<async_nats::Message>) -> Vec<StreamEntry> {
        let subjects = self.stream.subjects();
        let mut entries: Vec<StreamEntry> = batch
            .into_iter()
            .filter_map(|msg| {
                let entry =
                    from_republished(subjects, &msg.subject, msg.headers.as_ref(), msg.payload);
                if entry.is_none() {
                    tracing::warn!(subject = %msg.subject, "skipping a republished message Tidings cannot read");
                }
                entry
            })
            .collect();
        self.health
            .received
            .fetch_add(entries.len() as u64, Relaxed);
        if let Some(newest) = entries.iter().map(|e| e.seq).max() {
            self.health.received_seq.fetch_max(newest, Relaxed);
        }
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        entries
    }

    fn hold(&mut self, entries: Vec<StreamEntry>) {
        self.held.extend(entries);
        if self.held.len() > MAX_HELD {
            // Too much to hold while NATS cannot be read: declare it lost.
            let through = self.held.iter().map(|e| e.seq).max().unwrap_or(0);
            self.held.clear();
            self.declare_lost(through);
        }
    }

    /// Entries after this instance's position up to `through` cannot be
    /// delivered: every stream behind it is told `tidings.gap`.
    fn declare_lost(&self, through: u64) {
        // Only `oldest` matters here: entries before it are gone to us. (The
        // head is not known, and must not read as a log that went back.)
        let state = LogState {
            epoch: self.epoch(),
            head: u64::MAX,
            oldest: Some(through + 1),
        };
        let ticket = self.hub.resync_ticket();
        if let Resync::Lost { through } = self.hub.resync(state, ticket, clock::now_us()) {
            tracing::warn!(
                through,
                "live messages could not be read back from the stream; this instance's streams were told with tidings.gap"
            );
        }
    }

    async fn try_rescan(&mut self) {
        if !self.rescan || self.disconnected {
            return;
        }
        match self.rescan_once().await {
            Ok(()) => self.rescan = false,
            Err(e) => tracing::debug!(error = %e, "rescan failed; retrying"),
        }
    }

    /// Reads from the stream what live delivery may have missed since this
    /// instance's position, merges it with the live entries held meanwhile
    /// and feeds everything in order.
    async fn rescan_once(&mut self) -> Result<(), String> {
        let after = self.hub.position().seq;
        let head = self.stream.head().await?;
        let cover: Vec<Pattern> = self.subscribers.keys().cloned().collect();
        let found = self
            .stream
            .replay(&cover, after, head.last_seq, MAX_RESCAN)
            .await?;
        if found.truncated {
            self.declare_lost(head.last_seq);
            self.held.retain(|e| e.seq > head.last_seq);
        } else if !found.entries.is_empty() {
            self.health
                .refetches
                .fetch_add(found.entries.len() as u64, Relaxed);
        }
        let mut merged = std::mem::take(&mut self.held);
        let live: HashSet<u64> = merged.iter().map(|e| e.seq).collect();
        let fetched: Vec<StreamEntry> = if found.truncated {
            Vec::new()
        } else {
            found
                .entries
                .into_iter()
                .filter(|e| !live.contains(&e.seq))
                .collect()
        };
        merged.extend(fetched);
        merged.sort_by_key(|e| e.seq);
        // Fetched entries carry no previous sequence: on each topic, the
        // first one after this instance's position starts its chain again
        // (the scan covered everything after it), later ones follow it.
        let mut last_on: HashMap<Topic, u64> = HashMap::new();
        let mut restart: HashSet<Topic> = HashSet::new();
        for entry in &mut merged {
            match (entry.prev, last_on.get(&entry.topic)) {
                (None, Some(&previous)) => entry.prev = Some(previous),
                (None, None) => {
                    restart.insert(entry.topic.clone());
                    entry.prev = Some(0);
                }
                _ => {}
            }
            last_on.insert(entry.topic.clone(), entry.seq);
        }
        if !restart.is_empty() {
            self.hub.forget_chains(|t| !restart.contains(t));
        }
        self.deliver(merged).await;
        Ok(())
    }

    /// Feeds entries (in stream order) into the hub, repairing broken
    /// per-subject chains with direct gets.
    async fn deliver(&self, entries: Vec<StreamEntry>) {
        if entries.is_empty() {
            return;
        }
        {
            let mut watch = self.watch.lock();
            for entry in &entries {
                watch.saw(entry.seq);
            }
        }
        let messages: Vec<Outgoing> = entries.iter().map(outgoing).collect();
        let floors = self.floors(&entries);
        let mut start = 0;
        while start < entries.len() {
            let log_entries: Vec<LogEntry<'_>> = entries[start..]
                .iter()
                .zip(&messages[start..])
                .zip(&floors[start..])
                .map(|((e, m), &floor)| self.log_entry(e, m, floor))
                .collect();
            let fed = self.hub.feed(&log_entries, clock::now_us());
            if fed.gaps > 0 {
                tracing::warn!("this instance's streams were told tidings.gap");
            }
            let Some((index, after, prev)) = fed.missing else {
                return;
            };
            let at = start + index;
            self.repair(&entries[at].topic, after, prev).await;
            start = at;
        }
    }

    /// For each entry that would start its topic's chain here, where this
    /// instance's interest in the topic began: the earliest start of a
    /// subscribed pattern matching it. A live message whose previous one on
    /// its topic came after that was lost on the way, and nothing else
    /// would show it (the chain starts at what arrived). `u64::MAX` for the
    /// others, and where the previous one is not known.
    fn floors(&self, entries: &[StreamEntry]) -> Vec<u64> {
        let mut in_batch: HashSet<&Topic> = HashSet::new();
        entries
            .iter()
            .map(|e| {
                let starts = e.prev.is_some()
                    && in_batch.insert(&e.topic)
                    && self.hub.chain(&e.topic).is_none();
                if !starts {
                    return u64::MAX;
                }
                self.since
                    .iter()
                    .filter(|(pattern, _)| pattern.matches(&e.topic))
                    .map(|(_, &since)| since)
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    fn log_entry<'a>(
        &self,
        entry: &'a StreamEntry,
        message: &'a Outgoing,
        floor: u64,
    ) -> LogEntry<'a> {
        LogEntry {
            id: MessageId::new(self.epoch(), entry.seq),
            chain: Chain::Topic {
                topic: &entry.topic,
                // Unknown: the hub asks for what may be missing before it.
                prev: entry.prev.unwrap_or(entry.seq.saturating_sub(1)),
                floor,
            },
            message,
            published_us: clock::from_unix_micros(entry.accepted_us),
        }
    }

    /// Fetches `topic`'s entries `after + 1 ..= prev` and feeds them; when
    /// the stream no longer has them all, or later messages were delivered
    /// already, its streams are told `tidings.gap`.
    async fn repair(&self, topic: &Topic, after: u64, prev: u64) {
        let filter = self.stream.subjects().stored(topic);
        let mut fetched = Vec::new();
        let mut from = after + 1;
        let complete = loop {
            match self.stream.next_matching(&filter, from).await {
                Ok(Some(entry)) if entry.seq <= prev => {
                    from = entry.seq + 1;
                    fetched.push(entry);
                }
                Ok(_) => break fetched.last().is_some_and(|e| e.seq == prev),
                Err(e) => {
                    tracing::warn!(error = %e, %topic, "cannot fetch missed messages from the stream");
                    break false;
                }
            }
        };
        let trimmed = match self.stream.head().await {
            Ok(head) => head.first_seq > after + 1,
            Err(_) => true,
        };
        let position = self.hub.position().seq;
        let in_order = fetched.first().is_some_and(|e| e.seq > position);
        if complete && !trimmed && in_order {
            self.health
                .refetches
                .fetch_add(fetched.len() as u64, Relaxed);
            let mut previous = after;
            for entry in &mut fetched {
                entry.prev = Some(previous);
                previous = entry.seq;
            }
            {
                let mut watch = self.watch.lock();
                for entry in &fetched {
                    watch.saw(entry.seq);
                }
            }
            let messages: Vec<Outgoing> = fetched.iter().map(outgoing).collect();
            let log_entries: Vec<LogEntry<'_>> = fetched
                .iter()
                .zip(&messages)
                .map(|(e, m)| self.log_entry(e, m, u64::MAX))
                .collect();
            let _ = self.hub.feed(&log_entries, clock::now_us());
        } else {
            tracing::warn!(
                %topic, after, prev, complete, trimmed, in_order,
                "messages of a topic were missed live and cannot be delivered in order; its streams were told tidings.gap"
            );
            self.hub.give_up(topic, prev, clock::now_us());
        }
    }
}

/// The message of a stream entry (type and exclusion read leniently).
pub(super) fn outgoing(entry: &StreamEntry) -> Outgoing {
    let event_type = EventType::from_log(&entry.event_type).unwrap_or(EventType::MESSAGE);
    let mut message = Outgoing::new(
        entry.topic.clone(),
        event_type,
        String::from_utf8_lossy(&entry.data).into_owned(),
    );
    message.exclude = entry
        .exclude
        .as_deref()
        .and_then(|c| c.parse::<ConnectionId>().ok());
    message
}

/// The stored messages on `filter` in `after + 1 ..= through`, one direct
/// get each, at most [`MAX_RESCAN`] + 1 (more means the walk was cut).
async fn walk_subject(
    stream: Stream,
    filter: String,
    after: u64,
    through: u64,
) -> Result<Vec<StreamEntry>, String> {
    let mut entries = Vec::new();
    let mut from = after.saturating_add(1);
    while from <= through && entries.len() <= MAX_RESCAN {
        let Some(entry) = stream.next_matching(&filter, from).await? else {
            break;
        };
        if entry.seq > through {
            break;
        }
        from = entry.seq + 1;
        entries.push(entry);
    }
    Ok(entries)
}

/// Waits until a subscription has a message, then takes everything every
/// subscription has until a full pass finds nothing more.
async fn next_batch(
    subscribers: &mut HashMap<Pattern, async_nats::Subscriber>,
) -> Vec<async_nats::Message> {
    // No coop budget: a spurious "pending" would break the ordering proof.
    tokio::task::unconstrained(std::future::poll_fn(|cx| poll_batch(subscribers, cx))).await
}

fn poll_batch(
    subscribers: &mut HashMap<Pattern, async_nats::Subscriber>,
    cx: &mut Context<'_>,
) -> Poll<Vec<async_nats::Message>> {
    let mut batch = Vec::new();
    loop {
        let before = batch.len();
        for subscriber in subscribers.values_mut() {
            while let Poll::Ready(Some(msg)) = Pin::new(&mut *subscriber).poll_next(cx) {
                batch.push(msg);
            }
        }
        if batch.len() == before {
            break;
        }
    }
    if batch.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(batch)
    }
}
