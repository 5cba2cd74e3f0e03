//! The broker's promises: fan-out, exclusion, RAII unsubscribe, bounded
//! history with replay and gap signals, and lag instead of loss.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use tidings_core::{
    broker::{
        Broker, BrokerConfig, Drain, HistoryLimits, Placement, PublishError, RecvError,
        SharedMessage, SyncBroker,
    },
    log::GapReason,
    message::{ConnectionId, Epoch, MessageId},
    topic::{Pattern, Topic},
};

fn t(s: &str) -> Topic {
    Topic::new(s).unwrap()
}
fn p(s: &str) -> Pattern {
    Pattern::new(s).unwrap()
}
const EPOCH: Epoch = Epoch::from_random(100);
fn id(seq: u64) -> MessageId {
    MessageId::new(EPOCH, seq)
}
fn broker(config: BrokerConfig) -> Broker<u64> {
    Broker::new(config, EPOCH, 0)
}
/// Where a client resuming from `id` starts, as the server decides it.
fn resume<M>(b: &Broker<M>, id: MessageId) -> Placement {
    b.place(Some(&id.to_string()))
}
fn conn(n: u128) -> ConnectionId {
    ConnectionId::from_random(n)
}
fn drain_all(b: &mut Broker<u64>, id: tidings_core::broker::SubscriptionId) -> Vec<u64> {
    let mut out: Vec<SharedMessage<u64>> = Vec::new();
    while let Drain::Ready(_) = b.drain(id, &mut out, 7) {}
    out.iter().map(|m| *m.payload()).collect()
}

#[test]
fn ids_count_up_from_the_floor_in_the_broker_epoch() {
    let mut b = broker(BrokerConfig::default());
    let first = b.publish(t("a"), 1, None).id;
    let second = b.publish(t("b"), 2, None).id;
    assert_eq!(first, id(1));
    assert_eq!(second, id(2));
    assert_eq!(b.position(), second);
}

#[test]
fn fan_out_reaches_every_matching_subscription_once() {
    let mut b = broker(BrokerConfig::default());
    let exact = b.subscribe(&[p("order:acme:1")], Placement::Live, None).id;
    let star = b.subscribe(&[p("order:*:1")], Placement::Live, None).id;
    let tail = b.subscribe(&[p("order:>")], Placement::Live, None).id;
    let overlapping = b
        .subscribe(
            &[p("order:>"), p("order:acme:*"), p("order:acme:1")],
            Placement::Live,
            None,
        )
        .id;
    let other = b
        .subscribe(&[p("order:globex:>")], Placement::Live, None)
        .id;
    let published = b.publish(t("order:acme:1"), 7, None);
    assert_eq!(published.delivered, 4);
    for id in [exact, star, tail, overlapping] {
        assert_eq!(drain_all(&mut b, id), [7]);
    }
    assert_eq!(drain_all(&mut b, other), Vec::<u64>::new());
}

#[test]
fn messages_arrive_in_publish_order() {
    let mut b = broker(BrokerConfig::default());
    let s = b.subscribe(&[p("x:>")], Placement::Live, None).id;
    for i in 0..100 {
        b.publish(t(if i % 2 == 0 { "x:a" } else { "x:b" }), i, None);
    }
    assert_eq!(drain_all(&mut b, s), (0..100).collect::<Vec<_>>());
}

#[test]
fn exclude_skips_only_the_sender() {
    let mut b = broker(BrokerConfig::default());
    let ann = b
        .subscribe(&[p("quiz:r1:>")], Placement::Live, Some(conn(1)))
        .id;
    let bob = b
        .subscribe(&[p("quiz:r1:>")], Placement::Live, Some(conn(2)))
        .id;
    let published = b.publish(t("quiz:r1:joined"), 1, Some(conn(1)));
    assert_eq!(published.delivered, 1);
    assert_eq!(drain_all(&mut b, ann), Vec::<u64>::new());
    assert_eq!(drain_all(&mut b, bob), [1]);
    // Unsubscribing undoes the registration: the id excludes nobody new.
    assert!(b.unsubscribe(ann));
    let carol = b.subscribe(&[p("quiz:r1:>")], Placement::Live, None).id;
    assert_ne!(carol, ann, "ids are not reused for a different subscriber");
    b.publish(t("quiz:r1:joined"), 2, Some(conn(1)));
    assert_eq!(drain_all(&mut b, carol), [2]);
    // An unknown connection (another instance's) excludes nobody here.
    assert_eq!(
        b.publish(t("quiz:r1:joined"), 3, Some(conn(9))).delivered,
        2
    );
}

