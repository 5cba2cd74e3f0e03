//! The hub's deferred wakes: a publish or a feed can hand the streams to
//! wake to its caller instead of waking them, so that the caller wakes them
//! once it holds no lock (a server's waker may write to a socket at once).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Wake, Waker},
};

use tidings_core::{
    broker::Placement,
    hub::{HubConfig, LogEntry, SyncHub},
    log::Chain,
    message::{Epoch, EventType, MessageId, Outgoing},
    topic::{Pattern, Topic},
};

struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A subscription to `pattern` waiting with a counting waker.
fn waiting(hub: &SyncHub, pattern: &str) -> (Arc<CountingWaker>, impl Sized) {
    let (mut sub, _) = hub.subscribe(&[Pattern::new(pattern).unwrap()], Placement::Live, None);
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut out = Vec::new();
    assert!(
        sub.poll_recv_many(&mut Context::from_waker(&waker), &mut out, 8)
            .is_pending()
    );
    (counter, sub)
}

#[test]
fn a_deferred_publish_wakes_nothing_and_hands_every_waker_over() {
    let hub = SyncHub::new(HubConfig::default(), Epoch::from_random(3), 0);
    let (a, _a) = waiting(&hub, "room:a");
    let (b, _b) = waiting(&hub, "room:>");
    let (other, _other) = waiting(&hub, "room:b");
    let message = Outgoing::new(Topic::new("room:a").unwrap(), EventType::MESSAGE, "1");
    let mut wakes = Vec::new();
    let accepted = hub.publish_deferred(&[message.clone(), message], 0, &mut wakes);
    assert_eq!(accepted.unwrap().len(), 2);
    assert_eq!(
        (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)),
        (0, 0)
    );
    // One waker per stream woken, however many messages it got.
    assert_eq!(wakes.len(), 2);
    wakes.drain(..).for_each(Waker::wake);
    assert_eq!(
        (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)),
        (1, 1)
    );
    assert_eq!(other.0.load(Ordering::SeqCst), 0);
    // The hub holds no lock any more: publishing again works at once.
    let again = Outgoing::new(Topic::new("room:b").unwrap(), EventType::MESSAGE, "2");
    hub.publish_deferred(&[again], 0, &mut wakes).unwrap();
    assert_eq!(wakes.len(), 1);
}

#[test]
fn a_deferred_feed_hands_its_wakers_over_and_counts_them() {
    let epoch = Epoch::from_random(4);
    let hub = SyncHub::new(HubConfig::default(), epoch, 0);
    let (a, _a) = waiting(&hub, "t:>");
    let message = Outgoing::new(Topic::new("t:x").unwrap(), EventType::MESSAGE, "1");
    let entries: Vec<LogEntry<'_>> = (1..=3)
        .map(|seq| LogEntry {
            id: MessageId::new(epoch, seq),
            chain: Chain::Log,
            message: &message,
            published_us: 0,
        })
        .collect();
    let mut wakes = Vec::new();
    let fed = hub.feed_deferred(&entries, 0, &mut wakes);
    assert_eq!((fed.delivered, fed.queued, fed.woken), (3, 3, 1));
    assert_eq!(a.0.load(Ordering::SeqCst), 0, "not woken by the feed");
    assert_eq!(wakes.len(), 1);
    wakes.drain(..).for_each(Waker::wake);
    assert_eq!(a.0.load(Ordering::SeqCst), 1);
}
