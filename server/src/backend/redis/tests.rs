//! The cluster backend against the machine's real Redis
//! (`TIDINGS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`). Each test
//! uses its own stream key, so tests can share one Redis.

use std::time::Duration;

use tidings_core::{
    broker::{BrokerConfig, HistoryLimits, MessageId},
    topic::{Pattern, Topic},
};

use super::*;
use crate::backend::{ConnectionId, FrameSubscription};

fn redis_url() -> String {
    std::env::var("TIDINGS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings on a fresh stream key (deleted when the guard drops).
struct Key(RedisSettings);

impl Key {
    fn new(test: &str) -> Self {
        let mut settings = RedisSettings::new(redis_url());
        settings.stream_key = format!("tidings:test:unit:{test}:{:016x}", rand::random::<u64>());
        settings.block = Duration::from_millis(200);
        Self(settings)
    }

    async fn backend(&self) -> RedisBackend {
        RedisBackend::connect(self.0.clone(), BrokerConfig::default())
            .await
            .expect("Redis answers (start one, or set TIDINGS_TEST_REDIS_URL)")
    }

    async fn con(&self) -> MultiplexedConnection {
        Client::open(self.0.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Ok(client) = Client::open(self.0.url.as_str()) {
            if let Ok(mut con) = client.get_connection() {
                let _: Result<i64, _> = ::redis::cmd("DEL").arg(&self.0.stream_key).query(&mut con);
            }
        }
    }
}

fn message(topic: &str, data: &str) -> Outgoing {
    Outgoing {
        topic: Topic::new(topic).unwrap(),
        event_type: "message".into(),
        data: data.into(),
        exclude: None,
    }
}

fn subscribe(
    backend: &RedisBackend,
    pattern: &str,
    resume: Option<MessageId>,
) -> (FrameSubscription, ConnectionId, bool) {
    let connection = ConnectionId::random();
    let (sub, subscribed) =
        backend
            .fanout()
            .subscribe(&[Pattern::new(pattern).unwrap()], resume, connection);
    (sub, connection, subscribed.gap)
}

/// Receives `n` frames (a hang guard, not a timing assertion) and returns
/// their ids and bytes.
async fn recv(sub: &mut FrameSubscription, n: usize) -> Vec<(MessageId, String)> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < n {
            let want = n - got.len();
            sub.recv_many(&mut got, want).await.expect("subscribed");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("received {} of {n} messages", got.len()));
    got.iter()
        .map(|m| {
            (
                m.id(),
                String::from_utf8(m.payload().bytes.to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_publish_on_one_instance_reaches_both_in_stream_order_with_the_stream_ids() {
    let key = Key::new("order");
    let a = key.backend().await;
    let b = key.backend().await;
    let (mut on_a, _, _) = subscribe(&a, "t:>", None);
    let (mut on_b, _, _) = subscribe(&b, "t:>", None);

    let mut ids = a
        .publish(vec![message("t:1", "1"), message("t:2", "2")])
        .await
        .unwrap();
    ids.extend(b.publish(vec![message("t:3", "3")]).await.unwrap());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let got_a = recv(&mut on_a, 3).await;
    let got_b = recv(&mut on_b, 3).await;
    assert_eq!(got_a, got_b, "same frames, same order on both instances");
    assert_eq!(got_a.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(
        got_a[2].1,
        format!("id: {}\nevent: message\ndata: 3\n\n", ids[2])
    );

    // The stream holds the same ids.
    let mut con = key.con().await;
    let range: Value = ::redis::cmd("XRANGE")
        .arg(&key.0.stream_key)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let stored: Vec<_> = parse_entries(&range)
        .unwrap()
        .iter()
        .map(Entry::id)
        .collect();
    assert_eq!(stored, ids);
    assert!(a.ready().is_ok() && b.ready().is_ok());
}

#[tokio::test]
async fn exclude_names_a_connection_of_the_other_instance() {
    let key = Key::new("exclude");
    let a = key.backend().await;
    let b = key.backend().await;
    let (mut sender, sender_id, _) = subscribe(&b, "room:>", None);
    let (mut other, _, _) = subscribe(&b, "room:>", None);
    let (mut remote, _, _) = subscribe(&a, "room:>", None);

    let mut echo = message("room:1", "\"hi\"");
    echo.exclude = Some(sender_id.to_string());
    let ids = a
        .publish(vec![echo, message("room:1", "\"marker\"")])
        .await
        .unwrap();

    assert_eq!(recv(&mut other, 2).await.len(), 2);
    assert_eq!(recv(&mut remote, 2).await.len(), 2);
    // The sender gets the marker and nothing before it.
    let got = recv(&mut sender, 1).await;
    assert_eq!(got[0].0, ids[1]);
}

#[tokio::test]
async fn a_new_instance_loads_the_history_and_resumes_without_loss_or_duplicate() {
    let mut key = Key::new("preload");
    key.0.history = 1000;
    let a = key.backend().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(
            a.publish(vec![message("h:x", &i.to_string())])
                .await
                .unwrap(),
        );
    }

    let late = key.backend().await;
    // Resume after the second message: the three after it, then live ones.
    let (mut sub, _, gap) = subscribe(&late, "h:>", Some(ids[1]));
    assert!(!gap);
    let live = a.publish(vec![message("h:x", "5")]).await.unwrap();
    let got: Vec<_> = recv(&mut sub, 4)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, [ids[2], ids[3], ids[4], live[0]]);

    // An id from before the stream's oldest entry cannot be served.
    let (_, _, gap) = subscribe(&late, "h:>", Some(MessageId::new(ids[0].time - 1, 0)));
    assert!(gap);
    // An id ahead of this instance (from one that has read further) waits
    // for what follows it: no gap, nothing twice.
    let ahead = live[0].successor();
    let (mut waiting, _, gap) = subscribe(&late, "h:>", Some(ahead));
    assert!(!gap);
    let next = a.publish(vec![message("h:x", "6")]).await.unwrap();
    assert_eq!(recv(&mut waiting, 1).await[0].0, next[0]);
}

#[tokio::test]
async fn a_resume_id_redis_cannot_have_generated_yet_is_a_gap_not_a_silent_stream() {
    let key = Key::new("future");
    let a = key.backend().await;
    let future = MessageId::new(unix_ms() + 3_600_000, 0);
    let (mut sub, subscribed) = a
        .subscribe(
            vec![Pattern::new("u:>").unwrap()],
            Some(future),
            ConnectionId::random(),
        )
        .await
        .unwrap();
    assert!(subscribed.gap);
    let ids = a.publish(vec![message("u:1", "1")]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), sub.recv_many(&mut got, 1))
        .await
        .expect("delivered live")
        .unwrap();
    assert_eq!(got[0].id(), ids[0]);
}

#[tokio::test]
async fn a_long_history_loads_in_pages_with_nothing_lost_or_doubled() {
    let mut key = Key::new("pages");
    key.0.history = 2 * PRELOAD_PAGE + 1000;
    let total = key.0.history + 1001;
    let mut con = key.con().await;
    let mut pipe = ::redis::pipe();
    for i in 0..total {
        pipe.add_command(xadd(
            &key.0.stream_key,
            total,
            &message("p:x", &i.to_string()),
            0,
        ));
    }
    let ids: Vec<Value> = pipe.query_async(&mut con).await.unwrap();
    let ids: Vec<MessageId> = ids.iter().map(|v| parse_id(v).unwrap()).collect();

    let limits = HistoryLimits {
        per_topic: total,
        ..HistoryLimits::default()
    };
    let config = BrokerConfig::default()
        .history(limits)
        .queue_capacity(total);
    let a = RedisBackend::connect(key.0.clone(), config).await.unwrap();
    let loaded = &ids[total - key.0.history..];
    // From the entry just before the oldest loaded one: all of them, once,
    // in order.
    let (mut sub, _, gap) = subscribe(&a, "p:>", Some(ids[total - key.0.history - 1]));
    assert!(!gap);
    let got: Vec<_> = recv(&mut sub, loaded.len())
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, loaded);
    // Older than that: not loaded, so a gap.
    let (_, _, gap) = subscribe(&a, "p:>", Some(ids[total - key.0.history - 2]));
    assert!(gap);
}

#[tokio::test]
async fn history_bound_keeps_the_newest_entries_and_older_resumes_are_gaps() {
    let mut key = Key::new("bound");
    key.0.history = 3;
    let a = key.backend().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.extend(
            a.publish(vec![message("b:x", &i.to_string())])
                .await
                .unwrap(),
        );
    }
    let late = key.backend().await;
    // `MAXLEN ~` trims lazily, but the new instance loads only the newest 3.
    let (mut sub, _, gap) = subscribe(&late, "b:>", Some(ids[3]));
    assert!(!gap);
    let got: Vec<_> = recv(&mut sub, 2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, [ids[4], ids[5]]);
    let (_, _, gap) = subscribe(&late, "b:>", Some(ids[1]));
    assert!(gap, "ids before the loaded history resume with a gap");
}

#[tokio::test]
async fn a_lost_stream_is_recreated_above_the_ids_already_seen() {
    let key = Key::new("floor");
    let mut con = key.con().await;
    // Redis restarted empty and its clock is an hour behind what we saw.
    let seen = MessageId::new(unix_ms() + 3_600_000, 7);
    ensure_floor(&mut con, &key.0.stream_key, Some(seen))
        .await
        .unwrap();
    let a = key.backend().await;
    let ids = a.publish(vec![message("f:x", "1")]).await.unwrap();
    assert!(ids[0] > seen, "{} must be above {seen}", ids[0]);
    // An existing stream is left alone.
    ensure_floor(
        &mut con,
        &key.0.stream_key,
        Some(MessageId::new(u64::MAX >> 1, 0)),
    )
    .await
    .unwrap();
    let more = a.publish(vec![message("f:x", "2")]).await.unwrap();
    assert_eq!(more[0].time, ids[0].time);
}

#[tokio::test]
async fn entries_not_written_by_tidings_are_skipped_and_reading_goes_on() {
    let key = Key::new("foreign");
    let a = key.backend().await;
    let (mut sub, _, _) = subscribe(&a, "z:>", None);
    let mut con = key.con().await;
    let _: String = ::redis::cmd("XADD")
        .arg(&key.0.stream_key)
        .arg("*")
        .arg("hello")
        .arg("world")
        .query_async(&mut con)
        .await
        .unwrap();
    let ids = a.publish(vec![message("z:1", "1")]).await.unwrap();
    assert_eq!(recv(&mut sub, 1).await[0].0, ids[0]);
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_start_with_its_address() {
    // A port nothing listens on: bind one, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = RedisSettings::new(format!("redis://127.0.0.1:{port}"));
    let err = RedisBackend::connect(settings, BrokerConfig::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RedisStartError::Unreachable { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_fails_the_start_and_names_the_key() {
    let key = Key::new("wrongtype");
    let mut con = key.con().await;
    let _: () = ::redis::cmd("SET")
        .arg(&key.0.stream_key)
        .arg("not a stream")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = RedisBackend::connect(key.0.clone(), BrokerConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RedisStartError::BadStream { .. }), "{err}");
    assert!(err.to_string().contains(&key.0.stream_key), "{err}");
}

#[tokio::test]
async fn the_blocking_read_outlasts_the_clients_default_response_timeout() {
    // redis-rs gives up on a reply after 500 ms unless told otherwise; an
    // idle stream must not turn every blocking read into a reconnection.
    let mut key = Key::new("idle-read");
    key.0.block = Duration::from_millis(700);
    let a = key.backend().await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while a.health.polls.load(Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three blocking reads answered");
    assert_eq!(a.reader_connects(), 1, "the reader never reconnected");
    assert!(a.ready().is_ok());
}

#[tokio::test]
async fn a_reader_that_returns_after_its_entries_were_trimmed_says_so() {
    let mut key = Key::new("trimmed");
    key.0.history = 1000;
    let a = key.backend().await;
    let ids = a
        .publish(vec![
            message("r:1", "1"),
            message("r:1", "2"),
            message("r:1", "3"),
        ])
        .await
        .unwrap();
    let reader = reader::Reader {
        client: a.client.clone(),
        fanout: a.fanout.clone(),
        health: a.health.clone(),
        settings: key.0.clone(),
    };
    let mut con = key.con().await;
    // Everything after the first entry is still there.
    reader.check_trimmed(&mut con, ids[0]).await.unwrap();
    assert_eq!(a.health.possibly_missed.load(Relaxed), 0);
    // The bound removes the first two entries: a reader that had read only
    // the first one lost the second.
    let _: i64 = ::redis::cmd("XTRIM")
        .arg(&key.0.stream_key)
        .arg("MAXLEN")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    reader.check_trimmed(&mut con, ids[0]).await.unwrap();
    assert_eq!(a.health.possibly_missed.load(Relaxed), 1);
    // A client resuming from before the lost entry is told of the gap.
    let pattern = tidings_core::topic::Pattern::new("r:1").unwrap();
    let (_sub, subscribed) = a.fanout.broker().subscribe(&[pattern], Some(ids[0]));
    assert!(subscribed.gap, "a resume across lost entries reports a gap");
    // A reader that had read everything lost nothing.
    reader.check_trimmed(&mut con, ids[2]).await.unwrap();
    assert_eq!(a.health.possibly_missed.load(Relaxed), 1);
}

fn unix_ms() -> u64 {
    crate::backend::unix_millis()
}