#[test]
fn unsubscribe_is_idempotent_and_leaks_nothing() {
    let mut b = broker(BrokerConfig::default().history(HistoryLimits {
        per_topic: 0,
        ..HistoryLimits::default()
    }));
    let ids: Vec<_> = (0..50)
        .map(|i| {
            b.subscribe(
                &[p(&format!("t:{i}:*")), p("t:>"), p(&format!("u:{i}"))],
                Placement::Live,
                None,
            )
            .id
        })
        .collect();
    b.publish(t("t:1:x"), 1, None);
    for id in &ids {
        assert!(b.unsubscribe(*id));
        assert!(!b.unsubscribe(*id));
    }
    let stats = b.stats();
    assert_eq!(
        (stats.subscriptions, stats.patterns, stats.topics),
        (0, 0, 0)
    );
    assert_eq!(b.publish(t("t:1:x"), 2, None).delivered, 0);
}

#[test]
fn dropping_the_handle_unsubscribes() {
    let broker = SyncBroker::new(Broker::<u64>::new(BrokerConfig::default(), EPOCH, 0));
    let (mut sub, _) = broker.subscribe(&[p("a")], Placement::Live, Some(conn(1)));
    let (sub2, _) = broker.subscribe(&[p("a")], Placement::Live, None);
    assert_eq!(broker.lock().stats().subscriptions, 2);
    sub.close();
    sub.close();
    assert_eq!(
        sub.try_recv_many(&mut Vec::new(), 1),
        Err(RecvError::Closed)
    );
    drop(sub);
    drop(sub2);
    assert_eq!(broker.lock().stats().subscriptions, 0);
    assert_eq!(broker.lock().stats().patterns, 0);
}

#[test]
fn resume_replays_after_the_id_then_continues_live() {
    let mut b = broker(BrokerConfig::default());
    let ids: Vec<_> = (0..10)
        .map(|i| b.publish(t(&format!("r:{}", i % 3)), i, None).id)
        .collect();
    let s = b.subscribe(&[p("r:0"), p("r:*")], resume(&b, ids[4]), None);
    assert_eq!(s.gap, None);
    assert_eq!(s.replayed, 5);
    assert_eq!(
        s.position, ids[4],
        "the first frame resumes where the client was"
    );
    b.publish(t("r:1"), 10, None);
    assert_eq!(drain_all(&mut b, s.id), [5, 6, 7, 8, 9, 10]);
}

#[test]
fn resume_at_the_newest_id_replays_nothing() {
    let mut b = broker(BrokerConfig::default());
    let last = b.publish(t("a"), 1, None).id;
    let s = b.subscribe(&[p("a")], resume(&b, last), None);
    assert_eq!((s.gap, s.replayed), (None, 0));
}

#[test]
fn resume_before_evicted_history_is_a_gap() {
    let mut b = broker(BrokerConfig::default().history(HistoryLimits {
        per_topic: 3,
        ..HistoryLimits::default()
    }));
    let ids: Vec<_> = (0..6).map(|i| b.publish(t("a"), i, None).id).collect();
    let s = b.subscribe(&[p("a")], resume(&b, ids[1]), None);
    assert_eq!(
        s.gap,
        Some(GapReason::HistoryTrimmed),
        "message 2 was evicted"
    );
    assert_eq!(
        s.position, ids[2],
        "continuity holds again after the evicted one"
    );
    assert_eq!(drain_all(&mut b, s.id), [3, 4, 5]);
    let s = b.subscribe(&[p("a")], resume(&b, ids[2]), None);
    assert_eq!(s.gap, None, "everything after 2 is retained");
    // Another topic's eviction does not make a gap for this one.
    let s = b.subscribe(&[p("b")], resume(&b, ids[0]), None);
    assert_eq!(s.gap, None);
}

