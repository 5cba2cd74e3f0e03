//! `GET /presence` and `presence=1` on one in-memory server over real HTTP:
//! who is listed (exact topics only), what `info` says and whether it is
//! verified, rights, paging, and joins and leaves in order.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;
use tidings_server::auth::Claims;

/// `GET /presence` with extra query pairs and an optional bearer token.
async fn presence(
    server: &TestServer,
    topic: &str,
    extra: &[(&str, &str)],
    token: Option<&str>,
) -> Result<Value, Refused> {
    let mut request = server
        .http
        .get(server.url(&format!("/presence?{}", query(&[topic], extra))));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = patiently("the /presence answer", request.send())
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return Err(refused(response).await);
    }
    let text = response.text().await.unwrap();
    Ok(serde_json::from_str(&text).unwrap())
}

fn ids(answer: &Value) -> Vec<String> {
    answer["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connectionId"].as_str().unwrap().to_owned())
        .collect()
}

/// The refusal of a subscription that must be refused.
fn refusal<T>(result: Result<T, Refused>) -> Refused {
    match result {
        Ok(_) => panic!("the server accepted what it must refuse"),
        Err(refused) => refused,
    }
}

async fn listed(server: &TestServer, topic: &str) -> Vec<String> {
    ids(&presence(server, topic, &[], None).await.unwrap())
}

