//! The cluster engine against the machine's real Redis
//! (`TIDINGS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`). Each test
//! uses its own stream key, so tests can share one Redis.

use std::time::Duration;

use tidings_core::{
    broker::{BrokerConfig, HistoryLimits, Placement},
    message::{ConnectionId, EventType, IdempotencyKey},
    topic::{Pattern, Topic},
};

use super::*;
use crate::engine::FrameSubscription;

fn redis_url() -> String {
    std::env::var("TIDINGS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings on a fresh stream key (its keys are deleted when the guard drops).
struct Key(RedisSettings);

impl Key {
    fn new(test: &str) -> Self {
        let mut settings = RedisSettings::new(redis_url());
        settings.stream_key = format!("tidings:test:unit:{test}:{:016x}", rand::random::<u64>());
        settings.block = Duration::from_millis(200);
        Self(settings)
    }

    async fn engine(&self) -> RedisEngine {
        self.engine_with(HubConfig::default()).await
    }

    async fn engine_with(&self, config: HubConfig) -> RedisEngine {
        RedisEngine::connect(self.0.clone(), config)
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

    /// Every entry of the stream, as `XRANGE - +` answers.
    async fn entries(&self) -> Value {
        ::redis::cmd("XRANGE")
            .arg(&self.0.stream_key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.con().await)
            .await
            .unwrap()
    }

    /// Loses everything, as a Redis restarted without persistence does.
    async fn lose_everything(&self) {
        let mut con = self.con().await;
        let _: i64 = ::redis::cmd("DEL")
            .arg(&self.0.stream_key)
            .arg(meta_key(&self.0.stream_key))
            .query_async(&mut con)
            .await
            .unwrap();
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Ok(client) = Client::open(self.0.url.as_str()) {
            if let Ok(mut con) = client.get_connection() {
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg(format!("{}*", self.0.stream_key))
                    .query(&mut con)
                    .unwrap_or_default();
                for key in keys {
                    let _: Result<i64, _> = ::redis::cmd("DEL").arg(key).query(&mut con);
                }
            }
        }
    }
}

fn message(topic: &str, data: &str) -> Outgoing {
    Outgoing::new(Topic::new(topic).unwrap(), EventType::MESSAGE, data)
}

async fn publish(engine: &RedisEngine, batch: Vec<Outgoing>) -> Vec<MessageId> {
    engine
        .publish(batch)
        .await
        .expect("published")
        .iter()
        .map(|a| a.id)
        .collect()
}

/// Subscribes as `GET /events` does: places the resume id, asks Redis
/// about one ahead of this instance.
async fn subscribe(
    engine: &RedisEngine,
    pattern: &str,
    resume: Option<MessageId>,
) -> (FrameSubscription, ConnectionId, Option<GapReason>) {
    let connection = ConnectionId::from_random(rand::random());
    let text = resume.map(|id| id.to_string());
    let mut placement = engine.hub().place(text.as_deref());
    if let Placement::Ahead(_) = placement {
        placement = engine.confirm_ahead(placement).await.unwrap();
    }
    let (sub, subscribed) = engine.hub().subscribe(
        &[Pattern::new(pattern).unwrap()],
        placement,
        Some(connection),
    );
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

fn is_gap(frame: &(MessageId, String)) -> bool {
    frame.1.contains("event: tidings.gap")
}

#[tokio::test]
async fn a_publish_on_one_instance_reaches_both_in_log_order_with_the_same_ids() {
    let key = Key::new("order");
    let a = key.engine().await;
    let b = key.engine().await;
    let (mut on_a, _, _) = subscribe(&a, "t:>", None).await;
    let (mut on_b, _, _) = subscribe(&b, "t:>", None).await;

    let mut ids = publish(&a, vec![message("t:1", "1"), message("t:2", "2")]).await;
    ids.extend(publish(&b, vec![message("t:3", "3")]).await);
    assert_eq!(
        ids.iter().map(|id| id.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "one log, numbered without holes"
    );
    assert!(ids.iter().all(|id| id.epoch == ids[0].epoch));

    let got_a = recv(&mut on_a, 3).await;
    let got_b = recv(&mut on_b, 3).await;
    assert_eq!(got_a, got_b, "same frames, same order on both instances");
    assert_eq!(got_a.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(
        got_a[2].1,
        format!("id: {}\nevent: message\ndata: 3\n\n", ids[2])
    );

    // The stream holds the same ids.
    let range = key.entries().await;
    let stored: Vec<_> = parse_entries(&range)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Message { id, .. } => Some(id),
            Entry::Foreign(..) => None,
        })
        .collect();
    assert_eq!(stored, ids);
    assert!(a.ready().is_ok() && b.ready().is_ok());
}

#[tokio::test]
async fn exclude_names_a_connection_of_the_other_instance() {
    let key = Key::new("exclude");
    let a = key.engine().await;
    let b = key.engine().await;
    let (mut sender, sender_id, _) = subscribe(&b, "room:>", None).await;
    let (mut other, _, _) = subscribe(&b, "room:>", None).await;
    let (mut remote, _, _) = subscribe(&a, "room:>", None).await;

    let mut echo = message("room:1", "\"hi\"");
    echo.exclude = Some(sender_id);
    let ids = publish(&a, vec![echo, message("room:1", "\"marker\"")]).await;

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
    let a = key.engine().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(publish(&a, vec![message("h:x", &i.to_string())]).await);
    }

    let late = key.engine().await;
    // Resume after the second message: the three after it, then live ones.
    let (mut sub, _, gap) = subscribe(&late, "h:>", Some(ids[1])).await;
    assert_eq!(gap, None);
    let live = publish(&a, vec![message("h:x", "5")]).await;
    let got: Vec<_> = recv(&mut sub, 4)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, [ids[2], ids[3], ids[4], live[0]]);
}

#[tokio::test]
async fn a_resume_id_ahead_of_this_instance_waits_only_if_redis_has_produced_it() {
    let key = Key::new("ahead");
    let a = key.engine().await;
    let b = key.engine().await;
    let ids = publish(&a, vec![message("w:x", "1"), message("w:x", "2")]).await;
    // Pretend `b` lags: a client that saw ids[1] elsewhere may arrive
    // before b's reader does. Redis has produced it: wait for what follows.
    let produced = MessageId::new(ids[1].epoch, ids[1].seq);
    let placement = b.confirm_ahead(Placement::Ahead(produced)).await.unwrap();
    assert_eq!(placement, Placement::Ahead(produced));
    // The finding 2: an id from the future silenced the stream for
    // good. Redis has not produced it: a gap, then live messages.
    tokio::time::timeout(Duration::from_secs(20), async {
        while b.hub().position() != ids[1] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b reads the log");
    let future = MessageId::new(ids[1].epoch, 50_000);
    let (mut sub, _, gap) = subscribe(&b, "w:>", Some(future)).await;
    assert_eq!(gap, Some(GapReason::FutureId));
    let next = publish(&a, vec![message("w:x", "3")]).await;
    assert_eq!(recv(&mut sub, 1).await[0].0, next[0]);
}

#[tokio::test]
async fn a_long_history_loads_in_pages_with_nothing_lost_or_doubled() {
    let mut key = Key::new("pages");
    key.0.history = 2 * PRELOAD_PAGE + 1000;
    let total = key.0.history + 1001;
    let writer = key.engine().await;
    let mut ids = Vec::new();
    for chunk in 0..total.div_ceil(100) {
        let batch = (chunk * 100..((chunk + 1) * 100).min(total))
            .map(|i| message("p:x", &i.to_string()))
            .collect();
        ids.extend(publish(&writer, batch).await);
    }
    // Approximate trimming keeps at least `history`; a new instance loads
    // exactly the newest `history`.
    let limits = HistoryLimits {
        per_topic: total,
        total,
        ..HistoryLimits::default()
    };
    let config = HubConfig::default().broker(
        BrokerConfig::default()
            .history(limits)
            .queue_capacity(total)
            .queue_bytes(usize::MAX),
    );
    let a = key.engine_with(config).await;
    let loaded = &ids[total - key.0.history..];
    // From the entry just before the oldest loaded one: all of them, once,
    // in order.
    let (mut sub, _, gap) = subscribe(&a, "p:>", Some(ids[total - key.0.history - 1])).await;
    assert_eq!(gap, None);
    let got: Vec<_> = recv(&mut sub, loaded.len())
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, loaded);
    // Older than that: not loaded, so a gap.
    let (_, _, gap) = subscribe(&a, "p:>", Some(ids[total - key.0.history - 2])).await;
    assert_eq!(gap, Some(GapReason::HistoryTrimmed));
}

#[tokio::test]
async fn a_redis_that_lost_its_data_starts_a_new_epoch_and_live_streams_are_told() {
    let key = Key::new("epoch");
    let a = key.engine().await;
    let (mut sub, _, _) = subscribe(&a, "e:>", None).await;
    let before = publish(&a, vec![message("e:x", "1")]).await;
    assert_eq!(recv(&mut sub, 1).await[0].0, before[0]);
    key.lose_everything().await;
    let after = publish(&a, vec![message("e:x", "2")]).await;
    assert_ne!(after[0].epoch, before[0].epoch, "a new epoch");
    assert_eq!(after[0].seq, 1);
    let got = recv(&mut sub, 2).await;
    assert!(is_gap(&got[0]), "{got:?}");
    assert_eq!(got[1].0, after[0]);
    // A client resuming from the old epoch is told too.
    let (_, _, gap) = subscribe(&a, "e:>", Some(before[0])).await;
    assert_eq!(gap, Some(GapReason::UnknownEpoch));
}

#[tokio::test]
async fn entries_trimmed_while_an_instance_was_away_are_announced_to_its_streams() {
    let key = Key::new("trimmed");
    let a = key.engine().await;
    let b = key.engine().await;
    let (mut on_b, _, _) = subscribe(&b, "r:>", None).await;
    let first = publish(&a, vec![message("r:1", "1")]).await;
    assert_eq!(recv(&mut on_b, 1).await[0].0, first[0]);
    // b stops reading (its reader is gone); three more are published and
    // the stream's bound removes two of them before b is back.
    b.shutdown().await;
    let more = publish(
        &a,
        vec![
            message("r:1", "2"),
            message("r:1", "3"),
            message("r:1", "4"),
        ],
    )
    .await;
    let mut con = key.con().await;
    let _: i64 = ::redis::cmd("XTRIM")
        .arg(&key.0.stream_key)
        .arg("MAXLEN")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    // b's reader comes back after the first entry.
    let reader = Reader {
        client: b.link.client.clone(),
        hub: b.hub.clone(),
        health: b.health.clone(),
        settings: key.0.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let cursor = {
        let range: Value = ::redis::cmd("XRANGE")
            .arg(&key.0.stream_key)
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .unwrap();
        // Before the one entry left: where b stood (its entry was trimmed).
        let left = parse_entries(&range).unwrap();
        let at = left[0].stream_id();
        let (ms, seq) = at.split_once('-').unwrap();
        let seq: u64 = seq.parse().unwrap();
        if seq > 0 {
            format!("{ms}-{}", seq - 1)
        } else {
            format!("{}-0", ms.parse::<u64>().unwrap() - 1)
        }
    };
    tokio::spawn(reader.run(cursor, stop));
    let got = recv(&mut on_b, 2).await;
    assert!(is_gap(&got[0]), "{got:?}");
    assert_eq!(got[0].0, more[1], "resumable from the last lost entry");
    assert_eq!(got[1].0, more[2]);
    assert_eq!(b.health.losses.load(Relaxed), 1);
}

#[tokio::test]
async fn a_stream_that_went_back_gets_a_new_epoch_so_no_id_is_reused() {
    let key = Key::new("wentback");
    let a = key.engine().await;
    let (mut sub, _, _) = subscribe(&a, "g:>", None).await;
    let ids = publish(&a, (0..5).map(|i| message("g:x", &i.to_string())).collect()).await;
    recv(&mut sub, 5).await;
    a.shutdown().await;
    // Redis came back from a copy taken after the second message.
    let mut con = key.con().await;
    let _: () = ::redis::cmd("HSET")
        .arg(meta_key(&key.0.stream_key))
        .arg("n")
        .arg(2)
        .query_async(&mut con)
        .await
        .unwrap();
    let reader = Reader {
        client: a.link.client.clone(),
        hub: a.hub.clone(),
        health: a.health.clone(),
        settings: key.0.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(reader.run("0-0".into(), stop));
    let got = recv(&mut sub, 1).await;
    assert!(is_gap(&got[0]), "{got:?}");
    assert_ne!(got[0].0.epoch, ids[0].epoch);
    let next = publish(&a, vec![message("g:x", "5")]).await;
    assert_eq!(next[0].epoch, got[0].0.epoch);
    assert_eq!(a.health.went_back.load(Relaxed), 1);
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_across_instances() {
    let key = Key::new("idem");
    let a = key.engine().await;
    let b = key.engine().await;
    let (mut sub, _, _) = subscribe(&a, "i:>", None).await;
    let mut m = message("i:x", "1");
    m.idempotency_key = Some(IdempotencyKey::new("order-42").unwrap());
    let first = a.publish(vec![m.clone()]).await.unwrap();
    let retry = b.publish(vec![m.clone()]).await.unwrap();
    assert_eq!(first[0].id, retry[0].id);
    assert!(!first[0].repeat && retry[0].repeat);
    // The same key on another topic is another message.
    let mut elsewhere = m.clone();
    elsewhere.topic = Topic::new("i:y").unwrap();
    let other = b.publish(vec![elsewhere]).await.unwrap();
    assert_ne!(other[0].id, first[0].id);
    // The same key for a different message: refused, nothing appended.
    let mut changed = m.clone();
    changed.data = "2".into();
    match b.publish(vec![message("i:x", "x"), changed]).await {
        Err(PublishError::KeyReused(reused)) => {
            assert_eq!((reused.index, reused.original), (1, Some(first[0].id)));
        }
        other => panic!("{other:?}"),
    }
    let got = recv(&mut sub, 2).await;
    assert_eq!(got[0].0, first[0].id);
    assert_eq!(
        got[1].0, other[0].id,
        "the retry and the refused batch delivered nothing"
    );
}

#[tokio::test]
async fn entries_not_written_by_tidings_are_skipped_and_reading_goes_on() {
    let key = Key::new("foreign");
    let a = key.engine().await;
    let (mut sub, _, _) = subscribe(&a, "z:>", None).await;
    let mut con = key.con().await;
    let _: String = ::redis::cmd("XADD")
        .arg(&key.0.stream_key)
        .arg("*")
        .arg("hello")
        .arg("world")
        .query_async(&mut con)
        .await
        .unwrap();
    let ids = publish(&a, vec![message("z:1", "1")]).await;
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
    let err = RedisEngine::connect(settings, HubConfig::default())
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
    let err = RedisEngine::connect(key.0.clone(), HubConfig::default())
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
    let a = key.engine().await;
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

/// The engine's connections run on a thread of their own: the reader feeds
/// the hub even while the caller's runtime is busy (as a burst of
/// deliveries keeps the server's), so reads and publish replies never
/// queue behind stream tasks.
#[tokio::test]
async fn the_reader_follows_while_the_callers_runtime_is_busy() {
    let key = Key::new("busy-runtime");
    let engine = key.engine().await;
    let settings = key.0.clone();
    // Another instance publishes while this runtime's only thread is taken.
    let id = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let other = RedisEngine::connect(settings, HubConfig::default())
                    .await
                    .unwrap();
                let id = publish(&other, vec![message("a:b", "1")]).await[0];
                other.shutdown().await;
                id
            })
    })
    .join()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.hub().position() != id && std::time::Instant::now() < deadline {
        // Busy: this task never yields to the runtime.
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        engine.hub().position(),
        id,
        "the reader waited for the caller's runtime"
    );
}

/// Publishes that arrive while a script is in flight go out together in
/// the next one; each is answered with its own ids, in order, and a batch
/// with an idempotency key goes alone (its conflict refuses only itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_a_script_and_keep_their_own_ids_and_order() {
    let key = Key::new("groups");
    let engine = Arc::new(key.engine().await);
    let (mut sub, _, _) = subscribe(&engine, "q:>", None).await;
    let mut tasks = Vec::new();
    for p in 0..16 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..8 {
                let batch = vec![message("q:x", &format!("{p}.{i}")), message("q:x", "x")];
                ids.push(publish(&engine, batch).await);
            }
            ids
        }));
    }
    let mut conflicting = message("q:x", "a");
    conflicting.idempotency_key = Some(IdempotencyKey::new("k").unwrap());
    publish(&engine, vec![conflicting.clone()]).await;
    conflicting.data = "b".into();
    let refused = engine.publish(vec![message("q:x", "c"), conflicting]).await;
    assert!(matches!(
        refused,
        Err(PublishError::KeyReused(KeyReused { index: 1, .. }))
    ));
    let mut all = Vec::new();
    for task in tasks {
        for ids in task.await.unwrap() {
            assert_eq!(ids.len(), 2);
            assert_eq!(ids[1].seq, ids[0].seq + 1, "a batch stays together");
            all.extend(ids.iter().map(|id| id.seq));
        }
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 256, "every message its own id");
    let got = recv(&mut sub, 257).await;
    assert!(
        got.windows(2).all(|w| w[0].0.seq < w[1].0.seq),
        "delivered in log order"
    );
    let scripts = engine.link.scripts.load(Relaxed);
    assert!(
        scripts < 16 * 8,
        "{scripts} scripts for 129 publishes: none grouped"
    );
}

