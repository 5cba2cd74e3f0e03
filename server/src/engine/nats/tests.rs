//! The NATS-specific parts against a private 3-node JetStream cluster
//! (real `nats-server`, never a mock).

#[path = "../../../tests/support_nats/cluster.rs"]
mod cluster;

use std::time::Duration;

use futures_util::StreamExt as _;

use tidings_core::topic::{Pattern, Topic};

use super::*;
use cluster::NatsCluster;

fn publication(topic: &str, data: &str, key: Option<&str>) -> Publication {
    Publication {
        topic: Topic::new(topic).unwrap(),
        event_type: "status".into(),
        data: data.into(),
        exclude: Some("conn-1".into()),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn start() -> NatsCluster {
    tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap()
}

/// Opens the stream, retrying while the cluster settles (a fresh cluster
/// may not place an R3 stream at once).
async fn open(settings: &NatsSettings) -> Stream {
    let mut last = None;
    for _ in 0..100 {
        match Stream::open(settings).await {
            Ok(stream) => return stream,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the stream never opened: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fetch_dedupe_and_an_existing_stream_is_checked() {
    let cluster = start().await;
    let settings = NatsSettings::new(&cluster.urls());
    let stream = open(&settings).await;
    let head = stream.head().await.unwrap();
    assert_eq!(
        head.replicas, 3,
        "3 replicas by default on a 3-node cluster"
    );
    assert!(head.has_quorum());

    let published = stream
        .publish(
            &[
                publication("order:v1.2:a", "{\"n\":1}", Some("k1")),
                publication("order:v1.2:b", "{\"n\":2}", None),
                publication("order:v1.2:a", "{\"n\":3}", None),
            ],
            42,
        )
        .await
        .unwrap();
    let seqs: Vec<u64> = published.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(published.iter().all(|p| !p.duplicate));

    // A retry with the same key answers the original sequence.
    let again = stream
        .publish(&[publication("order:v1.2:a", "{\"n\":9}", Some("k1"))], 43)
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![Published {
            seq: 1,
            duplicate: true
        }]
    );

    // Fetch by pattern from a sequence, back to the same entry.
    let filter = stream
        .subjects()
        .stored_filter(&Pattern::new("order:*:a").unwrap());
    let first = stream.next_matching(&filter, 1).await.unwrap().unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.topic.as_str(), "order:v1.2:a");
    assert_eq!(first.event_type, "status");
    assert_eq!(&first.data[..], b"{\"n\":1}");
    assert_eq!(first.exclude.as_deref(), Some("conn-1"));
    assert_eq!(first.accepted_us, Some(42));
    assert_eq!(first.prev, None);
    let next = stream.next_matching(&filter, 2).await.unwrap().unwrap();
    assert_eq!(next.seq, 3);
    assert_eq!(stream.next_matching(&filter, 4).await.unwrap(), None);

    // Replay of overlapping patterns: stream order, each message once.
    let more = stream
        .publish(
            &[
                publication("room:1", "4", None),
                publication("order:v1.2:a", "5", None),
                publication("room:2", "6", None),
            ],
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        more.iter().map(|p| p.seq).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let patterns = [
        Pattern::new("order:>").unwrap(),
        Pattern::new("order:v1.2:a").unwrap(),
        Pattern::new("room:1").unwrap(),
    ];
    let replay = stream.replay(&patterns, 1, 6, 100).await.unwrap();
    let seqs: Vec<u64> = replay.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert!(!replay.truncated);
    let upto = stream.replay(&patterns, 0, 3, 100).await.unwrap();
    assert_eq!(
        upto.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let cut = stream.replay(&patterns, 0, 6, 2).await.unwrap();
    assert_eq!(
        cut.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(cut.truncated);

    // A second instance opens the same stream and sees the same epoch.
    let other = open(&settings).await;
    assert_eq!(other.epoch(), stream.epoch());

    // Flags that contradict the existing stream are refused, naming each.
    let mut conflicting = settings.clone();
    conflicting.replicas = Some(1);
    conflicting.max_age = Some(Duration::from_secs(60));
    let e = Stream::open(&conflicting).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, NatsStartError::Conflict { .. }), "{text}");
    assert!(
        text.contains("3 replicas") && text.contains("max age"),
        "{text}"
    );
    let mut other_prefix = settings.clone();
    other_prefix.subject_prefix = "elsewhere".into();
    let text = Stream::open(&other_prefix).await.unwrap_err().to_string();
    assert!(text.contains("its subjects are"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_is_a_clear_not_taken_and_recreating_changes_the_epoch() {
    let mut cluster = start().await;
    // Connected to the node that stays up: a client whose own server goes
    // away times out instead (MaybeTaken), while it reconnects.
    let settings = NatsSettings::new(&cluster.url(0));
    let stream = open(&settings).await;
    let before = stream.epoch();
    stream
        .publish(&[publication("a", "1", None)], 0)
        .await
        .unwrap();

    cluster.stop(1);
    cluster.stop(2);
    // Without quorum a publish fails either at once ("no responders":
    // nothing stored) or after the acknowledgement wait (maybe stored),
    // depending on which node is left; both are answered 503 with what to
    // do, and the retry below uses the same key.
    let e = stream
        .publish(&[publication("a", "2", Some("retry-me"))], 0)
        .await
        .unwrap_err();
    match &e {
        NatsPublishError::NotTaken { failed_at: 0, .. } => {
            assert!(e.to_string().contains("nothing was published"), "{e}")
        }
        NatsPublishError::MaybeTaken { failed_at: 0, .. } => {
            assert!(e.to_string().contains("same Idempotency-Key"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let head = stream.head().await;
    assert!(
        head.as_ref().map_or(true, |h| !h.has_quorum()),
        "no quorum may not look like quorum: {head:?}"
    );
    // The readiness probe says so too.
    let health = std::sync::Arc::new(NatsHealth::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn(run_probe(
        stream.clone(),
        health.clone(),
        Duration::from_millis(500),
        stop.clone(),
    ));
    let mut saw_down = None;
    for _ in 0..100 {
        if let Err(why) = health.check() {
            saw_down = Some(why);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let why = saw_down.expect("the probe reports the lost quorum");
    assert!(!why.contains("127.0.0.1"), "no internal address: {why}");

    cluster.restart(1);
    cluster.restart(2);
    let mut acked = None;
    for _ in 0..300 {
        if let Ok(p) = stream
            .publish(&[publication("a", "2", Some("retry-me"))], 0)
            .await
        {
            acked = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = acked.expect("publishes resume");
    let mut ready = false;
    for _ in 0..300 {
        if health.check().is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "ready again once quorum returned: {:?}",
        health.check()
    );
    let mut metrics = String::new();
    health.render(&mut metrics);
    assert!(metrics.contains("tidings_nats_up 1"), "{metrics}");
    stop.cancel();
    probe.await.unwrap();
    assert_eq!(acked.len(), 1);
    // Exactly one "2" is stored, whatever the failed attempt did.
    let filter = stream.subjects().stored_filter(&Pattern::new("a").unwrap());
    let mut seq = 1;
    let mut stored = Vec::new();
    while let Some(entry) = stream.next_matching(&filter, seq).await.unwrap() {
        stored.push(entry.data.clone());
        seq = entry.seq + 1;
    }
    assert_eq!(stored, vec![&b"1"[..], &b"2"[..]]);

    // Delete and recreate: another epoch.
    let js = async_nats::jetstream::new(stream.client().clone());
    // The meta layer may still be electing ("temporarily unavailable").
    let mut deleted = false;
    for _ in 0..300 {
        if js.delete_stream(&settings.stream).await.is_ok() {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted, "the stream could not be deleted");
    let recreated = open(&settings).await;
    assert_ne!(recreated.epoch(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_named_as_such() {
    let port = cluster::free_port();
    let mut command = std::process::Command::new(cluster::nats_server_bin());
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let mut result = None;
    for _ in 0..100 {
        match Stream::open(&NatsSettings::new(&url)).await {
            Err(NatsStartError::Unreachable { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                result = Some(other);
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let e = result.expect("the server answered").unwrap_err();
    assert!(matches!(e, NatsStartError::NoJetStream { .. }), "{e}");
    assert!(e.to_string().contains("-js"), "{e}");
}

#[test]
fn the_cover_drops_patterns_another_one_covers() {
    let p = |t| Pattern::new(t).unwrap();
    let cover = minimal_cover(&[p("a:>"), p("a:b"), p("a:*"), p("c"), p("c"), p("d:*")]);
    assert_eq!(cover, vec![p("a:>"), p("c"), p("d:*")]);
}

/// The next republished entry on `subscriber`.
async fn next_entry(subscriber: &mut async_nats::Subscriber, subjects: &Subjects) -> StreamEntry {
    let msg = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
        .await
        .expect("a republished message within 30 s")
        .expect("the subscription is open");
    entry::from_republished(subjects, &msg.subject, msg.headers.as_ref(), msg.payload)
        .expect("a Tidings entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_entries_come_by_interest_with_their_per_subject_chain() {
    let cluster = start().await;
    let settings = NatsSettings::new(&cluster.urls());
    let stream = open(&settings).await;
    let p = |t| Pattern::new(t).unwrap();
    let cover = minimal_cover(&[p("room:*:chat"), p("room:1:chat")]);
    assert_eq!(cover, vec![p("room:*:chat")]);
    let subjects = stream.subjects().clone();
    let mut rooms = stream
        .client()
        .subscribe(subjects.live_filter(&cover[0]))
        .await
        .unwrap();
    let mut others = stream
        .client()
        .subscribe(subjects.live_filter(&p("other:>")))
        .await
        .unwrap();
    stream.client().flush().await.unwrap();

    stream
        .publish(
            &[
                publication("room:1:chat", "1", None),
                publication("room:2:chat", "2", None),
                publication("other:x", "3", None),
                publication("room:1:chat", "4", None),
            ],
            0,
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = next_entry(&mut rooms, &subjects).await;
        got.push((e.topic.to_string(), e.seq, e.prev));
    }
    // Each subject is its own chain: the previous sequence on it.
    assert_eq!(
        got,
        vec![
            ("room:1:chat".to_owned(), 1, Some(0)),
            ("room:2:chat".to_owned(), 2, Some(0)),
            ("room:1:chat".to_owned(), 4, Some(1)),
        ]
    );
    let e = next_entry(&mut others, &subjects).await;
    assert_eq!((e.topic.as_str(), e.seq, e.prev), ("other:x", 3, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_bucket_is_created_once_and_shared() {
    let cluster = start().await;
    let stream = open(&NatsSettings::new(&cluster.urls())).await;
    let a = open_bucket(&stream, "presence", 3, Duration::from_secs(60))
        .await
        .unwrap();
    a.put("room.1.conn-a", "{}".into()).await.unwrap();
    let b = open_bucket(&stream, "presence", 3, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        b.get("room.1.conn-a").await.unwrap().as_deref(),
        Some(&b"{}"[..])
    );
}
