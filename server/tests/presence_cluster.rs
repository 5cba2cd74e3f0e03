//! Presence across real `tidings-server` processes on a real Redis (each
//! test has its own stream key; presence keys live under it and are
//! deleted after): both instances list both streams, closing them or
//! killing an instance (its entries expire, a leave is told) removes them,
//! rights and paging hold, joins and leaves cross instances in order.

mod support_cluster;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support_cluster::*;
use tidings_server::auth::{Claims, Grants, keys::SigningKey};

fn q(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    query.finish()
}

async fn listed(instance: &Instance, topic: &str) -> Vec<String> {
    let (status, answer) = instance
        .get_json(&format!("/presence?{}", q(&[("topic", topic)])), None)
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

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_stream_on_each_instance_is_listed_by_both_until_it_closes() {
    let key = KeyGuard::new("presence-list");
    let a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    let mut on_a = a
        .subscribe_query(&q(&[
            ("topic", "demo:room"),
            ("presenceInfo", r#"{"name":"Ann"}"#),
        ]))
        .await;
    let ann = on_a.connected().await;
    // Listings sort by join time in ms, then by (random) connection id:
    // joins in the same millisecond would come in either order.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut on_b = b.subscribe_query(&q(&[("topic", "demo:room")])).await;
    let bob = on_b.connected().await;

    let both = sorted(vec![ann.clone(), bob.clone()]);
    eventually("both listed on a", async || {
        listed(&a, "demo:room").await == both
    })
    .await;
    assert_eq!(
        listed(&b, "demo:room").await,
        both,
        "b lists a's stream too"
    );
    let (_, answer) = b
        .get_json(&format!("/presence?{}", q(&[("topic", "demo:room")])), None)
        .await;
    assert_eq!(answer["total"], 2);
    let first = &answer["clients"][0];
    assert_eq!(first["connectionId"], ann.as_str(), "oldest first");
    assert_eq!(first["info"], json!({"name": "Ann"}));
    assert_eq!(first["verified"], false);

    drop(on_a);
    eventually("Ann gone everywhere", async || {
        listed(&b, "demo:room").await == vec![bob.clone()]
    })
    .await;
    drop(on_b);
    eventually("both gone", async || {
        listed(&a, "demo:room").await.is_empty() && listed(&b, "demo:room").await.is_empty()
    })
    .await;
    let left = keys_under(&key.url, &format!("{}:presence", key.key));
    assert!(
        left.iter().all(|k| k.ends_with(":presence:topics")),
        "no per-topic presence key outlives its last member: {left:?}"
    );
}

#[tokio::test]
async fn a_killed_instances_entries_expire_and_their_leave_is_told() {
    let key = KeyGuard::new("presence-kill");
    let flags = ["--presence-ttl", "2s"];
    let mut a = Instance::start(&key.url, &key.key, &flags);
    let b = Instance::start(&key.url, &key.key, &flags);
    let mut watcher = b
        .subscribe_query(&q(&[("topic", "demo:kill"), ("presence", "1")]))
        .await;
    let watcher_id = watcher.connected().await;
    let mut victim = a.subscribe_query(&q(&[("topic", "demo:kill")])).await;
    let victim_id = victim.connected().await;
    let mut joins = Vec::new();
    while joins.len() < 2 {
        let event = watcher.event().await;
        assert_eq!(event.event_type, "tidings.join");
        joins.push(serde_json::from_str::<Value>(&event.data).unwrap()["connectionId"].clone());
    }
    assert_eq!(joins, [json!(watcher_id), json!(victim_id)]);
    // Alive for longer than the ttl: refreshes keep it listed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        listed(&b, "demo:kill").await,
        sorted(vec![watcher_id.clone(), victim_id.clone()])
    );

    a.kill();
    let killed = Instant::now();
    let leave = watcher.event().await;
    let gone_after = killed.elapsed();
    assert_eq!(leave.event_type, "tidings.leave");
    let data: Value = serde_json::from_str(&leave.data).unwrap();
    assert_eq!(data["connectionId"], victim_id.as_str());
    assert_eq!(data["topic"], "demo:kill");
    assert_eq!(listed(&b, "demo:kill").await, vec![watcher_id.clone()]);
    eprintln!("the killed instance's entry went {gone_after:?} after kill -9 (ttl 2 s)");
    assert!(gone_after < Duration::from_secs(6), "{gone_after:?}");
    drop(victim);
}

#[tokio::test]
async fn rights_and_paging_hold_across_instances() {
    let key = KeyGuard::new("presence-pages");
    let a = Instance::start(&key.url, &key.key, &["--presence-page-max", "2"]);
    let b = Instance::start(&key.url, &key.key, &["--presence-page-max", "2"]);
    let sign = |subscribe: &[&str]| {
        let claims = Claims::new(
            Grants {
                publish: vec![],
                subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
                info: None,
            },
            Duration::from_secs(600),
            Some("tester".into()),
        );
        SigningKey::secret(SECRET.as_bytes())
            .unwrap()
            .sign(&claims)
            .unwrap()
    };
    let member = sign(&["team:>"]);
    let outsider = sign(&["other:>"]);
    let mut streams = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5 {
        let instance = if i % 2 == 0 { &a } else { &b };
        let mut stream = instance
            .subscribe_query(&q(&[("topic", "team:1"), ("access_token", &member)]))
            .await;
        expected.push(stream.connected().await);
        streams.push(stream);
        // One join per millisecond at most: the listing's order is theirs.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let path = |extra: &str| format!("/presence?topic=team:1{extra}");
    let (status, answer) = a.get_json(&path(""), Some(&outsider)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    let (status, _) = a.get_json(&path(""), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    eventually("all five counted", async || {
        b.get_json(&path(""), Some(&member)).await.1["total"] == 5
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        let instance = if page % 2 == 0 { &a } else { &b };
        let (status, answer) = instance
            .get_json(&path(&format!("&cursor={cursor}")), Some(&member))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["total"], 5);
        let clients = answer["clients"].as_array().unwrap();
        assert!(clients.len() <= 2);
        seen.extend(
            clients
                .iter()
                .map(|c| c["connectionId"].as_str().unwrap().to_owned()),
        );
        assert_eq!(clients[0]["info"], json!({"sub": "tester"}));
        assert_eq!(clients[0]["verified"], true);
        match answer["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen, expected,
        "every member once, oldest first, across pages and instances"
    );
}

#[tokio::test]
async fn joins_and_leaves_cross_instances_in_order_and_only_to_presence_streams() {
    let key = KeyGuard::new("presence-events");
    let a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    let mut watcher = a
        .subscribe_query(&q(&[("topic", "demo:ev"), ("presence", "1")]))
        .await;
    let watcher_id = watcher.connected().await;
    assert_eq!(watcher.event().await.event_type, "tidings.join");
    let mut plain = a.subscribe_query(&q(&[("topic", "demo:>")])).await;
    plain.connected().await;

    let mut names = Vec::new();
    for round in 0..3 {
        let info = format!(r#"{{"n":{round}}}"#);
        let mut member = b
            .subscribe_query(&q(&[("topic", "demo:ev"), ("presenceInfo", &info)]))
            .await;
        names.push(member.connected().await);
        drop(member);
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = watcher.event().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        seen.push((
            event.event_type,
            data["connectionId"].as_str().unwrap().to_owned(),
        ));
    }
    b.publish("demo:ev", json!("done")).await;
    assert_eq!(
        watcher.event().await.event_type,
        "message",
        "nothing more: {seen:?}"
    );
    let mut expected = Vec::new();
    for name in &names {
        expected.push(("tidings.join".to_owned(), name.clone()));
        expected.push(("tidings.leave".to_owned(), name.clone()));
    }
    // Each member's join comes before its leave; the members' lives may
    // interleave (one leaves while the next joins).
    for name in &names {
        let join = seen
            .iter()
            .position(|e| e == &("tidings.join".to_owned(), name.clone()));
        let leave = seen
            .iter()
            .position(|e| e == &("tidings.leave".to_owned(), name.clone()));
        assert!(
            join.is_some() && leave.is_some() && join < leave,
            "{seen:?}"
        );
    }
    assert_eq!(sorted_pairs(seen), sorted_pairs(expected));
    let first = plain.event().await;
    assert_eq!(
        first.event_type, "message",
        "a stream without presence=1 sees no joins"
    );
    assert_eq!(listed(&b, "demo:ev").await, vec![watcher_id]);

    // A member that speaks as soon as it is connected is heard after its
    // join, by a watcher on the other instance.
    let mut speaker = b.subscribe_query(&q(&[("topic", "demo:ev")])).await;
    let speaker_id = speaker.connected().await;
    a.publish("demo:ev", json!("hello")).await;
    let join = watcher.event().await;
    assert_eq!(join.event_type, "tidings.join");
    assert_eq!(
        serde_json::from_str::<Value>(&join.data).unwrap()["connectionId"],
        speaker_id.as_str()
    );
    assert_eq!(watcher.event().await.data, "\"hello\"");
}

fn sorted_pairs(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}