#[test]
fn resume_ids_the_broker_cannot_place_are_a_gap_then_live() {
    let mut b: Broker<u64> = Broker::new(BrokerConfig::default(), EPOCH, 10);
    b.publish(t("a"), 1, None);
    let live = |b: &mut Broker<u64>, text: &str| {
        let placement = b.place(Some(text));
        let s = b.subscribe(&[p("a")], placement, None);
        b.publish(t("a"), 9, None);
        (s.gap, drain_all(b, s.id), s.position)
    };
    let other_epoch = MessageId::new(Epoch::from_random(101), 11).to_string();
    assert_eq!(live(&mut b, &other_epoch).0, Some(GapReason::UnknownEpoch));
    // An id of the old `TIME-SEQ` format reads as an unknown epoch.
    assert_eq!(
        live(&mut b, "1795442515733-0").0,
        Some(GapReason::UnknownEpoch)
    );
    assert_eq!(live(&mut b, "garbage").0, Some(GapReason::UnknownId));
    // Ahead of the log: in one process that id cannot exist.
    let future = id(1_000).to_string();
    let placement = b.place(Some(&future)).confirm_ahead(b.position().seq);
    assert_eq!(placement, Placement::Unplaceable(GapReason::FutureId));
    let s = b.subscribe(&[p("a")], placement, None);
    assert_eq!(s.position, b.position(), "live from here");
    b.publish(t("a"), 7, None);
    assert_eq!(drain_all(&mut b, s.id), [7], "live messages still arrive");
    // Before what the broker has seen: a gap, with whatever it retains.
    let (gap, got, _) = live(&mut b, &id(3).to_string());
    assert_eq!(gap, Some(GapReason::HistoryTrimmed));
    assert_eq!(got.first(), Some(&1));
    // At the floor: nothing was missed.
    let s = b.subscribe(&[p("a")], resume(&b, id(10)), None);
    assert_eq!(s.gap, None);
}

#[test]
fn resume_ahead_confirmed_by_the_engine_awaits_the_shared_log() {
    let mut b = broker(BrokerConfig::default());
    b.publish_at(id(1), t("a"), 1, None).unwrap();
    // A client saw up to 3 on another instance; this one lags behind, and
    // the engine's head (5) says 3 exists.
    let placement = resume(&b, id(3)).confirm_ahead(5);
    assert_eq!(placement, Placement::Ahead(id(3)));
    let s = b.subscribe(&[p("a")], placement, None);
    assert_eq!((s.gap, s.position), (None, id(3)));
    for seq in 2..=4 {
        b.publish_at(id(seq), t("a"), seq, None).unwrap();
    }
    assert_eq!(
        drain_all(&mut b, s.id),
        [4],
        "no duplicate of what it already had"
    );
}

#[test]
fn publish_at_refuses_ids_that_do_not_increase_or_another_epoch() {
    let mut b = broker(BrokerConfig::default());
    b.publish_at(id(5), t("a"), 0, None).unwrap();
    assert!(matches!(
        b.publish_at(id(5), t("a"), 0, None),
        Err(PublishError::NotAfterLast { .. })
    ));
    assert!(matches!(
        b.publish_at(MessageId::new(Epoch::from_random(7), 9), t("a"), 0, None),
        Err(PublishError::OtherEpoch { .. })
    ));
    assert_eq!(b.publish(t("a"), 1, None).id, id(6));
}

#[test]
fn a_loss_is_announced_to_live_streams_and_to_later_resumes() {
    let mut b = broker(BrokerConfig::default());
    let before = b.publish(t("a"), 1, None).id;
    let live = b.subscribe(&[p("a")], Placement::Live, None).id;
    // This stream already saw past the loss on another instance.
    let ahead = b
        .subscribe(&[p("a")], resume(&b, id(9)).confirm_ahead(9), None)
        .id;
    // Entries 2..=4 were trimmed before this broker read them.
    assert_eq!(b.announce_loss(4, 100), 1);
    b.publish_at(id(5), t("a"), 5, None).unwrap();
    assert_eq!(drain_all(&mut b, live), [100, 5], "told, then the rest");
    assert_eq!(drain_all(&mut b, ahead), Vec::<u64>::new());
    let s = b.subscribe(&[p("a")], resume(&b, before), None);
    assert_eq!(s.gap, Some(GapReason::HistoryTrimmed));
    assert_eq!(s.position, id(4));
    let s = b.subscribe(&[p("a")], resume(&b, id(4)), None);
    assert_eq!(s.gap, None, "from the notice's id on, nothing is missing");
}

#[test]
fn a_new_epoch_tells_every_stream_and_forgets_the_old_one() {
    let mut b = broker(BrokerConfig::default());
    let old = b.publish(t("a"), 1, None).id;
    let s = b.subscribe(&[p("a"), p("b")], Placement::Live, None).id;
    let e2 = Epoch::from_random(200);
    assert_eq!(b.begin_epoch(e2, 0, 100), 1);
    b.publish_at(MessageId::new(e2, 1), t("b"), 2, None)
        .unwrap();
    assert_eq!(drain_all(&mut b, s), [100, 2]);
    assert_eq!(b.stats().retained, 1, "only the new epoch's message");
    let placement = resume(&b, old);
    assert_eq!(placement, Placement::Unplaceable(GapReason::UnknownEpoch));
}

