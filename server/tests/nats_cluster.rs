//! NATS mode over real HTTP: two `tidings-server` processes on a private
//! 3-node JetStream cluster (real `nats-server`, never a mock).
// Both helper modules bring the shared wait helpers along.
#![allow(clippy::duplicate_mod)]

mod support_cluster;
mod support_nats;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support_cluster::{Instance, SseStream, patiently};
use support_nats::{NatsCluster, unique_name};

async fn cluster() -> NatsCluster {
    tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap()
}

/// An instance in NATS mode on `urls`, with its own stream and prefix.
fn instance(urls: &str, stream: &str) -> Instance {
    Instance::spawn(&[
        "--nats",
        urls,
        "--nats-stream",
        stream,
        "--nats-subject-prefix",
        &stream.to_lowercase(),
    ])
}

async fn publish_keyed(
    instance: &Instance,
    topic: &str,
    data: Value,
    key: &str,
) -> (StatusCode, Value) {
    let response = instance
        .http
        .post(instance.url("/publish"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(json!({"topic": topic, "data": data}).to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Value::String(e.to_string())),
    }
}

/// The events of `stream` until `n` messages came (gaps count as messages
/// and fail the caller's comparison).
async fn messages(stream: &mut SseStream, n: usize) -> Vec<Msg> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let e = stream.event().await;
        got.push((e.last_event_id, e.event_type, e.data));
    }
    got
}

/// An event: id, type, data.
type Msg = (String, String, String);
/// A subscriber: its instance, its topics, its stream, what it received.
type Sub<'a> = (&'a str, &'a [&'a str], SseStream, Vec<Msg>);