#[tokio::test]
async fn instances_writing_either_entry_format_share_one_stream() {
    let key = Key::new("formats");
    let new = key.engine().await;
    let mut old_settings = Key(key.0.clone());
    old_settings.0.entry_format = EntryFormat::Fields;
    let old = old_settings.engine().await;
    let (mut on_new, _, _) = subscribe(&new, "f:>", None).await;
    let (mut on_old, _, _) = subscribe(&old, "f:>", None).await;
    let mut sender = message("f:a", "from an old-format writer");
    sender.exclude = Some(ConnectionId::from_random(7));
    let mut ids = publish(&old, vec![sender]).await;
    ids.extend(publish(&new, vec![message("f:b", "line 1\nline 2")]).await);
    for sub in [&mut on_new, &mut on_old] {
        let got = recv(sub, 2).await;
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), ids);
        assert!(
            got[0].1.contains("data: from an old-format writer"),
            "{got:?}"
        );
        assert!(got[1].1.contains("data: line 1\ndata: line 2"), "{got:?}");
    }
    // What each wrote: a field per part (what earlier builds read), one field.
    let entries = key.entries().await;
    let names = |entry: &Value| -> Vec<String> {
        let fields = entry::array(entry).unwrap()[1].clone();
        entry::array(&fields)
            .unwrap()
            .iter()
            .step_by(2)
            .map(|f| String::from_utf8_lossy(entry::text(f).unwrap()).into_owned())
            .collect()
    };
    let entries = entry::array(&entries).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        names(&entries[0]),
        ["e", "n", "topic", "type", "data", "at", "exclude"]
    );
    assert_eq!(names(&entries[1]), ["m"]);
}
