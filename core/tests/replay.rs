//! Replay paged from history: a resume far behind gets every retained
//! message in order, a page at a time (never more than the queue's bounds
//! at once), then live messages with no gap and no duplicate; a cursor
//! overtaken by eviction is dropped as lagged and told the gap on resume.
//!
//! The broker has no clock: "time" here is the order of publishes and
//! drains, stepped explicitly.

use tidings_core::{
    broker::{
        Broker, BrokerConfig, Drain, HistoryLimits, Placement, SharedMessage, SubscriptionId,
    },
    log::GapReason,
    message::{Epoch, MessageId},
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
fn history(n: usize) -> HistoryLimits {
    HistoryLimits {
        per_topic: n,
        per_topic_bytes: usize::MAX,
        total: n,
        total_bytes: usize::MAX,
    }
}
fn broker(queue: usize, retained: usize) -> Broker<u64> {
    Broker::new(
        BrokerConfig::default()
            .queue_capacity(queue)
            .history(history(retained)),
        EPOCH,
        0,
    )
}
fn resume<M>(b: &Broker<M>, id: MessageId) -> Placement {
    b.place(Some(&id.to_string()))
}
/// Drains `id` until nothing is ready, `max` at a time, checking that no
/// drain returns more than `max`.
fn drain_all(b: &mut Broker<u64>, id: SubscriptionId, max: usize) -> Vec<u64> {
    let mut out: Vec<SharedMessage<u64>> = Vec::new();
    loop {
        let before = out.len();
        match b.drain(id, &mut out, max) {
            Drain::Ready(n) => {
                assert!(n <= max && n == out.len() - before, "{n} > {max}");
            }
            _ => break,
        }
    }
    out.iter().map(|m| *m.payload()).collect()
}

#[test]
fn a_replay_larger_than_the_queue_is_paged_whole_then_live() {
    let mut b = broker(3, 1_000);
    let first = b.publish(t("a"), 0, None).id;
    for i in 1..10 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], resume(&b, first), None);
    assert_eq!(s.gap, None, "history holds all of it");
    assert_eq!(s.replayed, 9);
    assert_eq!(s.position, first);
    assert_eq!(b.pending(s.id), 0, "nothing copied at subscribe");
    assert!(b.is_replaying(s.id));
    assert_eq!(drain_all(&mut b, s.id, 64), (1..10).collect::<Vec<u64>>());
    assert!(!b.is_replaying(s.id), "caught up: live");
    b.publish(t("a"), 10, None);
    assert_eq!(drain_all(&mut b, s.id, 64), [10]);
    // Nothing after the resume point: live at once.
    b.publish(t("b"), 11, None);
    let empty = b.subscribe(&[p("a")], resume(&b, id(11)), None);
    assert_eq!(empty.replayed, 0);
    assert!(!b.is_replaying(empty.id));
}

#[test]
fn a_paged_replay_over_many_topics_and_overlapping_patterns_is_in_order_once() {
    let mut b = broker(25, 1_000);
    let first = b.publish(t("r:0"), 0, None).id;
    for i in 1..100 {
        b.publish(t(&format!("r:{}", i % 7)), i, None);
    }
    b.publish(t("other"), 1_000, None);
    let s = b.subscribe(&[p("r:>"), p("r:*"), p("r:3")], resume(&b, first), None);
    assert_eq!(s.gap, None);
    assert_eq!(s.replayed, 99);
    assert_eq!(drain_all(&mut b, s.id, 10), (1..100).collect::<Vec<u64>>());
    b.publish(t("r:5"), 100, None);
    assert_eq!(drain_all(&mut b, s.id, 10), [100], "live, once");
}

#[test]
fn ten_thousand_behind_with_a_queue_of_64_while_publishers_keep_going() {
    // Virtual time: each step publishes 3 messages and drains one batch of
    // at most 16; the replay must chase the publishers, deliver all of it
    // in order exactly once, hand over to live, and never hold more than
    // a page.
    let mut b = broker(64, 20_000);
    let start = b.publish(t("chat:0"), 0, None).id;
    let mut next = 1u64;
    while next <= 10_000 {
        b.publish(t(&format!("chat:{}", next % 5)), next, None);
        next += 1;
    }
    let s = b.subscribe(&[p("chat:*")], resume(&b, start), None);
    assert_eq!((s.gap, s.replayed), (None, 10_000));
    let mut got = Vec::new();
    let mut live_at = None;
    for step in 0..20_000 {
        for _ in 0..3 {
            b.publish(t(&format!("chat:{}", next % 5)), next, None);
            next += 1;
        }
        let mut out = Vec::new();
        if let Drain::Ready(n) = b.drain(s.id, &mut out, 16) {
            assert!(n <= 16);
        }
        got.extend(out.iter().map(|m| *m.payload()));
        assert!(
            b.stats().queued_bytes <= 64 * 8,
            "bounded, never the replay"
        );
        if live_at.is_none() && !b.is_replaying(s.id) {
            live_at = Some(step);
        }
        if live_at.is_some_and(|at| step > at + 10) {
            break;
        }
    }
    assert!(live_at.is_some(), "the replay caught up");
    got.extend(drain_all(&mut b, s.id, 16));
    assert_eq!(got, (1..next).collect::<Vec<u64>>(), "no gap, no duplicate");
}

