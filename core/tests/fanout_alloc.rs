//! The fan-out path allocates nothing per delivered message: one `Arc` per
//! publish, shared by every subscriber, whatever their number.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use tidings_core::{
    broker::{Broker, BrokerConfig, Drain, Placement},
    message::Epoch,
    topic::{Pattern, Topic},
};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn one_allocation_per_publish_none_per_delivery() {
    let mut broker: Broker<&'static str> =
        Broker::new(BrokerConfig::default(), Epoch::from_random(1), 0);
    let topic = Topic::new("room:1:chat").unwrap();
    let patterns = [
        Pattern::new("room:1:chat").unwrap(),
        Pattern::new("room:*:chat").unwrap(),
        Pattern::new("room:>").unwrap(),
    ];
    let subs: Vec<_> = (0..1000)
        .map(|i| {
            broker
                .subscribe(&patterns[i % 3..i % 3 + 1], Placement::Live, None)
                .id
        })
        .collect();
    let mut out = Vec::with_capacity(64);
    let mut round = |broker: &mut Broker<&'static str>, publishes: usize| {
        for _ in 0..publishes {
            assert_eq!(
                broker.publish(topic.clone(), "payload", None).delivered,
                1000
            );
        }
        for &id in &subs {
            out.clear();
            assert_eq!(broker.drain(id, &mut out, 64), Drain::Ready(publishes));
        }
    };
    // Warm up: queues and the history reach their steady capacity.
    for _ in 0..1100 {
        round(&mut broker, 10);
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    round(&mut broker, 10);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        allocations, 10,
        "10 publishes to 1000 subscribers should allocate exactly one shared message each"
    );
}
