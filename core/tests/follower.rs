//! The follower's promises on virtual time, without Redis or sockets: a
//! model of a shared log (epochs, trimming, restarts) and instances whose
//! hubs follow it the way the engine drivers do. Every message a publisher
//! was told is accepted reaches every live stream, or that stream is told
//! `tidings.gap`; resumes that cannot be proven continuous are told too.

use tidings_core::{
    broker::Placement,
    hub::{Fed, HubConfig, LogEntry, SyncHub},
    log::{Chain, GapReason, LogState, Resync},
    message::{ConnectionId, Epoch, EventType, IdempotencyKey, MessageId, Outgoing},
    topic::{Pattern, Topic},
};

/// A shared log as an engine keeps it: one epoch, entries numbered from 1,
/// the oldest ones trimmed away, all lost when it "restarts".
struct SharedLog {
    epoch: Epoch,
    next_epoch: u64,
    head: u64,
    entries: Vec<(u64, Outgoing)>,
}

impl SharedLog {
    fn new() -> Self {
        Self {
            epoch: Epoch::from_random(1),
            next_epoch: 2,
            head: 0,
            entries: Vec::new(),
        }
    }
    fn append(&mut self, topic: &str, data: &str) -> MessageId {
        self.head += 1;
        let message = Outgoing::new(Topic::new(topic).unwrap(), EventType::MESSAGE, data);
        self.entries.push((self.head, message));
        MessageId::new(self.epoch, self.head)
    }
    fn trim_through(&mut self, seq: u64) {
        self.entries.retain(|(s, _)| *s > seq);
    }
    /// Lost everything (restarted without persistence): a new epoch.
    fn restart_empty(&mut self) {
        self.epoch = Epoch::from_random(self.next_epoch);
        self.next_epoch += 1;
        self.head = 0;
        self.entries.clear();
    }
    /// Came back from an older copy: the same epoch, fewer entries.
    fn restore_older(&mut self, head: u64) {
        self.head = head;
        self.entries.retain(|(s, _)| *s <= head);
    }
    /// What a driver does on `WentBack`: make the engine start over.
    fn bump_epoch(&mut self) {
        self.epoch = Epoch::from_random(self.next_epoch);
        self.next_epoch += 1;
        self.head = 0;
        self.entries.clear();
    }
    fn state(&self) -> LogState {
        LogState {
            epoch: self.epoch,
            head: self.head,
            oldest: self.entries.first().map(|(s, _)| *s),
        }
    }
}

/// One instance: its hub and where its reader stands in the log.
struct Instance {
    hub: SyncHub,
}

impl Instance {
    fn join(log: &SharedLog) -> Self {
        let oldest = log.entries.first().map_or(log.head, |(s, _)| s - 1);
        let instance = Self {
            hub: SyncHub::new(HubConfig::default(), log.epoch, oldest),
        };
        instance.catch_up(log);
        instance
    }

    /// Reads up to `max` entries after the hub's position (as `XREAD` does).
    fn read(&self, log: &SharedLog, max: usize) -> Fed {
        let position = self.hub.position();
        let from = if position.epoch == log.epoch {
            position.seq
        } else {
            0
        };
        let entries: Vec<LogEntry<'_>> = log
            .entries
            .iter()
            .filter(|(s, _)| *s > from)
            .take(max)
            .map(|(seq, message)| LogEntry {
                id: MessageId::new(log.epoch, *seq),
                chain: Chain::Log,
                message,
                published_us: 0,
            })
            .collect();
        self.hub.feed(&entries, 0)
    }

    fn catch_up(&self, log: &SharedLog) {
        let fed = self.read(log, usize::MAX);
        assert_eq!(fed.missing, None);
    }

    /// Reconnects: resyncs with the log's state, then reads.
    fn reconnect(&self, log: &mut SharedLog) -> Resync {
        let mut decision = self.hub.resync(log.state(), self.hub.resync_ticket(), 0);
        if let Resync::WentBack { .. } = decision {
            log.bump_epoch();
            decision = self.hub.resync(log.state(), self.hub.resync_ticket(), 0);
        }
        self.catch_up(log);
        decision
    }