#[tokio::test]
async fn exact_subscribers_are_listed_with_their_unverified_info_until_they_leave() {
    let server = start().await;
    let mut ann = server
        .subscribe_with(
            &["demo:room1"],
            &[("presenceInfo", r#"{"name": "Ann"}"#)],
            |r| r,
        )
        .await
        .unwrap();
    let ann_id = ann.connected().await;
    // Listings sort by join time in ms, then by (random) connection id:
    // joins in the same millisecond would come in either order.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut bob = server
        .subscribe(&["demo:room1", "demo:other"])
        .await
        .unwrap();
    let bob_id = bob.connected().await;
    // A pattern that matches the topic does not make a member.
    let mut watcher = server.subscribe(&["demo:>"]).await.unwrap();
    watcher.connected().await;

    let mut answer = Value::Null;
    eventually("both members listed", async || {
        answer = presence(&server, "demo:room1", &[], None).await.unwrap();
        answer["total"] == 2
    })
    .await;
    assert_eq!(answer["topic"], "demo:room1");
    assert_eq!(
        ids(&answer),
        [ann_id.clone(), bob_id.clone()],
        "oldest first"
    );
    let clients = answer["clients"].as_array().unwrap();
    assert_eq!(clients[0]["info"], json!({"name": "Ann"}));
    assert_eq!(clients[0]["verified"], false);
    assert_eq!(clients[1]["info"], json!({}));
    assert!(clients[0]["since"].as_u64().unwrap() <= clients[1]["since"].as_u64().unwrap());
    assert_eq!(answer["next"], Value::Null);
    assert_eq!(listed(&server, "demo:other").await, vec![bob_id.clone()]);
    // /metrics counts the entries (Ann: one topic, Bob: two) and their joins.
    eventually("three entries and their joins counted", async || {
        server.metric("tidings_presence_entries").await == 3.0
            && server.metric("tidings_presence_joins_total").await == 3.0
    })
    .await;

    drop(ann);
    eventually("Ann gone", async || {
        listed(&server, "demo:room1").await == [bob_id.clone()]
    })
    .await;
    drop(bob);
    eventually("everyone gone", async || {
        listed(&server, "demo:room1").await.is_empty()
    })
    .await;
    assert!(listed(&server, "demo:other").await.is_empty());
    assert_eq!(server.metric("tidings_presence_entries").await, 0.0);
    eventually("three leaves counted", async || {
        server.metric("tidings_presence_leaves_total").await == 3.0
    })
    .await;
    assert_eq!(server.metric("tidings_presence_failures_total").await, 0.0);
}

#[tokio::test]
async fn a_token_speaks_for_its_holder_and_the_same_rights_as_subscribing_apply() {
    let server = start().await;
    let mut named = claims(&[], &["room:>"]);
    named.tidings.info = Some(
        json!({"name": "Cleo", "role": "host"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let named = sign(named);
    let plain = sign(Claims {
        sub: Some("user-7".into()),
        ..claims(&[], &["room:>"])
    });
    let mut cleo = server
        .subscribe_with(
            &["room:1"],
            &[("presenceInfo", r#"{"name":"not me"}"#)],
            |r| r.bearer_auth(&named),
        )
        .await
        .unwrap();
    cleo.connected().await;
    let mut dan = server
        .subscribe_with(&["room:1"], &[], |r| r.bearer_auth(&plain))
        .await
        .unwrap();
    dan.connected().await;

    let mut answer = Value::Null;
    eventually("both listed", async || {
        answer = presence(&server, "room:1", &[], Some(&plain))
            .await
            .unwrap();
        answer["total"] == 2
    })
    .await;
    let clients = answer["clients"].as_array().unwrap();
    assert_eq!(
        clients[0]["info"],
        json!({"name": "Cleo", "role": "host"}),
        "the token's word, not presenceInfo"
    );
    assert_eq!(clients[0]["verified"], true);
    assert_eq!(clients[1]["info"], json!({"sub": "user-7"}));
    assert_eq!(clients[1]["verified"], true);

    // Rights: as for subscribing.
    let elsewhere = token(&[], &["other:>"]);
    let refused = presence(&server, "room:1", &[], Some(&elsewhere))
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.code(), "forbidden");
    assert!(
        refused.message().contains("room:1"),
        "{}",
        refused.message()
    );
    let anonymous = presence(&server, "room:1", &[], None).await.unwrap_err();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let server = start().await;
    for (extra, wanted) in [
        (vec![("presenceInfo", "[1,2]")], "JSON object"),
        (vec![("presenceInfo", "{nope")], "not JSON"),
    ] {
        let refused = refusal(server.subscribe_with(&["demo:x"], &extra, |r| r).await);
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.message().contains(wanted), "{}", refused.message());
    }
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(300));
    let refused = refusal(
        server
            .subscribe_with(&["demo:x"], &[("presenceInfo", &big)], |r| r)
            .await,
    );
    assert!(refused.message().contains("256"), "{}", refused.message());
    let refused = refusal(server.subscribe(&["$presence:demo:x"]).await);
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.message().contains("presence=1"),
        "{}",
        refused.message()
    );

    for (extra, wanted) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "5000")], "limit"),
        (vec![("cursor", "nope")], "cursor"),
    ] {
        let refused = presence(&server, "demo:x", &extra, None).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.message().contains(wanted), "{}", refused.message());
    }
    let refused = presence(&server, "demo:*", &[], None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    // Nobody may publish a join: `$` topics are the server's.
    let all = token(&[">"], &[">"]);
    let refused = server
        .publish(
            &json!({"topic": "$presence:demo:x", "type": "x", "data": 1}),
            Some(&all),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn large_topics_page_with_a_total_and_a_cursor() {
    let server = start_with(|a| a.presence_page_max = 3).await;
    let mut streams = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..7 {
        let mut s = server.subscribe(&["demo:big"]).await.unwrap();
        expected.push(s.connected().await);
        streams.push(s);
    }
    eventually("all seven listed", async || {
        presence(&server, "demo:big", &[("limit", "1")], None)
            .await
            .unwrap()["total"]
            == 7
    })
    .await;
    let refused = presence(&server, "demo:big", &[("limit", "4")], None)
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("1 to 3"),
        "{}",
        refused.message()
    );

    let first = presence(&server, "demo:big", &[], None).await.unwrap();
    assert_eq!(
        ids(&first).len(),
        3,
        "the default page is capped by --presence-page-max"
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut extra = vec![("limit", "2")];
        if let Some(c) = &cursor {
            extra.push(("cursor", c));
        }
        let page = presence(&server, "demo:big", &extra, None).await.unwrap();
        assert_eq!(page["total"], 7);
        seen.extend(ids(&page));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let mut sorted = expected.clone();
    sorted.sort();
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    assert_eq!(seen_sorted, sorted, "every member once");
    assert_eq!(seen.len(), 7);
}

#[tokio::test]
async fn presence_1_streams_see_joins_then_leaves_and_others_see_neither() {
    let server = start().await;
    let mut watcher = server
        .subscribe_with(&["demo:room2"], &[("presence", "1")], |r| r)
        .await
        .unwrap();
    let watcher_id = watcher.connected().await;
    // Its own join comes first.
    let own = watcher.event().await;
    assert_eq!(own.event_type, "tidings.join");
    assert_eq!(data(&own)["connectionId"], watcher_id);
    let mut namespace = server
        .subscribe_with(&["demo:>"], &[("presence", "1")], |r| r)
        .await
        .unwrap();
    namespace.connected().await;
    let mut plain = server.subscribe(&["demo:room2"]).await.unwrap();
    let plain_id = plain.connected().await;

    let mut ann = server
        .subscribe_with(
            &["demo:room2"],
            &[("presenceInfo", r#"{"name":"Ann"}"#)],
            |r| r,
        )
        .await
        .unwrap();
    let ann_id = ann.connected().await;
    drop(ann);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.publish_one("demo:room2", json!("after")).await;

    // The watcher: plain's join, Ann's join, Ann's leave, then the message.
    let mut seen = Vec::new();
    loop {
        let event = watcher.event().await;
        if event.event_type == "message" {
            break;
        }
        let d = data(&event);
        assert_eq!(d["topic"], "demo:room2");
        assert!(
            !event.last_event_id.is_empty(),
            "joins and leaves carry ids"
        );
        seen.push((
            event.event_type,
            d["connectionId"].as_str().unwrap().to_owned(),
        ));
        if d["connectionId"] == ann_id.as_str() {
            assert_eq!(d["info"], json!({"name": "Ann"}));
            assert_eq!(d["verified"], false);
        }
    }
    assert_eq!(
        seen,
        [
            ("tidings.join".to_owned(), plain_id.clone()),
            ("tidings.join".to_owned(), ann_id.clone()),
            ("tidings.leave".to_owned(), ann_id.clone()),
        ]
    );
    // The namespace watcher (a pattern with presence=1) sees the same.
    let mut namespace_seen = Vec::new();
    loop {
        let event = namespace.event().await;
        if event.event_type == "message" {
            break;
        }
        namespace_seen.push((
            event.event_type.clone(),
            data(&event)["connectionId"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(namespace_seen, seen);
    // Without presence=1: only the message.
    let first = plain.event().await;
    assert_eq!(
        (first.event_type.as_str(), first.data.as_str()),
        ("message", "\"after\"")
    );
}

#[tokio::test]
async fn a_resumed_presence_stream_catches_up_on_who_came_and_went() {
    let server = start().await;
    let mut watcher = server
        .subscribe_with(&["demo:room3"], &[("presence", "1")], |r| r)
        .await
        .unwrap();
    watcher.connected().await;
    let own = watcher.event().await;
    assert_eq!(own.event_type, "tidings.join");
    let resume = own.last_event_id.clone();
    drop(watcher);

    let mut eve = server.subscribe(&["demo:room3"]).await.unwrap();
    let eve_id = eve.connected().await;
    drop(eve);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut back = server
        .subscribe_with(&["demo:room3"], &[("presence", "1")], |r| {
            r.header("last-event-id", &resume)
        })
        .await
        .unwrap();
    back.connected().await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = back.event().await;
        seen.push((
            event.event_type.clone(),
            data(&event)["connectionId"].as_str().unwrap().to_owned(),
        ));
    }
    // The old stream's leave, Eve's join and leave (replayed), then its own join.
    assert_eq!(seen[1], ("tidings.join".to_owned(), eve_id.clone()));
    assert_eq!(seen[2], ("tidings.leave".to_owned(), eve_id));
    assert_eq!(seen[0].0, "tidings.leave");
    assert_eq!(seen[3].0, "tidings.join");
}
