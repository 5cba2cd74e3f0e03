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
        Broker, BrokerConfig, Drain, HistoryLimits, MessageId, PublishError, RecvError,
        ResumeAhead, SharedMessage, SyncBroker,
    },
    topic::{Pattern, Topic},
};

fn t(s: &str) -> Topic {
    Topic::new(s).unwrap()
}
fn p(s: &str) -> Pattern {
    Pattern::new(s).unwrap()
}
fn broker(config: BrokerConfig) -> Broker<u64> {
    Broker::new(config, MessageId::new(100, 0))
}
fn drain_all(b: &mut Broker<u64>, id: tidings_core::broker::SubscriptionId) -> Vec<u64> {
    let mut out: Vec<SharedMessage<u64>> = Vec::new();
    while let Drain::Ready(_) = b.drain(id, &mut out, 7) {}
    out.iter().map(|m| *m.payload()).collect()
}

#[test]
fn ids_increase_and_start_at_the_given_id() {
    let mut b = broker(BrokerConfig::default());
    let first = b.publish(t("a"), 1, None).id;
    let second = b.publish(t("b"), 2, None).id;
    assert_eq!(first, MessageId::new(100, 0));
    assert_eq!(second, MessageId::new(100, 1));
    assert_eq!(b.last_id(), Some(second));
}

#[test]
fn fan_out_reaches_every_matching_subscription_once() {
    let mut b = broker(BrokerConfig::default());
    let exact = b.subscribe(&[p("order:acme:1")], None).id;
    let star = b.subscribe(&[p("order:*:1")], None).id;
    let tail = b.subscribe(&[p("order:>")], None).id;
    let overlapping = b
        .subscribe(&[p("order:>"), p("order:acme:*"), p("order:acme:1")], None)
        .id;
    let other = b.subscribe(&[p("order:globex:>")], None).id;
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
    let s = b.subscribe(&[p("x:>")], None).id;
    for i in 0..100 {
        b.publish(t(if i % 2 == 0 { "x:a" } else { "x:b" }), i, None);
    }
    assert_eq!(drain_all(&mut b, s), (0..100).collect::<Vec<_>>());
}

#[test]
fn exclude_skips_only_the_sender() {
    let mut b = broker(BrokerConfig::default());
    let ann = b.subscribe(&[p("quiz:r1:>")], None).id;
    let bob = b.subscribe(&[p("quiz:r1:>")], None).id;
    let published = b.publish(t("quiz:r1:joined"), 1, Some(ann));
    assert_eq!(published.delivered, 1);
    assert_eq!(drain_all(&mut b, ann), Vec::<u64>::new());
    assert_eq!(drain_all(&mut b, bob), [1]);
    // Excluding a removed subscription's id excludes nobody new.
    assert!(b.unsubscribe(ann));
    let carol = b.subscribe(&[p("quiz:r1:>")], None).id;
    assert_ne!(carol, ann, "ids are not reused for a different subscriber");
    b.publish(t("quiz:r1:joined"), 2, Some(ann));
    assert_eq!(drain_all(&mut b, carol), [2]);
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
    let broker = SyncBroker::new(Broker::<u64>::new(BrokerConfig::default(), MessageId::ZERO));
    let (mut sub, _) = broker.subscribe(&[p("a")], None);
    let (sub2, _) = broker.subscribe(&[p("a")], None);
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
    let s = b.subscribe(&[p("r:0"), p("r:*")], Some(ids[4]));
    assert!(!s.gap);
    assert_eq!(s.replayed, 5);
    b.publish(t("r:1"), 10, None);
    assert_eq!(drain_all(&mut b, s.id), [5, 6, 7, 8, 9, 10]);
}

#[test]
fn resume_at_the_newest_id_replays_nothing() {
    let mut b = broker(BrokerConfig::default());
    let last = b.publish(t("a"), 1, None).id;
    let s = b.subscribe(&[p("a")], Some(last));
    assert_eq!((s.gap, s.replayed), (false, 0));
}

