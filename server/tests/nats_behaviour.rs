//! What the NATS mode relies on, checked against the real `nats-server`
//! (Debian's 2.9.10 here) in a private 3-node JetStream cluster.
//! `docs/nats.md` explains the design these facts lead to; when a server
//! upgrade changes one of them, this file says which.
//!
//! Timings are printed (run with `--nocapture` to see them), never asserted.

mod support_nats;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap, HeaderName,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        context::PublishErrorKind,
        message::PublishMessage,
        stream::{Config, Republish, StorageType},
    },
};
use futures_util::StreamExt;
use support_nats::{NatsCluster, connect, patiently};

/// A replicated stream over `m.>` that republishes every stored message to
/// `r.>` (what the NATS mode creates, with short names).
fn stream_config(name: &str) -> Config {
    Config {
        name: name.to_owned(),
        subjects: vec!["m.>".into()],
        num_replicas: 3,
        storage: StorageType::File,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        republish: Some(Republish {
            source: "m.>".into(),
            destination: "r.>".into(),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// A header's value. Trap of async-nats 0.46: `HeaderMap::get("Nats-Sequence")`
/// (a `&str`) finds nothing, because received standard names are stored as
/// standard variants while a `&str` key is always a custom one; parse the
/// name (or use the `header::NATS_*` constants).
fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    let name: HeaderName = name.parse().ok()?;
    headers?.get(name).map(|v| v.as_str().to_owned())
}

async fn publish(js: &jetstream::Context, subject: &str, data: &str) -> u64 {
    js.publish(subject.to_owned(), data.to_owned().into())
        .await
        .expect("publish sent")
        .await
        .expect("publish acknowledged")
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_features_of_this_server() {
    let cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    let client = connect(&cluster.urls()).await;
    patiently("the first connection", async {
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!("server version: {}", client.server_info().version);
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream_config("FACTS"))
        .await
        .expect("an R3 stream with republish and allow_direct is accepted");

    // --- Republish: what an instance's core subscription receives.
    let mut republished = client.subscribe("r.>").await.unwrap();
    client.flush().await.unwrap();
    let s1 = publish(&js, "m.a", "1").await;
    let s2 = publish(&js, "m.b", "2").await;
    let s3 = publish(&js, "m.a", "3").await;
    let s4 = publish(&js, "m.a.deeper", "4").await;
    let s5 = publish(&js, "m.a", "5").await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let msg = patiently("a republished message", republished.next())
            .await
            .unwrap();
        let h = msg.headers.as_ref();
        eprintln!(
            "republished {} payload={:?} headers: Nats-Stream={:?} Nats-Subject={:?} Nats-Sequence={:?} Nats-Last-Sequence={:?} Nats-Time-Stamp={:?}",
            msg.subject,
            msg.payload,
            header(h, "Nats-Stream"),
            header(h, "Nats-Subject"),
            header(h, "Nats-Sequence"),
            header(h, "Nats-Last-Sequence"),
            header(h, "Nats-Time-Stamp"),
        );
        seen.push((
            msg.subject.to_string(),
            header(h, "Nats-Subject"),
            header(h, "Nats-Sequence").and_then(|s| s.parse::<u64>().ok()),
            header(h, "Nats-Last-Sequence").and_then(|s| s.parse::<u64>().ok()),
        ));
    }
    // The destination keeps the matched tokens; the original subject and
    // the stream sequence come as headers.
    assert_eq!(seen[0].0, "r.a");
    assert_eq!(seen[3].0, "r.a.deeper");
    assert_eq!(seen[0].1.as_deref(), Some("m.a"));
    let seqs: Vec<_> = seen.iter().map(|s| s.2).collect();
    assert_eq!(seqs, vec![Some(s1), Some(s2), Some(s3), Some(s4), Some(s5)]);
    let lasts: Vec<_> = seen.iter().map(|s| s.3).collect();
    // Nats-Last-Sequence is the previous sequence *on the same subject*
    // (0 for a subject's first message): one chain per subject.
    assert_eq!(lasts, vec![Some(0), Some(0), Some(s1), Some(0), Some(s3)]);

    // --- Dedupe: the same Nats-Msg-Id within the window answers the
    // original sequence, flagged as a duplicate, and stores nothing.
    let first = js
        .send_publish(
            "m.d",
            PublishMessage::build()
                .payload("x".into())
                .message_id("key-1"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let again = js
        .send_publish(
            "m.d",
            PublishMessage::build()
                .payload("y".into())
                .message_id("key-1"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    eprintln!("dedupe: first {first:?}, again {again:?}");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    // The same id on another subject of the stream is a duplicate too (the
    // window is per stream, not per subject).
    let elsewhere = js
        .send_publish(
            "m.e",
            PublishMessage::build()
                .payload("z".into())
                .message_id("key-1"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    eprintln!("dedupe on another subject: {elsewhere:?}");
    assert!(elsewhere.duplicate);
    assert_eq!(elsewhere.sequence, first.sequence);

    // --- Direct get: by sequence, and the next message of a subject at or
    // after a sequence (what repairs a broken per-subject chain).
    let by_seq = stream.direct_get(s3).await.expect("direct get by sequence");
    assert_eq!(by_seq.subject.as_str(), "m.a");
    assert_eq!(&by_seq.payload[..], b"3");
    let next = stream
        .direct_get_next_for_subject("m.a", Some(s1 + 1))
        .await
        .expect("direct get next for subject");
    assert_eq!(next.sequence, s3);
    let wildcard_next = stream
        .direct_get_next_for_subject("m.a.>", Some(1))
        .await
        .expect("direct get next for a wildcard subject");
    eprintln!(
        "direct get next_by_subj m.a.> from 1: seq {}",
        wildcard_next.sequence
    );
    assert_eq!(wildcard_next.sequence, s4);
    let beyond = stream
        .direct_get_next_for_subject("m.b", Some(s2 + 1))
        .await
        .expect_err("nothing on m.b after its only message");
    eprintln!("direct get with nothing to find: {beyond:?}");
    stream.delete_message(s2).await.expect("delete a message");
    let deleted = stream
        .direct_get(s2)
        .await
        .expect_err("a deleted message is not found");
    eprintln!("direct get of a deleted message: {deleted:?}");

    // --- Ordered consumer filtered on one subject from a sequence.
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: "m.a".into(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: s1 + 1,
            },
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = patiently("an ordered-consumer message", messages.next())
            .await
            .unwrap()
            .unwrap();
        got.push(msg.info().unwrap().stream_sequence);
    }
    assert_eq!(got, vec![s3, s5]);
    drop(messages);

    // --- Several filter subjects on one consumer (`filter_subjects`).
    let reply: serde_json::Value = js
        .request(
            "CONSUMER.CREATE.FACTS",
            &serde_json::json!({
                "stream_name": "FACTS",
                "config": {
                    "filter_subjects": ["m.a", "m.b"],
                    "ack_policy": "none",
                    "deliver_policy": "all",
                    "inactive_threshold": 5_000_000_000u64,
                },
            }),
        )
        .await
        .expect("the API answers");
    eprintln!("consumer with filter_subjects: {reply}");
    let kept = reply.pointer("/config/filter_subjects").cloned();
    let pending = reply.pointer("/num_pending").cloned();
    eprintln!("kept filter_subjects: {kept:?}; num_pending: {pending:?}");

    // 2.9.10 ignores the field: the consumer is created without any
    // filter and counts every message of the stream as pending. Never send
    // `filter_subjects` to this server.
    assert_eq!(kept, None);
    let total = js
        .get_stream("FACTS")
        .await
        .unwrap()
        .cached_info()
        .state
        .messages;
    assert_eq!(pending.and_then(|p| p.as_u64()), Some(total));

    // --- KV, replicated. async-nats 0.46's `create_key_value` first asks for
    // the account info, whose 2.9.10 reply lacks fields the client requires
    // (`reserved_memory`...), so it fails; creating the bucket's stream the
    // way the client would and opening it with `get_key_value` works.
    let account = js.query_account().await;
    eprintln!("account info: {:?}", account.as_ref().map(|_| "parsed"));
    assert!(account.is_err());
    js.create_stream(Config {
        name: "KV_facts".into(),
        subjects: vec!["$KV.facts.>".into()],
        num_replicas: 3,
        max_messages_per_subject: 1,
        max_age: Duration::from_secs(60),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("an R3 KV bucket stream");
    let kv = js.get_key_value("facts").await.expect("open the bucket");
    kv.put("conn.1", "info".into()).await.unwrap();
    let value = kv.get("conn.1").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"info"[..]));
    let mut keys = kv.keys().await.unwrap();
    assert_eq!(keys.next().await.unwrap().unwrap(), "conn.1");

    // --- Stream identity: `created` changes when the stream is recreated;
    // sequences start again at 1.
    let mut stream = js.get_stream("FACTS").await.unwrap();
    let before = stream.info().await.unwrap().created;
    js.delete_stream("FACTS").await.unwrap();
    let mut recreated = js.create_stream(stream_config("FACTS")).await.unwrap();
    let after = recreated.info().await.unwrap().created;
    eprintln!("created before {before}, after recreating {after}");
    assert_ne!(before, after);
    assert_eq!(publish(&js, "m.a", "new").await, 1);
}

/// Publishes until one is acknowledged; returns how long that took, the
/// failed attempts (how they failed, with counts) and the sequence.
async fn publish_until_acked(
    js: &jetstream::Context,
    subject: &str,
) -> (Duration, BTreeMap<String, usize>, u64) {
    let started = Instant::now();
    let mut failures = BTreeMap::new();
    loop {
        let attempt = async {
            js.publish(subject.to_owned(), "probe".into())
                .await?
                .await
                .map_err(|e| async_nats::jetstream::context::PublishError::with_source(e.kind(), e))
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(ack)) => return (started.elapsed(), failures, ack.sequence),
            Ok(Err(e)) => *failures.entry(format!("{:?}", e.kind())).or_default() += 1,
            Err(_) => *failures.entry("no answer in 10 s".into()).or_default() += 1,
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no publish acknowledged within 2 minutes: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_and_quorum_loss() {
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    let client = connect(&cluster.urls()).await;
    let js = jetstream::new(client.clone());
    let mut stream = patiently("the stream", async {
        loop {
            match js.create_stream(stream_config("CHAOS")).await {
                Ok(stream) => return stream,
                Err(e) => {
                    eprintln!("create stream: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await;
    let mut republished = client.subscribe("r.>").await.unwrap();
    client.flush().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(publish(&js, "m.a", &i.to_string()).await);
    }

    // kill -9 the stream's leader.
    let leader = patiently("the stream leader", async {
        loop {
            if let Some(leader) = cluster.stream_leader("CHAOS") {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let victim = cluster.index_of(&leader);
    cluster.kill(victim);
    let (took, failures, seq) = publish_until_acked(&js, "m.a").await;
    eprintln!(
        "after kill -9 of the stream leader {leader}: first ack after {took:?}, failures {failures:?}"
    );
    acked.push(seq);
    cluster.restart(victim);

    // Stop two nodes: quorum lost.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    cluster.stop(victim);
    cluster.stop(survivors[0]);
    let started = Instant::now();
    let attempt = async { js.publish("m.a", "lost?".into()).await?.await };
    let outcome = tokio::time::timeout(Duration::from_secs(30), attempt).await;
    eprintln!(
        "publish without quorum: {:?} after {:?}",
        outcome.as_ref().map(|r| r.as_ref().map_err(|e| e.kind())),
        started.elapsed()
    );
    match outcome {
        Ok(Ok(ack)) => panic!("acknowledged without quorum: {ack:?}"),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                PublishErrorKind::TimedOut
                    | PublishErrorKind::StreamNotFound
                    | PublishErrorKind::Other
            ),
            "{e:?}"
        ),
        Err(_) => {}
    }
    let started = Instant::now();
    let info = tokio::time::timeout(Duration::from_secs(30), stream.info()).await;
    eprintln!(
        "stream info without quorum: {:?} after {:?}",
        info.as_ref().map(|r| r
            .as_ref()
            .map(|i| i.state.last_sequence)
            .map_err(|e| e.to_string())),
        started.elapsed()
    );
    let started = Instant::now();
    let direct = tokio::time::timeout(Duration::from_secs(30), stream.direct_get(acked[0])).await;
    eprintln!(
        "direct get without quorum: {:?} after {:?}",
        direct
            .as_ref()
            .map(|r| r.as_ref().map(|m| m.sequence).map_err(|e| e.to_string())),
        started.elapsed()
    );

    // Quorum back.
    cluster.restart(victim);
    cluster.restart(survivors[0]);
    let (took, failures, seq) = publish_until_acked(&js, "m.a").await;
    eprintln!("after quorum returned: first ack after {took:?}, failures {failures:?}");
    acked.push(seq);

    // Nothing acknowledged was lost, and every message was republished at
    // least... count what the core subscription saw.
    for seq in &acked {
        let msg = stream
            .direct_get(*seq)
            .await
            .expect("an acknowledged message is kept");
        assert_eq!(msg.sequence, *seq);
    }
    let mut republished_seqs = Vec::new();
    while let Ok(Some(msg)) =
        tokio::time::timeout(Duration::from_millis(500), republished.next()).await
    {
        republished_seqs.push(header(msg.headers.as_ref(), "Nats-Sequence"));
    }
    eprintln!("acked {acked:?}; republished {republished_seqs:?}");
}