    fn stream(&self, pattern: &str, resume: Option<&str>) -> Stream {
        let placement = self.hub.place(resume).confirm_ahead(0);
        let (sub, subscribed) = self.hub.subscribe(
            &[Pattern::new(pattern).unwrap()],
            placement,
            Some(ConnectionId::from_random(rand_bits())),
        );
        Stream {
            sub,
            gap: subscribed.gap,
            position: subscribed.position,
            frames: Vec::new(),
        }
    }
}

fn rand_bits() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed).into()
}

struct Stream {
    sub: tidings_core::hub::FrameSubscription<parking_lot::RawMutex>,
    gap: Option<GapReason>,
    position: MessageId,
    frames: Vec<String>,
}

impl Stream {
    /// Everything written to the stream so far: data of messages, `GAP` for
    /// a gap notice.
    fn take(&mut self) -> &[String] {
        let mut got = Vec::new();
        self.sub.try_recv_many(&mut got, usize::MAX).unwrap();
        for frame in got {
            let text = String::from_utf8(frame.payload().bytes.to_vec()).unwrap();
            if text.contains("event: tidings.gap") {
                self.frames.push("GAP".into());
            } else {
                let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                self.frames.push(data.to_owned());
            }
        }
        &self.frames
    }
}

fn publish(log: &mut SharedLog, n: std::ops::Range<u32>) -> Vec<MessageId> {
    n.map(|i| log.append("room:1", &i.to_string())).collect()
}