#[test]
fn history_is_bounded_by_bytes_and_in_total() {
    let mut b: Broker<Vec<u8>> = Broker::new(
        BrokerConfig::default().history(HistoryLimits {
            per_topic: 100,
            per_topic_bytes: 1000,
            total: 50,
            total_bytes: 1 << 20,
        }),
        EPOCH,
        0,
    );
    for _ in 0..10 {
        b.publish(t("big"), vec![0; 300], None);
    }
    assert_eq!(b.stats().retained_bytes, 900);
    for i in 0..200 {
        b.publish(t(&format!("many:{i}")), vec![1], None);
    }
    let stats = b.stats();
    assert!(stats.retained <= 50, "{stats:?}");
    assert_eq!(
        stats.topics, stats.retained,
        "one message per topic, no empty topics kept"
    );
    // A pattern resume over forgotten topics must say it may have missed some.
    let placement = resume(&b, id(20));
    assert!(b.subscribe(&[p("many:>")], placement, None).gap.is_some());
}

#[test]
fn a_slow_subscriber_is_marked_lagged_and_others_keep_everything() {
    let mut b = broker(BrokerConfig::default().queue_capacity(4));
    let slow = b.subscribe(&[p("a")], Placement::Live, None).id;
    let fast = b.subscribe(&[p("a")], Placement::Live, None).id;
    let mut lagged = 0;
    for i in 0..10 {
        lagged += b.publish(t("a"), i, None).lagged;
        assert_eq!(drain_all(&mut b, fast), [i]);
    }
    assert_eq!(lagged, 1, "marked lagged once");
    assert_eq!(b.drain(slow, &mut Vec::new(), 10), Drain::Lagged);
    assert_eq!(b.pending(slow), 0, "its queue is freed");
    assert_eq!(b.stats().lagged, 1);
}

#[test]
fn wakes_deferred_under_a_lock_are_handed_over_not_lost() {
    let mut b = broker(BrokerConfig::default());
    let s = b.subscribe(&[p("a")], Placement::Live, None).id;
    let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(woken.clone());
    assert_eq!(b.drain(s, &mut Vec::new(), 8), Drain::Empty);
    b.register_waker(s, &waker);
    b.defer_wakes();
    b.publish(t("a"), 1, None);
    assert_eq!(
        woken.0.load(Ordering::SeqCst),
        0,
        "not woken under the lock"
    );
    let mut wakes = Vec::new();
    b.take_wakes(&mut wakes);
    assert_eq!(wakes.len(), 1);
    wakes.into_iter().for_each(Waker::wake);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    // Not deferring any more: the next wake is immediate.
    assert_eq!(b.drain(s, &mut Vec::new(), 8), Drain::Ready(1));
    b.register_waker(s, &waker);
    b.publish(t("a"), 2, None);
    assert_eq!(woken.0.load(Ordering::SeqCst), 2);
}

#[test]
fn close_all_ends_every_subscription_after_its_queue() {
    let mut b = broker(BrokerConfig::default());
    let s = b.subscribe(&[p("a")], Placement::Live, None).id;
    b.publish(t("a"), 1, None);
    b.close_all();
    b.publish(t("a"), 2, None);
    assert_eq!(drain_all(&mut b, s), [1]);
    assert_eq!(b.drain(s, &mut Vec::new(), 1), Drain::Closed);
}

struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_waiting_subscription_is_woken_once_per_batch() {
    let broker = SyncBroker::new(Broker::<u64>::new(BrokerConfig::default(), EPOCH, 0));
    let (mut sub, _) = broker.subscribe(&[p("a")], Placement::Live, None);
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    assert!(sub.poll_recv_many(&mut cx, &mut out, 10).is_pending());
    for i in 0..5 {
        broker.publish(t("a"), i, None);
    }
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        sub.poll_recv_many(&mut cx, &mut out, 10),
        Poll::Ready(Ok(5))
    );
}

