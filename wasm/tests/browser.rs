//! The Rust API in headless Chromium against a real tidings-server, through
//! the test proxy of `web/tests/support` (started by `scripts/test-web.sh`,
//! which passes its address as `TIDINGS_TEST_PROXY` at compile time).
//!
//! Run: `scripts/test-web.sh` (or start `node web/tests/support/serve.mjs F`
//! yourself and `TIDINGS_TEST_PROXY=$(cat F) cargo test -p tidings-wasm
//! --target wasm32-unknown-unknown --test browser`).
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use futures::StreamExt;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Object, Promise, Reflect};
use serde::Deserialize;
use tidings_wasm::{Client, Error, PresenceEvent, PresenceQuery, State, Transport};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with(url: &str, init: &JsValue) -> Promise;
}

fn proxy() -> &'static str {
    // Not `env!`: the crate's other checks must compile without the proxy.
    match option_env!("TIDINGS_TEST_PROXY") {
        Some(origin) => origin,
        None => {
            panic!("set TIDINGS_TEST_PROXY to the test proxy's origin (see scripts/test-web.sh)")
        }
    }
}

/// A topic no other test uses.
fn fresh_topic(prefix: &str) -> String {
    format!("{prefix}:rs{}", (js_sys::Math::random() * 1e12) as u64)
}

async fn fetch_text(url: &str, init: &JsValue) -> (u16, String) {
    let response: web_sys::Response = JsFuture::from(fetch_with(url, init))
        .await
        .expect("fetch")
        .unchecked_into();
    let text = JsFuture::from(response.text().expect("text"))
        .await
        .expect("body");
    (response.status(), text.as_string().unwrap_or_default())
}

async fn get(path: &str) -> String {
    fetch_text(&format!("{}{path}", proxy()), &Object::new().into())
        .await
        .1
}

/// POST /publish with a JSON array of messages.
async fn publish(messages: &str, token: Option<&str>) {
    let init = Object::new();
    let headers = Object::new();
    Reflect::set(&headers, &"content-type".into(), &"application/json".into()).unwrap();
    if let Some(token) = token {
        Reflect::set(
            &headers,
            &"authorization".into(),
            &format!("Bearer {token}").into(),
        )
        .unwrap();
    }
    Reflect::set(&init, &"method".into(), &"POST".into()).unwrap();
    Reflect::set(&init, &"headers".into(), &headers).unwrap();
    Reflect::set(&init, &"body".into(), &messages.into()).unwrap();
    let (status, body) = fetch_text(&format!("{}/publish", proxy()), &init.into()).await;
    assert_eq!(status, 200, "publish failed: {body}");
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if check() {
            return;
        }
        TimeoutFuture::new(20).await;
    }
    panic!("gave up waiting for {what}");
}

async fn open_streams(topic: &str) -> u32 {
    get(&format!("/__open?topic={topic}"))
        .await
        .parse()
        .unwrap()
}

#[derive(Debug, Deserialize, PartialEq)]
struct Greeting {
    text: String,
}

#[wasm_bindgen_test]
async fn typed_handlers_and_streams_for_topics_and_a_pattern() {
    let (a, b) = (fresh_topic("demo"), fresh_topic("demo"));
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&a)
        .topic(format!("{b}:*"))
        .connect()
        .unwrap();
    let greetings = Rc::new(RefCell::new(Vec::new()));
    let sink = greetings.clone();
    let _greeting =
        client.on::<Greeting>("greeting", move |event| sink.borrow_mut().push(event.data));
    let mut counts = client.stream::<u32>("count");
    until("open", || client.state() == State::Open).await;

    publish(
        &format!(
            r#"[{{"topic":"{a}","type":"greeting","data":{{"text":"hi"}}}},
                {{"topic":"{b}:x:y","type":"count","data":99}},
                {{"topic":"{b}:x","type":"count","data":1}},
                {{"topic":"{b}:z","type":"count","data":2}}]"#
        ),
        None,
    )
    .await;
    let first = counts.next().await.unwrap().unwrap();
    assert_eq!((first.data, first.event_type.as_str()), (1, "count"));
    assert!(first.id.is_some());
    let second = counts.next().await.unwrap().unwrap();
    assert_eq!(second.data, 2);
    assert_ne!(second.id, first.id);
    until("the greeting", || !greetings.borrow().is_empty()).await;
    assert_eq!(*greetings.borrow(), [Greeting { text: "hi".into() }]);
    assert_eq!(
        client.last_event_id(),
        second.id,
        "the resume point is the last event"
    );
    client.close();
}