#[test]
fn eviction_past_the_cursor_drops_the_replay_and_the_resume_is_told() {
    let mut b = broker(4, 20);
    let first = b.publish(t("a"), 0, None).id;
    for i in 1..20 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], resume(&b, first), None);
    assert_eq!(s.gap, None);
    let mut out = Vec::new();
    assert_eq!(b.drain(s.id, &mut out, 4), Drain::Ready(4));
    let last = out.last().unwrap().id();
    assert_eq!(last, id(5));
    // The history (20 messages) moves past the cursor before the next page.
    for i in 20..40 {
        b.publish(t("a"), i, None);
    }
    assert_eq!(
        b.drain(s.id, &mut out, 4),
        Drain::Lagged,
        "never a silent loss"
    );
    assert_eq!(out.len(), 4);
    b.unsubscribe(s.id);
    let again = b.subscribe(&[p("a")], resume(&b, last), None);
    assert_eq!(again.gap, Some(GapReason::HistoryTrimmed));
    assert_eq!(
        drain_all(&mut b, again.id, 8),
        (20..40).collect::<Vec<u64>>()
    );
}

#[test]
fn eviction_already_told_at_subscribe_does_not_cut_the_replay() {
    let mut b = broker(2, 10);
    for i in 0..15 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], resume(&b, id(1)), None);
    assert_eq!(s.gap, Some(GapReason::HistoryTrimmed));
    assert_eq!(s.position, id(5));
    assert_eq!(drain_all(&mut b, s.id, 3), (5..15).collect::<Vec<u64>>());
}

#[test]
fn a_loss_notice_during_the_replay_goes_ahead_and_the_replay_goes_on() {
    let mut b = broker(4, 100);
    for i in 0..20 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], resume(&b, id(1)), None);
    let mut out = Vec::new();
    assert_eq!(b.drain(s.id, &mut out, 4), Drain::Ready(4));
    // The shared log lost entries 21..=30 (ahead of the cursor).
    assert_eq!(b.announce_loss(30, 999), 1);
    b.publish_at(id(31), t("a"), 31, None).unwrap();
    let rest = drain_all(&mut b, s.id, 4);
    let mut want = vec![999];
    want.extend(5..20);
    want.push(31);
    assert_eq!(rest, want);
    assert!(!b.is_replaying(s.id));
}

#[test]
fn a_new_epoch_ends_the_replay_with_its_notice() {
    let mut b = broker(4, 100);
    for i in 0..20 {
        b.publish(t("a"), i, None);
    }
    let s = b.subscribe(&[p("a")], resume(&b, id(1)), None);
    assert_eq!(s.gap, None);
    let mut out = Vec::new();
    assert_eq!(b.drain(s.id, &mut out, 4), Drain::Ready(4));
    let e2 = Epoch::from_random(200);
    b.begin_epoch(e2, 0, 999);
    b.publish_at(MessageId::new(e2, 1), t("a"), 1_001, None)
        .unwrap();
    assert_eq!(drain_all(&mut b, s.id, 4), [999, 1_001]);
}

#[test]
fn a_message_excluding_the_replaying_stream_is_not_paged_to_it() {
    // The stream publishes with `exclude` naming itself while it catches
    // up: like live fan-out, its replay passes over those messages, even
    // a long run of them (the scan per drain is bounded: `Ready(0)`).
    let mut b = broker(2, 1_000);
    let me = tidings_core::message::ConnectionId::from_random(7);
    for i in 0..5 {
        b.publish(t("room"), i, None);
    }
    let s = b.subscribe(&[p("room")], resume(&b, id(1)), Some(me));
    let other = b.subscribe(&[p("room")], resume(&b, id(1)), None);
    assert!(b.is_replaying(s.id));
    b.publish(t("room"), 100, Some(me));
    for i in 0..50 {
        b.publish(t("room"), 200 + i, Some(me));
    }
    b.publish(t("room"), 300, None);
    let mut out: Vec<SharedMessage<u64>> = Vec::new();
    let mut empty_pages = 0;
    loop {
        match b.drain(s.id, &mut out, 2) {
            Drain::Ready(0) => empty_pages += 1,
            Drain::Ready(_) => {}
            _ => break,
        }
    }
    let mine: Vec<u64> = out.iter().map(|m| *m.payload()).collect();
    assert_eq!(mine, [1, 2, 3, 4, 300]);
    assert!(empty_pages > 0, "a long excluded run takes several drains");
    let theirs = drain_all(&mut b, other.id, 64);
    assert_eq!(theirs.len(), 4 + 1 + 50 + 1, "others get them");
}