#[test]
fn resume_before_evicted_history_is_a_gap() {
    let mut b = broker(BrokerConfig::default().history(HistoryLimits {
        per_topic: 3,
        ..HistoryLimits::default()
    }));
    let ids: Vec<_> = (0..6).map(|i| b.publish(t("a"), i, None).id).collect();
    let s = b.subscribe(&[p("a")], Some(ids[1]));
    assert!(s.gap, "messages 2 was evicted");
    assert_eq!(drain_all(&mut b, s.id), [3, 4, 5]);
    let s = b.subscribe(&[p("a")], Some(ids[2]));
    assert!(!s.gap, "everything after 2 is retained");
    // Another topic's eviction does not make a gap for this one.
    let s = b.subscribe(&[p("b")], Some(ids[0]));
    assert!(!s.gap);
}

#[test]
fn resume_from_before_this_broker_or_from_elsewhere_is_a_gap() {
    let mut b = broker(BrokerConfig::default());
    b.publish(t("a"), 1, None);
    assert!(b.subscribe(&[p("a")], Some(MessageId::new(99, 5))).gap);
    assert!(b.subscribe(&[p("a")], Some(MessageId::new(101, 0))).gap);
    assert!(!b.subscribe(&[p("a")], Some(MessageId::new(100, 0))).gap);
}

#[test]
fn resume_ahead_can_await_the_shared_log() {
    let mut b = broker(BrokerConfig::default().resume_ahead(ResumeAhead::Await));
    b.publish_with_id(MessageId::new(100, 1), t("a"), 1, None)
        .unwrap();
    // A client saw up to 100-3 on another instance; this one lags behind.
    let s = b.subscribe(&[p("a")], Some(MessageId::new(100, 3)));
    assert!(!s.gap);
    for (seq, v) in [(2, 2), (3, 3), (4, 4)] {
        b.publish_with_id(MessageId::new(100, seq), t("a"), v, None)
            .unwrap();
    }
    assert_eq!(
        drain_all(&mut b, s.id),
        [4],
        "no duplicate of what it already had"
    );
}

#[test]
fn publish_with_id_refuses_ids_that_do_not_increase() {
    let mut b = broker(BrokerConfig::default());
    assert!(matches!(
        b.publish_with_id(MessageId::new(99, 0), t("a"), 0, None),
        Err(PublishError::IdNotIncreasing { .. })
    ));
    b.publish_with_id(MessageId::new(150, 2), t("a"), 0, None)
        .unwrap();
    assert!(
        b.publish_with_id(MessageId::new(150, 2), t("a"), 0, None)
            .is_err()
    );
    assert_eq!(b.publish(t("a"), 1, None).id, MessageId::new(150, 3));
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
        MessageId::ZERO,
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
    assert!(b.subscribe(&[p("many:>")], Some(MessageId::new(0, 20))).gap);
}

#[test]
fn a_slow_subscriber_is_marked_lagged_and_others_keep_everything() {
    let mut b = broker(BrokerConfig::default().queue_capacity(4));
    let slow = b.subscribe(&[p("a")], None).id;
    let fast = b.subscribe(&[p("a")], None).id;
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
fn a_replay_larger_than_the_queue_is_cut_with_a_gap() {
    let mut b = broker(BrokerConfig::default().queue_capacity(3));
    let first = b.publish(t("a"), 0, None).id;
    for i in 1..10 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], Some(first));
    assert!(s.gap);
    assert_eq!(drain_all(&mut b, s.id), [7, 8, 9]);
}

#[test]
fn close_all_ends_every_subscription_after_its_queue() {
    let mut b = broker(BrokerConfig::default());
    let s = b.subscribe(&[p("a")], None).id;
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
    let broker = SyncBroker::new(Broker::<u64>::new(BrokerConfig::default(), MessageId::ZERO));
    let (mut sub, _) = broker.subscribe(&[p("a")], None);
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
    let broker = SyncBroker::new(Broker::<u64>::new(config, MessageId::ZERO));
    let (mut watcher, _) = broker.subscribe(&[p("race")], None);
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
                let (sub, subscribed) = broker.subscribe(&[p("race")], Some(last));
                assert!(!subscribed.gap);
                watcher = sub;
                resumed += 1;
            }
        }
        let values: Vec<u64> = seen.iter().map(|m| *m.payload()).collect();
        assert_eq!(values, (0..total).collect::<Vec<_>>());
    });
}