#[wasm_bindgen_test]
async fn data_that_does_not_decode_is_an_error_and_the_stream_goes_on() {
    let topic = fresh_topic("demo");
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .connect()
        .unwrap();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let sink = errors.clone();
    let _errors = client.on_error(move |error| sink.borrow_mut().push(error.clone()));
    let mut counts = client.stream::<u32>("count");
    until("open", || client.state() == State::Open).await;

    publish(
        &format!(r#"[{{"topic":"{topic}","type":"count","data":"seven"}},{{"topic":"{topic}","type":"count","data":8}}]"#),
        None,
    )
    .await;
    let bad = counts.next().await.unwrap();
    assert!(
        matches!(&bad, Err(Error::Decode { event_type, .. }) if event_type == "count"),
        "{bad:?}"
    );
    assert_eq!(counts.next().await.unwrap().unwrap().data, 8);
    assert!(
        matches!(&errors.borrow()[..], [Error::Decode { .. }]),
        "{:?}",
        errors.borrow()
    );
    client.close();
}

#[wasm_bindgen_test]
async fn close_ends_streams_and_frees_the_connection() {
    let topic = fresh_topic("demo");
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .connect()
        .unwrap();
    let mut counts = client.stream::<u32>("count");
    let states = Rc::new(RefCell::new(Vec::new()));
    let sink = states.clone();
    let _states = client.on_state(move |state| sink.borrow_mut().push(state));
    until("open", || client.state() == State::Open).await;
    assert_eq!(open_streams(&topic).await, 1);

    client.close();
    assert_eq!(counts.next().await, None, "streams end on close");
    assert_eq!(client.state(), State::Closed);
    assert_eq!(states.borrow().last(), Some(&State::Closed));
    for _ in 0..100 {
        if open_streams(&topic).await == 0 {
            return;
        }
        TimeoutFuture::new(20).await;
    }
    panic!("the stream stayed open after close()");
}

#[wasm_bindgen_test]
async fn the_connection_closes_when_the_last_handle_goes() {
    let topic = fresh_topic("demo");
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .connect()
        .unwrap();
    let subscription = client.on::<u32>("count", |_| {});
    until("open", || client.state() == State::Open).await;
    drop(client);
    TimeoutFuture::new(100).await;
    assert_eq!(
        open_streams(&topic).await,
        1,
        "a live Subscription keeps the connection"
    );
    drop(subscription);
    for _ in 0..100 {
        if open_streams(&topic).await == 0 {
            return;
        }
        TimeoutFuture::new(20).await;
    }
    panic!("the stream stayed open after the last handle was dropped");
}

#[wasm_bindgen_test]
async fn fetch_transport_sends_the_token_and_the_hook_renews_it() {
    let topic = fresh_topic("private");
    let hook_topic = topic.clone();
    let calls = Rc::new(RefCell::new(0));
    let counter = calls.clone();
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .transport(Transport::Fetch)
        .token("not-a-valid-token")
        .backoff_ms(20, 200)
        .token_hook(move || {
            *counter.borrow_mut() += 1;
            let topic = hook_topic.clone();
            async move { Some(get(&format!("/__token?subscribe={topic}")).await) }
        })
        .connect()
        .unwrap();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let sink = errors.clone();
    let _errors = client.on_error(move |error| sink.borrow_mut().push(error.clone()));
    let mut notes = client.stream::<String>("note");
    until("open with the fresh token", || {
        client.state() == State::Open
    })
    .await;
    assert_eq!(*calls.borrow(), 1);
    assert_eq!(*errors.borrow(), [Error::Auth { status: 401 }]);

    let publisher = get(&format!("/__token?publish={topic}")).await;
    publish(
        &format!(r#"[{{"topic":"{topic}","type":"note","data":"for your eyes"}}]"#),
        Some(&publisher),
    )
    .await;
    assert_eq!(notes.next().await.unwrap().unwrap().data, "for your eyes");
    client.close();
}

#[wasm_bindgen_test]
async fn a_lost_resume_point_calls_the_gap_handler() {
    let topic = fresh_topic("demo");
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .last_event_id("1-0")
        .connect()
        .unwrap();
    let gaps = Rc::new(RefCell::new(0));
    let counter = gaps.clone();
    let _gap = client.on_gap(move || *counter.borrow_mut() += 1);
    until("the gap notice", || *gaps.borrow() == 1).await;
    client.close();
}

#[wasm_bindgen_test]
async fn an_expired_token_goes_through_the_hook_and_the_stream_resumes() {
    let topic = fresh_topic("private");
    let hook_topic = topic.clone();
    let calls = Rc::new(RefCell::new(0));
    let counter = calls.clone();
    let client = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .token(get(&format!("/__token?subscribe={topic}")).await)
        .reset_backoff_after_ms(0)
        .token_hook(move || {
            *counter.borrow_mut() += 1;
            let topic = hook_topic.clone();
            async move { Some(get(&format!("/__token?subscribe={topic}")).await) }
        })
        .connect()
        .unwrap();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let sink = errors.clone();
    let _errors = client.on_error(move |error| sink.borrow_mut().push(error.clone()));
    let states = Rc::new(RefCell::new(Vec::new()));
    let sink = states.clone();
    let _states = client.on_state(move |state| sink.borrow_mut().push(state));
    let mut notes = client.stream::<u32>("note");
    until("open", || client.state() == State::Open).await;
    let publisher = get(&format!("/__token?publish={topic}")).await;
    let note = |n: u32| format!(r#"[{{"topic":"{topic}","type":"note","data":{n}}}]"#);
    publish(&note(1), Some(&publisher)).await;
    assert_eq!(notes.next().await.unwrap().unwrap().data, 1);
    states.borrow_mut().clear();

    get(&format!("/__expire?topic={topic}")).await;
    publish(&note(2), Some(&publisher)).await;
    assert_eq!(notes.next().await.unwrap().unwrap().data, 2);
    until("open again", || client.state() == State::Open).await;
    assert_eq!(*calls.borrow(), 1);
    assert_eq!(*errors.borrow(), [], "an expired token is not an error");
    assert_eq!(
        *states.borrow(),
        [
            State::Authenticating,
            State::Connecting { attempt: 0 },
            State::Open
        ]
    );
    client.close();
}

#[derive(Debug, Deserialize, PartialEq, Clone)]
struct Player {
    name: String,
}

#[wasm_bindgen_test]
async fn presence_lists_who_is_there_and_join_leave_handlers_are_typed() {
    let topic = fresh_topic("demo");
    let watcher = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .presence(true)
        .presence_info(r#"{"name":"Watcher"}"#)
        .connect()
        .unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (on_join, on_leave) = (seen.clone(), seen.clone());
    let _join = watcher.on::<PresenceEvent<Player>>("tidings.join", move |event| {
        on_join
            .borrow_mut()
            .push(("join", event.data.client.info.name))
    });
    let _leave = watcher.on::<PresenceEvent<Player>>("tidings.leave", move |event| {
        on_leave
            .borrow_mut()
            .push(("leave", event.data.client.info.name))
    });
    until("open", || watcher.state() == State::Open).await;
    let ann = Client::builder(format!("{}/events", proxy()))
        .topic(&topic)
        .presence_info(r#"{"name":"Ann"}"#)
        .connect()
        .unwrap();
    until("Ann open", || ann.state() == State::Open).await;

    let room = watcher.presence::<Player>(&topic).await.unwrap();
    assert_eq!(room.topic, topic);
    assert_eq!(room.total, 2);
    let names: Vec<String> = room.clients.iter().map(|c| c.info.name.clone()).collect();
    assert_eq!(names, ["Watcher", "Ann"]);
    assert!(!room.clients[1].verified);
    let first = ann
        .presence_page::<Player>(
            &topic,
            &PresenceQuery {
                limit: Some(1),
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.clients.len(), 1);
    assert!(first.next.is_some());

    ann.close();
    until("Ann's leave", || seen.borrow().len() >= 3).await;
    assert_eq!(
        *seen.borrow(),
        [
            ("join", "Watcher".to_owned()),
            ("join", "Ann".to_owned()),
            ("leave", "Ann".to_owned())
        ]
    );
    let refused = watcher
        .presence::<Player>("private:room")
        .await
        .unwrap_err();
    assert_eq!(refused, Error::Auth { status: 401 });
    watcher.close();
}