fn data(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

#[test]
fn an_instance_behind_when_the_engine_restarts_empty_tells_its_streams() {
    // The finding 1: B was paused, Redis restarted empty, B
    // resumed: messages A delivered never reached B's streams, silently.
    let mut log = SharedLog::new();
    let a = Instance::join(&log);
    let b = Instance::join(&log);
    let mut on_a = a.stream("room:>", None);
    let mut on_b = b.stream("room:>", None);
    publish(&mut log, 0..10);
    a.catch_up(&log);
    b.catch_up(&log);
    // B pauses; 5 more are accepted and read by A only.
    publish(&mut log, 10..15);
    a.catch_up(&log);
    log.restart_empty();
    // A reconnects first and the log goes on in the new epoch.
    assert!(matches!(a.reconnect(&mut log), Resync::NewEpoch { .. }));
    publish(&mut log, 15..18);
    a.catch_up(&log);
    // B wakes up and reconnects.
    assert!(matches!(
        b.reconnect(&mut log),
        Resync::NewEpoch { floor: 0, .. }
    ));
    let mut want_a = data(0..15);
    want_a.push("GAP".into());
    want_a.extend(data(15..18));
    assert_eq!(on_a.take(), want_a);
    let mut want_b = data(0..10);
    want_b.push("GAP".into()); // 10..15 were accepted but B cannot get them
    want_b.extend(data(15..18));
    assert_eq!(on_b.take(), want_b);
    // A client of B resuming from before the restart is told too.
    let resumed = b.stream("room:>", Some(&on_b.position.to_string()));
    assert_eq!(resumed.gap, Some(GapReason::UnknownEpoch));
}

#[test]
fn entries_trimmed_under_a_live_reader_are_announced() {
    let mut log = SharedLog::new();
    let b = Instance::join(&log);
    let mut stream = b.stream("room:>", None);
    publish(&mut log, 0..5);
    b.catch_up(&log);
    // B falls behind by more than the log keeps.
    publish(&mut log, 5..30);
    log.trim_through(20);
    let fed = b.read(&log, usize::MAX);
    assert_eq!((fed.delivered, fed.gaps), (10, 1));
    let mut want = data(0..5);
    want.push("GAP".into());
    want.extend(data(20..30));
    assert_eq!(stream.take(), want);
    // Resuming from before the loss on this instance: a gap as well.
    let resumed = b.stream("room:>", Some(&MessageId::new(log.epoch, 5).to_string()));
    assert_eq!(resumed.gap, Some(GapReason::HistoryTrimmed));
    assert_eq!(resumed.position, MessageId::new(log.epoch, 20));
}

#[test]
fn trimmed_while_disconnected_is_found_on_reconnect() {
    let mut log = SharedLog::new();
    let b = Instance::join(&log);
    let mut stream = b.stream("room:>", None);
    publish(&mut log, 0..3);
    b.catch_up(&log);
    publish(&mut log, 3..10);
    log.trim_through(6);
    assert_eq!(b.reconnect(&mut log), Resync::Lost { through: 6 });
    let mut want = data(0..3);
    want.push("GAP".into());
    want.extend(data(6..10));
    assert_eq!(stream.take(), want);
}

#[test]
fn an_epoch_change_while_disconnected_is_found_on_reconnect_and_in_entries() {
    let mut log = SharedLog::new();
    let b = Instance::join(&log);
    let mut stream = b.stream("room:>", None);
    publish(&mut log, 0..3);
    b.catch_up(&log);
    log.restart_empty();
    publish(&mut log, 3..5);
    // Even without a resync (a reader that never noticed the restart),
    // the first entry of the new epoch says so.
    let fed = b.read(&log, usize::MAX);
    assert_eq!((fed.delivered, fed.gaps), (2, 1));
    let mut want = data(0..3);
    want.push("GAP".into());
    want.extend(data(3..5));
    assert_eq!(stream.take(), want);
    assert_eq!(b.reconnect(&mut log), Resync::Continue);
}

#[test]
fn a_log_that_went_back_gets_a_new_epoch_so_ids_are_never_reused() {
    let mut log = SharedLog::new();
    let b = Instance::join(&log);
    let mut stream = b.stream("room:>", None);
    publish(&mut log, 0..10);
    b.catch_up(&log);
    let seen = b.hub.position();
    // Restored from a copy taken at 7: ids 8..10 would be reused.
    log.restore_older(7);
    assert!(matches!(b.reconnect(&mut log), Resync::NewEpoch { .. }));
    let next = publish(&mut log, 10..11)[0];
    assert_ne!(next.epoch, seen.epoch, "a new epoch, never id {seen} again");
    b.catch_up(&log);
    let mut want = data(0..10);
    want.push("GAP".into());
    want.extend(data(10..11));
    assert_eq!(stream.take(), want);
}

#[test]
fn an_acknowledged_publish_the_log_lost_counts_as_went_back() {
    // The publish was acknowledged, then the log lost it before anyone read
    // it: the instance that acknowledged it notices.
    let mut log = SharedLog::new();
    let a = Instance::join(&log);
    let acked = log.append("room:1", "x");
    a.hub.note_acked(acked);
    log.restore_older(0);
    let decision = a.hub.resync(log.state(), a.hub.resync_ticket(), 0);
    assert_eq!(decision, Resync::WentBack { head: 0, seen: 1 });
}

#[test]
fn a_future_or_foreign_resume_id_gets_a_gap_and_is_never_silent() {
    // The finding 2, on a follower: a resume id the log has not
    // produced is not waited for forever.
    let mut log = SharedLog::new();
    let b = Instance::join(&log);
    publish(&mut log, 0..2);
    b.catch_up(&log);
    let subscribe = |b: &Instance, log: &SharedLog, resume: &str| {
        // The driver asks the engine's head before waiting for an id ahead.
        let placement = b.hub.place(Some(resume)).confirm_ahead(log.head);
        assert!(matches!(placement, Placement::Unplaceable(_)), "{resume}");
        let (sub, subscribed) =
            b.hub
                .subscribe(&[Pattern::new("room:>").unwrap()], placement, None);
        Stream {
            sub,
            gap: subscribed.gap,
            position: subscribed.position,
            frames: Vec::new(),
        }
    };
    // Ahead of everything the log produced: what it retains is what the
    // client claims to have; it gets the gap, then live messages.
    let mut future = subscribe(&b, &log, &MessageId::new(log.epoch, 50_000).to_string());
    assert_eq!(future.gap, Some(GapReason::FutureId));
    // Another epoch (the log restarted since) or not an id at all (`0-0`,
    // an old-format id): everything retained came after what it had.
    let mut foreign = subscribe(&b, &log, "1795442515733-0");
    assert_eq!(foreign.gap, Some(GapReason::UnknownEpoch));
    let mut garbage = subscribe(&b, &log, "0-0");
    assert_eq!(garbage.gap, Some(GapReason::UnknownId));
    publish(&mut log, 2..3);
    b.catch_up(&log);
    assert_eq!(future.take(), data(2..3));
    assert_eq!(foreign.take(), data(0..3));
    assert_eq!(garbage.take(), data(0..3));
    assert_eq!(garbage.position, MessageId::new(log.epoch, 0));
}

#[test]
fn per_topic_chains_ask_for_missing_entries_before_declaring_a_gap() {
    let e = Epoch::from_random(5);
    let hub = SyncHub::new(HubConfig::default(), e, 0);
    let (mut sub, _) = hub.subscribe(&[Pattern::new("t:>").unwrap()], Placement::Live, None);
    let a = Topic::new("t:a").unwrap();
    let m = Outgoing::new(a.clone(), EventType::MESSAGE, "1");
    let entry = |seq, prev| LogEntry {
        id: MessageId::new(e, seq),
        chain: Chain::Topic {
            topic: &a,
            prev,
            floor: u64::MAX,
        },
        message: &m,
        published_us: 0,
    };
    assert_eq!(hub.feed(&[entry(3, 0)], 0).delivered, 1);
    // 7 says its predecessor on t:a is 5, which this instance never saw.
    let fed = hub.feed(&[entry(7, 5)], 0);
    assert_eq!(fed.missing, Some((0, 3, 5)));
    // The driver fetches 5 and feeds it, then the rest: no gap.
    assert_eq!(hub.feed(&[entry(5, 3), entry(7, 5)], 0).delivered, 2);
    // Next time the engine no longer has the missing one: a gap.
    assert!(hub.feed(&[entry(12, 10)], 0).missing.is_some());
    hub.give_up(&a, 10, 0);
    assert_eq!(hub.feed(&[entry(12, 10)], 0).delivered, 1);
    let mut got = Vec::new();
    sub.try_recv_many(&mut got, 10).unwrap();
    let gaps = got
        .iter()
        .filter(|f| {
            f.payload()
                .bytes
                .starts_with(b"id: 5-10\nevent: tidings.gap")
        })
        .count();
    assert_eq!((got.len(), gaps), (5, 1));
}

/// A topic's first entry here says its predecessor came after this
/// instance's interest began: that one was missed live, and nothing else
/// would ever show it (the chain starts at the entry that arrived).
#[test]
fn a_chain_that_starts_above_its_floor_asks_for_what_came_before() {
    let e = Epoch::from_random(5);
    let hub = SyncHub::new(HubConfig::default(), e, 0);
    let (mut sub, _) = hub.subscribe(&[Pattern::new("t:>").unwrap()], Placement::Live, None);
    let (a, b) = (Topic::new("t:a").unwrap(), Topic::new("t:b").unwrap());
    let (ma, mb) = (
        Outgoing::new(a.clone(), EventType::MESSAGE, "a"),
        Outgoing::new(b.clone(), EventType::MESSAGE, "b"),
    );
    let entry = |topic, message, seq, prev, floor| LogEntry {
        id: MessageId::new(e, seq),
        chain: Chain::Topic { topic, prev, floor },
        message,
        published_us: 0,
    };
    // Interest since 10. t:a's predecessor (8) came before it: not ours.
    assert_eq!(hub.feed(&[entry(&a, &ma, 12, 8, 10)], 0).delivered, 1);
    // t:b's predecessor (11) came after it and never arrived.
    let fed = hub.feed(&[entry(&b, &mb, 14, 11, 10)], 0);
    assert_eq!(fed.missing, Some((0, 10, 11)));
    // Fetched: 11 can no longer come in order (12 went out), so t:b's
    // streams are told, then 14 is delivered.
    hub.give_up(&b, 11, 0);
    assert_eq!(hub.feed(&[entry(&b, &mb, 14, 11, 10)], 0).delivered, 1);
    // An unknown floor starts the chain as it is.
    let c = Topic::new("t:c").unwrap();
    let mc = Outgoing::new(c.clone(), EventType::MESSAGE, "c");
    assert_eq!(
        hub.feed(&[entry(&c, &mc, 20, 18, u64::MAX)], 0).delivered,
        1
    );
    let mut got = Vec::new();
    sub.try_recv_many(&mut got, 10).unwrap();
    let kinds: Vec<&[u8]> = got
        .iter()
        .map(|f| &f.payload().bytes[..f.payload().bytes.len().min(12)])
        .collect();
    assert_eq!(got.len(), 4, "{kinds:?}");
    assert!(
        got[1]
            .payload()
            .bytes
            .windows(17)
            .any(|w| w == b"event: tidings.ga"),
        "{kinds:?}"
    );
}

#[test]
fn idempotent_publish_in_memory_mode() {
    let hub = SyncHub::new(
        HubConfig::default().idempotency_window_us(1_000),
        Epoch::from_random(3),
        0,
    );
    let (mut sub, _) = hub.subscribe(&[Pattern::new("a").unwrap()], Placement::Live, None);
    let mut m = Outgoing::new(Topic::new("a").unwrap(), EventType::MESSAGE, "1");
    m.idempotency_key = Some(IdempotencyKey::new("k").unwrap());
    let first = hub.publish(std::slice::from_ref(&m), 0).unwrap()[0];
    let again = hub.publish(std::slice::from_ref(&m), 500).unwrap()[0];
    assert_eq!((again.id, again.repeat), (first.id, true));
    // Same key, different message: refused, nothing published.
    let mut other = m.clone();
    other.data = "2".into();
    let refused = hub.publish(&[other.clone()], 600).unwrap_err();
    assert_eq!(refused.original, Some(first.id));
    // A retry inside one batch repeats the first; after the window, new.
    let batch = hub.publish(&[other.clone(), other.clone()], 2_000).unwrap();
    assert_eq!(
        batch[1],
        tidings_core::hub::Accepted {
            id: batch[0].id,
            repeat: true
        }
    );
    let mut got = Vec::new();
    sub.try_recv_many(&mut got, 10).unwrap();
    assert_eq!(got.len(), 2, "each message delivered once");
}

#[test]
fn a_publish_acknowledged_while_the_state_was_asked_for_is_not_a_loss() {
    // The reader asks for the log's state; before the answer is judged, a
    // publish of this instance (executed by the log after the question) is
    // acknowledged. The answer does not hold it yet: that is not a log that
    // went back, and no epoch must be started for it.
    let mut log = SharedLog::new();
    let a = Instance::join(&log);
    let ticket = a.hub.resync_ticket();
    let state = log.state();
    let acked = log.append("room:1", "x");
    a.hub.note_acked(acked);
    assert_eq!(a.hub.resync(state, ticket, 0), Resync::Continue);
    // And it is then read and delivered like any entry.
    let mut stream = a.stream("room:>", None);
    a.catch_up(&log);
    assert_eq!(stream.take(), ["x"]);
    assert_eq!(a.hub.position(), acked);
}

#[test]
fn a_hole_found_behind_the_position_tells_the_streams_of_that_topic() {
    // Per-topic chains (JetStream): t:a's entry 5 was lost live, t:b's 6
    // was delivered, then t:a's 7 reveals the hole. 5 can no longer be
    // delivered in order: the streams of t:a are told, t:b's are not.
    let e = Epoch::from_random(6);
    let hub = SyncHub::new(HubConfig::default(), e, 0);
    let (mut on_a, _) = hub.subscribe(&[Pattern::new("t:a").unwrap()], Placement::Live, None);
    let (mut on_b, _) = hub.subscribe(&[Pattern::new("t:b").unwrap()], Placement::Live, None);
    let (a, b) = (Topic::new("t:a").unwrap(), Topic::new("t:b").unwrap());
    let (ma, mb) = (
        Outgoing::new(a.clone(), EventType::MESSAGE, "a"),
        Outgoing::new(b.clone(), EventType::MESSAGE, "b"),
    );
    let entry = |topic, message, seq, prev| LogEntry {
        id: MessageId::new(e, seq),
        chain: Chain::Topic {
            topic,
            prev,
            floor: u64::MAX,
        },
        message,
        published_us: 0,
    };
    let fed = hub.feed(&[entry(&a, &ma, 3, 0), entry(&b, &mb, 6, 0)], 0);
    assert_eq!(fed.delivered, 2);
    let fed = hub.feed(&[entry(&a, &ma, 7, 5)], 0);
    assert_eq!(fed.missing, Some((0, 3, 5)));
    hub.give_up(&a, 5, 0);
    assert_eq!(hub.feed(&[entry(&a, &ma, 7, 5)], 0).delivered, 1);
    let text = |sub: &mut tidings_core::hub::FrameSubscription<parking_lot::RawMutex>| {
        let mut got = Vec::new();
        sub.try_recv_many(&mut got, 10).unwrap();
        got.iter()
            .map(|f| String::from_utf8_lossy(&f.payload().bytes).into_owned())
            .collect::<Vec<_>>()
    };
    let got_a = text(&mut on_a);
    assert_eq!(got_a.len(), 3, "{got_a:?}");
    assert!(got_a[0].starts_with("id: 6-3\n"));
    assert!(
        got_a[1].starts_with("id: 6-6\nevent: tidings.gap"),
        "{got_a:?}"
    );
    assert!(got_a[2].starts_with("id: 6-7\n"));
    assert_eq!(text(&mut on_b).len(), 1, "t:b's stream is not told");
    // A chain forgotten starts again at its next entry, without a check.
    hub.forget_chains(|t| t != &a);
    assert_eq!(hub.feed(&[entry(&a, &ma, 9, 8)], 0).delivered, 1);
}

/// A run of entries reports how many messages it queued (each entry once
/// per matching stream) and how many streams it woke: each waiting stream
/// once, however many of the entries it got; a stream not waiting (or not
/// matching) is not counted as woken.
#[test]
fn a_fed_run_counts_what_it_queued_and_the_streams_it_woke() {
    let e = Epoch::from_random(5);
    let hub = SyncHub::new(HubConfig::default(), e, 0);
    let t = Topic::new("t:a").unwrap();
    let m = Outgoing::new(t.clone(), EventType::MESSAGE, "1");
    let mut waiting: Vec<_> = (0..3)
        .map(|_| {
            hub.subscribe(&[Pattern::new("t:>").unwrap()], Placement::Live, None)
                .0
        })
        .collect();
    let (_other, _) = hub.subscribe(&[Pattern::new("u").unwrap()], Placement::Live, None);
    let (_not_polled, _) = hub.subscribe(&[Pattern::new("t:a").unwrap()], Placement::Live, None);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for sub in &mut waiting {
        let mut got = Vec::new();
        assert!(sub.poll_recv_many(&mut cx, &mut got, 10).is_pending());
    }
    let entry = |seq| LogEntry {
        id: MessageId::new(e, seq),
        chain: Chain::Log,
        message: &m,
        published_us: 0,
    };
    let fed = hub.feed(&[entry(1), entry(2)], 0);
    // Queued for the three waiting and the one never polled, twice.
    assert_eq!((fed.delivered, fed.queued, fed.woken), (2, 8, 3));
}