fn seq(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_messages_by_interest_and_resume_across_each_other() {
    let nats = cluster().await;
    let name = unique_name("S").to_uppercase();
    let a = instance(&nats.urls(), &name);
    let b = instance(&nats.urls(), &name);
    assert_eq!(a.health().await, StatusCode::OK);

    let mut on_a = a.subscribe(&["demo:room:*"], None).await;
    on_a.connected().await;
    let mut on_b = b.subscribe(&["demo:room:1", "demo:other:>"], None).await;
    on_b.connected().await;

    // Published on either instance, in order, same ids everywhere.
    let mut ids = Vec::new();
    for i in 0..6 {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(via.publish("demo:room:1", json!(i)).await);
    }
    let other = a.publish("demo:other:x:y", json!("o")).await;
    let room2 = b.publish("demo:room:2", json!("r2")).await;
    assert!(ids.windows(2).all(|w| seq(&w[0]) < seq(&w[1])), "{ids:?}");
    let got_a: Vec<String> = messages(&mut on_a, 7)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    let mut expected_a = ids.clone();
    expected_a.push(room2.clone());
    assert_eq!(got_a, expected_a);
    let got_b: Vec<String> = messages(&mut on_b, 7)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    let mut expected_b = ids.clone();
    expected_b.push(other.clone());
    assert_eq!(got_b, expected_b);

    // A client of A resumes on B, which never had interest in demo:room:2:
    // replayed from the stream, then live, no gap, no duplicate.
    let resume_from = ids[2].clone();
    let later: Vec<String> = vec![
        a.publish("demo:room:2", json!("x1")).await,
        b.publish("demo:room:1", json!("x2")).await,
    ];
    let mut resumed = b.subscribe(&["demo:room:*"], Some(&resume_from)).await;
    resumed.connected().await;
    let live = a.publish("demo:room:2", json!("x3")).await;
    let mut expected: Vec<String> = ids[3..].to_vec();
    expected.push(room2);
    expected.extend(later);
    expected.push(live.clone());
    let got: Vec<Msg> = messages(&mut resumed, expected.len()).await;
    assert!(got.iter().all(|m| m.1 != "tidings.gap"), "{got:?}");
    assert_eq!(got.into_iter().map(|m| m.0).collect::<Vec<_>>(), expected);

    // Idempotency across instances; a reused key for other data is 409.
    let (status, first) = publish_keyed(&a, "demo:room:9", json!("k"), "key-1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = publish_keyed(&b, "demo:room:9", json!("k"), "key-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["id"], again["id"]);
    let (status, reused) = publish_keyed(&b, "demo:room:9", json!("other"), "key-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{reused}");
    // The same key on another topic is another message.
    let (status, elsewhere) = publish_keyed(&b, "demo:room:8", json!("k"), "key-1").await;
    assert_eq!(status, StatusCode::OK, "{elsewhere}");
    assert_ne!(elsewhere["id"], first["id"]);

    // An id of another epoch: tidings.gap, then what the stream retains.
    let mut foreign = a.subscribe(&["demo:other:>"], Some("1-5")).await;
    foreign.connected().await;
    let gap = foreign.event().await;
    assert_eq!(gap.event_type, "tidings.gap");
    assert_eq!(foreign.event().await.last_event_id, other);
    // A resume id ahead of the stream: gap, then live.
    let future = format!("{}-{}", live.rsplit_once('-').unwrap().0, seq(&live) + 1000);
    let mut ahead = b.subscribe(&["demo:room:*"], Some(&future)).await;
    ahead.connected().await;
    assert_eq!(ahead.event().await.event_type, "tidings.gap");
    let next = a.publish("demo:room:3", json!("after")).await;
    assert_eq!(ahead.event().await.last_event_id, next);

    assert!(a.metric("tidings_nats_acks_total").await >= 1.0);
    drop(nats);
}

#[test]
fn only_one_engine_and_a_clear_error_without_nats() {
    let output = std::process::Command::new(support_cluster::BIN)
        .args(["--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1"])
        .args(["--nats", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("only one of --redis"), "{text}");
    let port = support_nats::cluster::free_port();
    let output = std::process::Command::new(support_cluster::BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--nats", &format!("nats://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("cannot reach NATS"), "{text}");
}

/// Waits for a successful publish (after an outage), retrying with the
/// same key.
async fn publish_until_taken(
    instances: &[&Instance],
    topic: &str,
    data: Value,
    key: &str,
) -> String {
    patiently("a publish taken by the stream", async {
        let mut i = 0;
        loop {
            let (status, answer) =
                publish_keyed(instances[i % instances.len()], topic, data.clone(), key).await;
            if status == StatusCode::OK {
                return answer["id"].as_str().unwrap().to_owned();
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_nats_node_and_an_instance_die_mid_stream_then_quorum_is_lost_and_comes_back() {
    let mut nats = cluster().await;
    let name = unique_name("C").to_uppercase();
    let mut a = instance(&nats.urls(), &name);
    let b = instance(&nats.urls(), &name);

    // Subscribers spread over both instances and over patterns.
    const TOPICS: [&str; 3] = ["demo:chaos:0", "demo:chaos:1", "demo:chaos:2"];
    let plans: [(&str, &[&str]); 4] = [
        ("a", &["demo:chaos:*"]),
        ("a", &["demo:chaos:1"]),
        ("b", &["demo:chaos:>"]),
        ("b", &["demo:chaos:2", "demo:chaos:0"]),
    ];
    let mut subs: Vec<Sub<'_>> = Vec::new();
    for (at, topics) in plans {
        let mut s = if at == "a" { &a } else { &b }
            .subscribe(topics, None)
            .await;
        s.connected().await;
        subs.push((at, topics, s, Vec::new()));
    }

    // A publisher alternates between the instances and retries a 503 with
    // the same key (on either instance) until it is taken.
    const TOTAL: usize = 240;
    let publisher = {
        let (a_base, b_base) = (a.base.clone(), b.base.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = Vec::with_capacity(TOTAL);
            for i in 0..TOTAL {
                let topic = TOPICS[i % 3];
                let key = format!("chaos-{i}");
                let mut attempt = 0;
                let id = loop {
                    let base = if (i + attempt) % 2 == 0 {
                        &a_base
                    } else {
                        &b_base
                    };
                    let sent = http
                        .post(format!("{base}/publish"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", &key)
                        .body(json!({"topic": topic, "data": i}).to_string())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        if response.status() == StatusCode::OK {
                            let answer: Value =
                                serde_json::from_str(&response.text().await.unwrap()).unwrap();
                            break answer["id"].as_str().unwrap().to_owned();
                        }
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                acked.push((topic, i, id));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        })
    };

    // Mid-stream: kill -9 the stream's leader node.
    read_some(&mut subs, 20).await;
    let leader = nats.stream_leader(&name).expect("a stream leader");
    let leader = nats.index_of(&leader);
    nats.kill(leader);
    read_some(&mut subs, 40).await;
    // Then kill -9 instance A: its subscribers resume on B.
    a.kill();
    for (at, topics, stream, got) in &mut subs {
        if *at != "a" {
            continue;
        }
        while let Some(e) = stream.next_event().await {
            got.push((e.last_event_id, e.event_type, e.data));
        }
        let last = got.last().map(|m| m.0.clone());
        let mut resumed = b.subscribe(topics, last.as_deref()).await;
        resumed.connected().await;
        *stream = resumed;
        *at = "b";
    }
    nats.restart(leader);
    let acked = patiently("the publisher", publisher).await.unwrap();

    let expectations: Vec<Vec<(String, String)>> = subs
        .iter()
        .map(|(_, topics, ..)| {
            acked
                .iter()
                .filter(|(t, ..)| matches(topics, t))
                .map(|(_, i, id)| (id.clone(), i.to_string()))
                .collect()
        })
        .collect();
    for ((_, topics, stream, got), expected) in subs.iter_mut().zip(&expectations) {
        while got.len() < expected.len() {
            let e = stream.event().await;
            got.push((e.last_event_id, e.event_type, e.data));
        }
        let seen: Vec<(String, String)> = got
            .iter()
            .map(|(id, _, d)| (id.clone(), d.clone()))
            .collect();
        assert_eq!(
            &seen, expected,
            "subscriber of {topics:?}: every acknowledged message once, in order"
        );
    }

    // Quorum lost: two of three nodes stopped. Publishes answer 503 with a
    // clear message, /healthz says 503.
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            nats.stop(i);
        }
    }
    let (status, answer) = publish_keyed(&b, "demo:chaos:0", json!("outage"), "outage-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let text = answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("message engine"), "{answer}");
    patiently("/healthz 503 without quorum", async {
        while b.health().await != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Quorum back: service resumes; the outage publish, retried with its
    // key, is delivered once; nothing acknowledged was lost.
    for i in 0..3 {
        if i != survivor {
            nats.restart(i);
        }
    }
    let id = publish_until_taken(&[&b], "demo:chaos:0", json!("outage"), "outage-1").await;
    let after = publish_until_taken(&[&b], "demo:chaos:0", json!("after"), "after-1").await;
    patiently("/healthz 200 with quorum back", async {
        while b.health().await != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for (_, topics, stream, _) in &mut subs {
        if !topics
            .iter()
            .any(|p| *p != "demo:chaos:1" && *p != "demo:chaos:2")
        {
            continue;
        }
        let got = messages(stream, 2).await;
        assert_eq!(
            got.iter()
                .map(|m| (m.0.clone(), m.2.clone()))
                .collect::<Vec<_>>(),
            vec![
                (id.clone(), "\"outage\"".to_owned()),
                (after.clone(), "\"after\"".to_owned())
            ],
            "{topics:?}"
        );
    }
}

/// Whether `patterns` (here: exact topics or `demo:chaos:*`/`demo:chaos:>`)
/// match `topic`.
fn matches(patterns: &[&str], topic: &str) -> bool {
    patterns
        .iter()
        .any(|p| p.ends_with('*') || p.ends_with('>') || *p == topic)
}

/// Reads until the subscribers together have `n` more messages.
async fn read_some(subs: &mut [Sub<'_>], n: usize) {
    let mut read = 0;
    while read < n {
        for (_, _, stream, got) in subs.iter_mut() {
            let e = stream.event().await;
            got.push((e.last_event_id, e.event_type, e.data));
            read += 1;
        }
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    query.finish()
}

async fn listed(instance: &Instance, topic: &str) -> Vec<String> {
    let (status, answer) = instance
        .get_json(&format!("/presence?{}", query(&[("topic", topic)])), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut ids: Vec<String> = answer["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connectionId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lives_in_nats_kv_both_instances_list_both_and_a_killed_ones_leave_is_told() {
    let nats = cluster().await;
    let name = unique_name("P").to_uppercase();
    let flags = |urls: &str| {
        vec![
            "--nats".to_owned(),
            urls.to_owned(),
            "--nats-stream".to_owned(),
            name.clone(),
            "--nats-subject-prefix".to_owned(),
            name.to_lowercase(),
            "--presence-ttl".to_owned(),
            "2s".to_owned(),
        ]
    };
    let args = flags(&nats.urls());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Instance::spawn(&args);
    let b = Instance::spawn(&args);
    let mut watcher = b
        .subscribe_query(&query(&[("topic", "demo:room"), ("presence", "1")]))
        .await;
    let watcher_id = watcher.connected().await;
    let mut victim = a.subscribe_query(&query(&[("topic", "demo:room")])).await;
    let victim_id = victim.connected().await;
    let mut joins = Vec::new();
    while joins.len() < 2 {
        let event = watcher.event().await;
        assert_eq!(event.event_type, "tidings.join", "{event:?}");
        joins.push(serde_json::from_str::<Value>(&event.data).unwrap()["connectionId"].clone());
    }
    assert_eq!(joins, [json!(watcher_id), json!(victim_id)]);
    let mut both = vec![watcher_id.clone(), victim_id.clone()];
    both.sort();
    assert_eq!(listed(&a, "demo:room").await, both, "a lists b's stream");
    assert_eq!(listed(&b, "demo:room").await, both, "b lists a's stream");
    // Alive longer than the ttl: refreshes keep it listed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(listed(&b, "demo:room").await, both);

    a.kill();
    let leave = watcher.event().await;
    assert_eq!(leave.event_type, "tidings.leave", "{leave:?}");
    let data: Value = serde_json::from_str(&leave.data).unwrap();
    assert_eq!(data["connectionId"], victim_id.as_str());
    assert_eq!(listed(&b, "demo:room").await, vec![watcher_id.clone()]);
    drop(victim);
}

/// A configuration letting the user `tidings` read everything except the
/// republished messages of the `denied` topics (`demo:loss:b` spelt
/// `b`) under `prefix`: the server drops them silently for its wildcard
/// subscriptions (stored and acknowledged, never delivered live), which is
/// how a real path loses a message without any event on the connection. (A
/// deny with a wildcard token does not filter deliveries on 2.9: the
/// subject is spelt out.)
fn lossy_nats(prefix: &str, denied: &[&str]) -> String {
    let deny: Vec<String> = denied
        .iter()
        .map(|t| format!("\"{prefix}.r.demo.loss.{t}\""))
        .collect();
    format!(
        r#"
authorization {{
  users = [
    {{ user: tidings, password: tidings,
      permissions: {{ subscribe: {{ allow: ">", deny: [{}] }} }} }}
  ]
}}
"#,
        deny.join(", ")
    )
}

/// The next event within `limit`, if any.
async fn event_within(stream: &mut SseStream, limit: Duration) -> Option<Msg> {
    tokio::time::timeout(limit, stream.event())
        .await
        .ok()
        .map(|e| (e.last_event_id, e.event_type, e.data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_last_message_lost_live_still_reaches_its_subscribers_or_they_are_told() {
    let name = unique_name("L").to_uppercase();
    let prefix = name.to_lowercase();
    let config = lossy_nats(&prefix, &["b", "c"]);
    let mut nats =
        tokio::task::spawn_blocking(move || NatsCluster::start_with_config(3, Some(&config)))
            .await
            .unwrap();
    let a = Instance::spawn(&[
        "--nats",
        &nats.urls(),
        "--nats-user",
        "tidings",
        "--nats-password",
        "tidings",
        "--nats-stream",
        &name,
        "--nats-subject-prefix",
        &prefix,
    ]);
    assert_eq!(a.health().await, StatusCode::OK);
    // History before the subscription (its start is above the sequences a
    // recreated stream begins with, in part 3).
    for i in 0..5 {
        a.publish("demo:before", json!(i)).await;
    }
    let mut sub = a.subscribe(&["demo:loss:*"], None).await;
    sub.connected().await;
    let first = a.publish("demo:loss:a", json!("first")).await;
    let got = event_within(&mut sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.0, first);

    // 1. The last message of demo:loss:b is stored and acknowledged but
    // never delivered live; nothing is published after it.
    let lost = a.publish("demo:loss:b", json!("lost")).await;
    let started = std::time::Instant::now();
    let got = event_within(&mut sub, Duration::from_secs(8)).await;
    println!("tail loss: {got:?} after {:?}", started.elapsed());
    let got = got.expect("the lost message (or tidings.gap) within 8 s");
    assert_eq!((got.0.as_str(), got.1.as_str()), (lost.as_str(), "message"));
    assert_eq!(got.2, "\"lost\"");

    // 2. demo:loss:b's message is lost live, then demo:loss:a's next one
    // arrives: the lost one can no longer come in order, so the streams of
    // its topic are told (or, had the probe been quicker, it came first).
    let lost_b = a.publish("demo:loss:b", json!("lost-b")).await;
    let later = a.publish("demo:loss:a", json!("later")).await;
    let started = std::time::Instant::now();
    let one = event_within(&mut sub, Duration::from_secs(8))
        .await
        .expect("an event");
    let two = event_within(&mut sub, Duration::from_secs(8)).await;
    println!("middle loss: {one:?} {two:?} after {:?}", started.elapsed());
    let two = two.expect("the lost message or tidings.gap within 8 s");
    let told = one.0 == later && two.1 == "tidings.gap";
    let delivered = one.0 == lost_b && two.0 == later;
    assert!(told || delivered, "{one:?} {two:?}");
    // Nothing else: no duplicate, no second notice.
    let extra = event_within(&mut sub, Duration::from_secs(3)).await;
    assert!(extra.is_none(), "{extra:?}");
    assert!(a.metric("tidings_nats_refetches_total").await >= 1.0);

    // 3. The stream is deleted and created again (sequences restart at
    // 1, below where the instance stood): the streams are told, and a
    // loss in the new epoch is still found.
    let client = async_nats::ConnectOptions::new()
        .user_and_password("tidings".into(), "tidings".into())
        .connect(nats.url(0))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut old = js.get_stream(&name).await.unwrap();
    let config = old.info().await.unwrap().config.clone();
    js.delete_stream(&name).await.unwrap();
    js.create_stream(config).await.unwrap();
    let told = event_within(&mut sub, Duration::from_secs(8))
        .await
        .expect("a notice");
    assert_eq!(told.1, "tidings.gap", "{told:?}");
    let again = a.publish("demo:loss:a", json!("again")).await;
    assert_eq!(seq(&again), 1);
    let got = event_within(&mut sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.0, again);
    let lost_new = a.publish("demo:loss:b", json!("lost-new")).await;
    let got = event_within(&mut sub, Duration::from_secs(8)).await;
    println!("loss in a new epoch: {got:?}");
    assert_eq!(got.expect("the lost message within 8 s").0, lost_new);

    // 4. A busy second: demo:loss:b's last message is lost, then more of
    // demo:loss:a's arrive than the instance remembers between two checks
    // (256). The check walks by topics and still finds it: too late to
    // come in order, so its topic's streams are told (or, had the probe
    // come between, it was delivered first).
    let lost_busy = a.publish("demo:loss:b", json!("lost-busy")).await;
    let mut busy = Vec::new();
    for batch in 0..4 {
        let messages: Vec<(&str, Value)> = (0..80)
            .map(|i| ("demo:loss:a", json!(batch * 80 + i)))
            .collect();
        busy.extend(a.publish_batch(&messages).await);
    }
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < busy.len() + 1 {
        match event_within(&mut sub, Duration::from_secs(8)).await {
            Some(event) => got.push(event),
            None => break,
        }
    }
    println!(
        "busy loss: {} events, the last {:?}, after {:?}",
        got.len(),
        got.last(),
        started.elapsed()
    );
    let ids: Vec<&str> = got
        .iter()
        .filter(|e| e.1 == "message")
        .map(|e| e.0.as_str())
        .collect();
    let told = got.len() == busy.len() + 1 && got.last().unwrap().1 == "tidings.gap";
    let delivered = ids.first() == Some(&lost_busy.as_str()) && ids[1..] == busy[..];
    assert!(
        told || delivered,
        "{:?}",
        &got[got.len().saturating_sub(3)..]
    );
    if told {
        assert_eq!(ids, busy);
    }
    let extra = event_within(&mut sub, Duration::from_secs(3)).await;
    assert!(extra.is_none(), "{extra:?}");

    // 5. demo:loss:c's first message since the subscription is lost; the
    // operator then lifts the filter, and before any check runs another
    // topic's message and c's next one arrive. c's chain starts here with
    // that next one, whose predecessor came after the subscription: it
    // was missed, cannot come in order any more (a later message went
    // out), so c's streams are told before c's next message.
    let lost_first = a.publish("demo:loss:c", json!("lost-first")).await;
    nats.reconfigure(&lossy_nats(&prefix, &["b"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = a.publish("demo:loss:a", json!("other")).await;
    let next = a.publish("demo:loss:c", json!("next")).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        match event_within(&mut sub, Duration::from_secs(8)).await {
            Some(event) => got.push(event),
            None => break,
        }
    }
    println!("first message lost: {lost_first} → {got:?}");
    let kinds: Vec<(&str, &str)> = got.iter().map(|e| (e.0.as_str(), e.1.as_str())).collect();
    assert_eq!(kinds.len(), 3, "{got:?}");
    assert_eq!(kinds[0], (other.as_str(), "message"));
    assert_eq!(kinds[1].1, "tidings.gap");
    assert_eq!(kinds[2], (next.as_str(), "message"));
    let extra = event_within(&mut sub, Duration::from_secs(3)).await;
    assert!(extra.is_none(), "{extra:?}");
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_far_longer_than_the_queue_is_replayed_from_the_stream_at_the_replay_rate_then_goes_live()
 {
    let nats = cluster().await;
    let name = unique_name("FAR").to_uppercase();
    // A queue of 32: a replay of hundreds goes on page by page, drawn from
    // a replay pace of 150 messages a second (bursts of 64).
    let a = Instance::spawn(&[
        "--nats",
        &nats.urls(),
        "--nats-stream",
        &name,
        "--nats-subject-prefix",
        &name.to_lowercase(),
        "--queue",
        "32",
        "--replay-rate",
        "150",
    ]);
    assert_eq!(a.health().await, StatusCode::OK);
    let mut ids = Vec::new();
    for round in 0..6 {
        let batch: Vec<(&str, Value)> = (0..50)
            .map(|i| {
                let topic = if i % 3 == 0 {
                    "demo:far:b"
                } else {
                    "demo:far:a"
                };
                (topic, json!(round * 50 + i))
            })
            .collect();
        ids.extend(a.publish_batch(&batch).await);
    }
    // Resumes after the 10th message, one with a pattern for both topics,
    // one with a single topic (every third message is not its own).
    let mut watcher = a.subscribe(&["demo:far:a"], None).await;
    watcher.connected().await;
    let started = std::time::Instant::now();
    let mut both = a.subscribe(&["demo:far:*"], Some(&ids[9])).await;
    both.connected().await;
    let mut only_a = a.subscribe(&["demo:far:a"], Some(&ids[9])).await;
    only_a.connected().await;
    let live = a.publish("demo:far:a", json!("live")).await;
    // Live messages are not paced: a live stream has it while both
    // replays still go on.
    assert_eq!(watcher.event().await.last_event_id, live);
    assert_eq!(a.metric("tidings_replays").await, 2.0, "still replaying");

    let mut expected: Vec<String> = ids[10..].to_vec();
    expected.push(live.clone());
    let got = messages(&mut both, expected.len()).await;
    assert!(got.iter().all(|m| m.1 != "tidings.gap"), "{got:?}");
    assert_eq!(got.into_iter().map(|m| m.0).collect::<Vec<_>>(), expected);

    let expected_a: Vec<String> = (10..300)
        .filter(|i| i % 50 % 3 != 0)
        .map(|i| ids[i].clone())
        .chain([live])
        .collect();
    let got = messages(&mut only_a, expected_a.len()).await;
    assert!(got.iter().all(|m| m.1 != "tidings.gap"), "{got:?}");
    assert_eq!(got.into_iter().map(|m| m.0).collect::<Vec<_>>(), expected_a);
    // 290 + 193 replayed, 2 × 32 of them in the first pages (not paced),
    // the first 64 paced ones from the bucket: 355 at 150 a second.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_000),
        "355 paced messages at 150/s took {took:?}"
    );
    drop(nats);
}