#[test]
fn recv_then_listen_listens_only_once_the_queue_is_empty() {
    let broker = SyncBroker::new(Broker::<u64>::new(BrokerConfig::default(), EPOCH, 0));
    let (mut sub, _) = broker.subscribe(&[p("a")], Placement::Live, None);
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut out = Vec::new();
    for i in 0..3 {
        broker.publish(t("a"), i, None);
    }
    // Two of three: more wait, so nothing listens.
    assert_eq!(
        sub.recv_many_then_listen(&waker, &mut out, 2),
        Ok((2, false))
    );
    broker.publish(t("a"), 3, None);
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    // The rest, in the same lock as the listening: the next one wakes.
    assert_eq!(
        sub.recv_many_then_listen(&waker, &mut out, 8),
        Ok((2, true))
    );
    assert_eq!(
        out.iter().map(|m| *m.payload()).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    broker.publish(t("a"), 4, None);
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    // Nothing waiting: it listens and moves nothing.
    out.clear();
    assert_eq!(
        sub.recv_many_then_listen(&waker, &mut out, 8),
        Ok((1, true))
    );
    assert_eq!(
        sub.recv_many_then_listen(&waker, &mut out, 8),
        Ok((0, true))
    );
    sub.close();
    assert_eq!(
        sub.recv_many_then_listen(&waker, &mut out, 8),
        Err(RecvError::Closed)
    );
}

#[test]
fn resume_while_publishers_race_has_no_gap_and_no_duplicate() {
    // Publishers run on other threads while subscribers resume from ids
    // they saw; each subscriber must see a contiguous run of values.
    let total = 20_000u64;
    // Bounds above the run's size: this test is about ordering, not lag.
    let config = BrokerConfig::default()
        .queue_capacity(total as usize)
        .history(HistoryLimits {
            per_topic: total as usize,
            total: total as usize,
            ..HistoryLimits::default()
        });
    let broker = SyncBroker::new(Broker::<u64>::new(config, EPOCH, 0));
    let (mut watcher, _) = broker.subscribe(&[p("race")], Placement::Live, None);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..total {
                broker.publish(t("race"), i, None);
            }
        });
        let mut resumed = 0;
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let before = seen.len();
            watcher.try_recv_many(&mut seen, 64).expect("never lagged");
            if seen.len() > before && resumed < 50 {
                // Reconnect from the newest id seen, as a client would.
                let last = seen.last().unwrap().id();
                let placement = broker.lock().place(Some(&last.to_string()));
                let (sub, subscribed) = broker.subscribe(&[p("race")], placement, None);
                assert_eq!(subscribed.gap, None);
                watcher = sub;
                resumed += 1;
            }
        }
        let values: Vec<u64> = seen.iter().map(|m| *m.payload()).collect();
        assert_eq!(values, (0..total).collect::<Vec<_>>());
    });
}

#[test]
fn queues_are_bounded_in_bytes_too() {
    let mut b: Broker<Vec<u8>> = Broker::new(
        BrokerConfig::default()
            .queue_bytes(1_000)
            .total_queue_bytes(2_500),
        EPOCH,
        0,
    );
    let slow = b.subscribe(&[p("a")], Placement::Live, None).id;
    let fast = b.subscribe(&[p("a")], Placement::Live, None).id;
    // One message larger than the bound still reaches an empty queue.
    b.publish(t("a"), vec![0; 5_000], None);
    assert_eq!(b.stats().queued_bytes, 10_000);
    let mut out = Vec::new();
    assert_eq!(b.drain(fast, &mut out, 10), Drain::Ready(1));
    assert_eq!(b.drain(slow, &mut out, 10), Drain::Ready(1));
    assert_eq!(b.stats().queued_bytes, 0);
    for _ in 0..3 {
        b.publish(t("a"), vec![0; 400], None);
        assert_eq!(b.drain(fast, &mut out, 10), Drain::Ready(1));
    }
    assert_eq!(
        b.drain(slow, &mut out, 10),
        Drain::Lagged,
        "1,200 > 1,000 bytes"
    );
    assert_eq!(b.stats().queued_bytes, 0, "its bytes are released");
    // The total bound cuts a subscriber that has something waiting.
    let subs: Vec<_> = (0..4)
        .map(|_| b.subscribe(&[p("a")], Placement::Live, None).id)
        .collect();
    b.publish(t("a"), vec![0; 500], None);
    b.publish(t("a"), vec![0; 500], None);
    let lagged = subs
        .iter()
        .filter(|s| b.drain(**s, &mut Vec::new(), 10) == Drain::Lagged)
        .count();
    assert!(lagged >= 1, "2 x 4 x 500 bytes > 2,500");
    assert!(b.stats().queued_bytes <= 2_500);
}
