//! Broker costs: publish with 1, 1,000 and 100,000 subscribers on one topic,
//! and publish among 10,000 pattern subscriptions (trie vs. a linear scan).
//!
//! `cargo bench -p tidings-core --bench broker`

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidings_core::{
    broker::{Broker, BrokerConfig, HistoryLimits, Placement, SubscriptionId},
    message::Epoch,
    topic::{Pattern, Topic},
};

fn config() -> BrokerConfig {
    BrokerConfig::default().queue_capacity(1 << 16)
}

fn drain_all(
    broker: &mut Broker<&'static str>,
    subs: &[SubscriptionId],
    out: &mut Vec<tidings_core::broker::SharedMessage<&'static str>>,
) {
    for &id in subs {
        let _ = broker.drain(id, out, usize::MAX);
        out.clear();
    }
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_one_topic");
    group.measurement_time(Duration::from_secs(4));
    for subscribers in [1usize, 1_000, 100_000] {
        let mut broker: Broker<&'static str> = Broker::new(config(), Epoch::from_random(1), 0);
        let topic = Topic::new("order:status:acme:42").unwrap();
        let pattern = [Pattern::from(topic.clone())];
        let subs: Vec<_> = (0..subscribers)
            .map(|_| broker.subscribe(&pattern, Placement::Live, None).id)
            .collect();
        let mut out = Vec::new();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::new("subscribers", subscribers), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                // Bounded so queued pointers stay well under a gigabyte.
                let batch = ((1u64 << 22) / subscribers as u64).clamp(1, 1 << 15);
                let mut done = 0;
                while done < iters {
                    let n = (iters - done).min(batch);
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        black_box(broker.publish(topic.clone(), "x", None));
                    }
                    total += start.elapsed();
                    drain_all(&mut broker, &subs, &mut out);
                    done += n;
                }
                total
            })
        });
    }
    group.finish();
}

fn patterns(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_10k_patterns");
    group.measurement_time(Duration::from_secs(4));
    let no_history = HistoryLimits {
        per_topic: 0,
        ..HistoryLimits::default()
    };
    let mut broker: Broker<&'static str> =
        Broker::new(config().history(no_history), Epoch::from_random(1), 0);
    let mut all = Vec::new();
    let mut subs = Vec::new();
    for i in 0..10_000 {
        // A mix of shapes: per-room wildcards and per-room tails.
        let text = if i % 2 == 0 {
            format!("room:{i}:*")
        } else {
            format!("room:{i}:>")
        };
        let pattern = Pattern::new(&text).unwrap();
        subs.push(
            broker
                .subscribe(std::slice::from_ref(&pattern), Placement::Live, None)
                .id,
        );
        all.push(pattern);
    }
    let topic = Topic::new("room:4242:chat").unwrap();
    let mut out = Vec::new();
    group.bench_function("trie_index", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                black_box(broker.publish(topic.clone(), "x", None));
            }
            let elapsed = start.elapsed();
            drain_all(&mut broker, &subs[4242..4243], &mut out);
            elapsed
        })
    });
    group.bench_function("linear_scan_for_comparison", |b| {
        b.iter(|| all.iter().filter(|p| p.matches(black_box(&topic))).count())
    });
    group.finish();
}

criterion_group!(benches, fan_out, patterns);
criterion_main!(benches);
