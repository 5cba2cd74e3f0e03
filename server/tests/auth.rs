//! Auth over real HTTP: every way a token can fail, tenant isolation, the
//! three token channels, public patterns and RS256/ES256 keys.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::*;
use tidings_server::auth::keys::SigningKey;

fn bearer(token: &str) -> impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder + '_ {
    move |r| r.bearer_auth(token)
}

async fn refused_subscribe(t: &TestServer, topics: &[&str], token: Option<&str>) -> Refused {
    let result = match token {
        Some(token) => t.subscribe_with(topics, &[], bearer(token)).await,
        None => t.subscribe(topics).await,
    };
    match result {
        Ok(_) => panic!("subscribing to {topics:?} should be refused"),
        Err(refused) => refused,
    }
}

fn assert_401(r: &Refused) {
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.code(), "unauthorized");
    assert!(r.headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn no_token_is_401_outside_public_patterns() {
    let t = start().await;
    let r = refused_subscribe(&t, &["order:acme:1"], None).await;
    assert_401(&r);
    assert!(r.message().contains("token is required"), "{}", r.message());
    // One non-public topic among public ones is enough to refuse.
    assert_401(&refused_subscribe(&t, &["demo:a", "order:acme:1"], None).await);
    let r = t
        .publish(&json!({"topic": "order:acme:1", "data": 1}), None)
        .await
        .unwrap_err();
    assert_401(&r);
}

#[tokio::test]
async fn bad_signature_expired_not_yet_valid_and_alg_none_are_401() {
    let t = start().await;
    let wrong_key = SigningKey::secret(b"someone-else-0123456789abcdef0123456789")
        .unwrap()
        .sign(&claims(&["order:>"], &["order:>"]))
        .unwrap();
    let mut expired = claims(&["order:>"], &["order:>"]);
    expired.exp -= 3600;
    expired.nbf = expired.nbf.map(|n| n - 7200);
    let mut future = claims(&["order:>"], &["order:>"]);
    future.nbf = future.nbf.map(|n| n + 3600);
    future.exp += 3600;
    let good = token(&["order:>"], &["order:>"]);
    let payload = good.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let garbage = "not.a.token".to_owned();
    // A token whose signature was made with the right key over other claims.
    let mut tampered: Vec<&str> = good.split('.').collect();
    let other = token(&["*"], &[">"]);
    let other_payload = other.split('.').nth(1).unwrap();
    tampered[1] = other_payload;
    let tampered = tampered.join(".");

    for (name, bad) in [
        ("wrong key", wrong_key),
        ("expired", sign(expired)),
        ("not yet valid", sign(future)),
        ("alg none", none),
        ("garbage", garbage),
        ("tampered", tampered),
    ] {
        let r = refused_subscribe(&t, &["order:acme:1"], Some(&bad)).await;
        assert_401(&r);
        assert!(
            r.message().starts_with("invalid token"),
            "{name}: {}",
            r.message()
        );
        let r = t
            .publish(&json!({"topic": "order:acme:1", "data": 1}), Some(&bad))
            .await
            .unwrap_err();
        assert_401(&r);
        // A bad token is refused even for public topics.
        assert_401(&refused_subscribe(&t, &["demo:x"], Some(&bad)).await);
    }
    let r = refused_subscribe(&t, &["order:acme:1"], Some(&"x".repeat(20))).await;
    assert_401(&r);
    // Not a bearer scheme.
    let r = t
        .subscribe_with(&["demo:x"], &[], |r| {
            r.header("authorization", "Basic dXNlcjpwYXNz")
        })
        .await
        .err()
        .unwrap();
    assert_401(&r);
}

#[tokio::test]
async fn a_tenant_token_cannot_reach_other_tenants_or_widen_its_grant() {
    let t = start().await;
    let acme = token(&["order:acme:>"], &["order:acme:>"]);
    for topics in [
        &["order:globex:1"][..],
        &["order:>"],
        &["order:*"],
        &["order:*:1"],
        &["order:*:>"],
        &[">"],
        &["order:acme"],
        &["order:acme:1", "order:globex:1"],
    ] {
        let r = refused_subscribe(&t, topics, Some(&acme)).await;
        assert_eq!(r.status, 403, "{topics:?}: {r:?}");
        assert_eq!(r.code(), "forbidden");
    }
    for topic in ["order:globex:1", "order:acme", "demo2:x"] {
        let r = t
            .publish(&json!({"topic": topic, "data": 1}), Some(&acme))
            .await
            .unwrap_err();
        assert_eq!(r.status, 403, "{topic}");
        assert_eq!(r.code(), "forbidden");
    }
    // A batch with one foreign topic is refused as a whole.
    let batch =
        json!([{"topic": "order:acme:1", "data": 1}, {"topic": "order:globex:1", "data": 1}]);
    assert_eq!(
        t.publish(&batch, Some(&acme)).await.unwrap_err().status,
        403
    );

    // What the grant does cover works, and sees only its tenant.
    let mut s = t
        .subscribe_with(&["order:acme:*"], &[], bearer(&acme))
        .await
        .unwrap();
    s.connected().await;
    let globex = token(&["order:globex:>"], &[]);
    t.publish(
        &json!({"topic": "order:globex:1", "data": "secret"}),
        Some(&globex),
    )
    .await
    .unwrap();
    let id = t
        .publish(
            &json!({"topic": "order:acme:1", "data": "ours"}),
            Some(&acme),
        )
        .await
        .unwrap();
    let e = s.event().await;
    assert_eq!(e.last_event_id, id["id"].as_str().unwrap());
    assert_eq!(data(&e), json!("ours"));
}

#[tokio::test]
async fn subscribe_only_and_publish_only_tokens() {
    let t = start().await;
    let reader = token(&[], &["news:>"]);
    let writer = token(&["news:>"], &[]);
    assert_eq!(
        refused_subscribe(&t, &["news:eu"], Some(&writer))
            .await
            .status,
        403
    );
    let r = t
        .publish(&json!({"topic": "news:eu", "data": 1}), Some(&reader))
        .await
        .unwrap_err();
    assert_eq!(r.status, 403);
    let mut s = t
        .subscribe_with(&["news:eu"], &[], bearer(&reader))
        .await
        .unwrap();
    s.connected().await;
    let id = t
        .publish(&json!({"topic": "news:eu", "data": 1}), Some(&writer))
        .await
        .unwrap();
    assert_eq!(s.event().await.last_event_id, id["id"].as_str().unwrap());
}

#[tokio::test]
async fn tokens_work_by_header_cookie_and_query() {
    let t = start().await;
    let tok = token(&[], &["private:>"]);
    let mut by_header = t
        .subscribe_with(&["private:a"], &[], bearer(&tok))
        .await
        .unwrap();
    let cookie = format!("other=1; tidings_token={tok}");
    let mut by_cookie = t
        .subscribe_with(&["private:a"], &[], |r| r.header("cookie", cookie.as_str()))
        .await
        .unwrap();
    let mut by_query = t
        .subscribe_with(&["private:a"], &[("access_token", tok.as_str())], |r| r)
        .await
        .unwrap();
    for s in [&mut by_header, &mut by_cookie, &mut by_query] {
        s.connected().await;
    }
    // Publishing also accepts the query token.
    let writer = token(&["private:>"], &[]);
    let url = t.url(&format!("/publish?access_token={writer}"));
    let answer = t
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(json!({"topic": "private:a", "data": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    for s in [&mut by_header, &mut by_cookie, &mut by_query] {
        assert_eq!(s.event().await.event_type, "message");
    }
}

#[tokio::test]
async fn public_patterns_read_write_and_read_only() {
    let t = start_with(|a| {
        a.public = vec!["lobby:>".into()];
        a.public_read = vec!["news:>".into()];
    })
    .await;
    // The default demo namespace was replaced.
    assert_401(&refused_subscribe(&t, &["demo:a"], None).await);
    let mut s = t.subscribe(&["lobby:1", "news:eu"]).await.unwrap();
    s.connected().await;
    t.publish_one("lobby:1", json!(1)).await;
    let r = t
        .publish(&json!({"topic": "news:eu", "data": 1}), None)
        .await
        .unwrap_err();
    assert_401(&r);
    // A pattern wider than the public one is not public.
    assert_401(&refused_subscribe(&t, &[">"], None).await);
    assert_401(&refused_subscribe(&t, &["*:1"], None).await);

    let closed = start_with(|a| a.no_public = true).await;
    assert_401(&refused_subscribe(&closed, &["demo:a"], None).await);
}

async fn asymmetric(alg: Algorithm, public: &str, private: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let t = start_with(|a| {
        a.keys.jwt_secret = None;
        a.jwt_public_key = Some(format!("{dir}{public}").into());
    })
    .await;
    let pem = std::fs::read(format!("{dir}{private}")).unwrap();
    let key = SigningKey::private_pem(&pem).unwrap();
    assert_eq!(key.header.alg, alg);
    let good = key.sign(&claims(&[], &["secure:>"])).unwrap();
    let mut s = t
        .subscribe_with(&["secure:x"], &[], bearer(&good))
        .await
        .unwrap();
    s.connected().await;

    // The HS256 token of the default secret is refused: no secret is configured.
    assert_401(&refused_subscribe(&t, &["secure:x"], Some(&token(&[], &["secure:>"]))).await);
    // HS256 signed with the public key's text (algorithm confusion) is refused.
    let public_pem = std::fs::read(format!("{dir}{public}")).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&[], &["secure:>"]),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_401(&refused_subscribe(&t, &["secure:x"], Some(&confused)).await);
}

#[tokio::test]
async fn rs256_public_key() {
    asymmetric(Algorithm::RS256, "rs256-public.pem", "rs256-private.pem").await;
}

#[tokio::test]
async fn es256_public_key() {
    asymmetric(Algorithm::ES256, "es256-public.pem", "es256-private.pem").await;
}
