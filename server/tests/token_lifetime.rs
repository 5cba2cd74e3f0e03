//! Token lifetime over real HTTP: a stream ends with `tidings.expired` when
//! its token does and resumes with a fresh token without loss; `exp` is
//! required; `--jwt-audience`, `--jwt-issuer` and `--jwt-max-ttl` refuse
//! with a 401 that says what was wrong.

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::*;
use tidings_server::{
    auth::{Claims, Grants},
    metrics::DropReason,
};

fn bearer(token: &str) -> impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder + '_ {
    move |r| r.bearer_auth(token)
}

/// A token for `subscribe` that lives `ttl`, and its `exp`.
fn short_lived(subscribe: &[&str], ttl: Duration) -> (String, u64) {
    let grants = Grants {
        publish: vec![],
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        info: None,
    };
    let claims = Claims::new(grants, ttl, None);
    let exp = claims.exp;
    (sign(claims), exp)
}

#[tokio::test]
async fn a_stream_ends_with_tidings_expired_when_its_token_does_and_resumes_without_loss() {
    // No leeway, so the 2 s token runs out within a few seconds.
    let t = start_with(|a| a.jwt_leeway = Duration::ZERO).await;
    let writer = token(&["secure:>"], &[]);
    let (short, exp) = short_lived(&["secure:>"], Duration::from_secs(2));

    let mut s = t
        .subscribe_with(&["secure:a"], &[], bearer(&short))
        .await
        .expect("the token is still valid");
    s.connected().await;
    // A public stream on the same server: it has no token, so it never expires.
    let mut public = t.subscribe(&["demo:a"]).await.unwrap();
    public.connected().await;

    let first = t
        .publish(&json!({"topic": "secure:a", "data": 1}), Some(&writer))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut last_id = String::new();
    let expired = patiently("tidings.expired", async {
        loop {
            let e = s
                .next_event()
                .await
                .expect("the stream ends only after tidings.expired");
            if e.event_type == "tidings.expired" {
                return e;
            }
            assert_eq!(e.event_type, "message");
            last_id = e.last_event_id.clone();
        }
    })
    .await;
    assert_eq!(last_id, first);
    assert_eq!(data(&expired), json!({"exp": exp}));
    // No `id:` on the expiry event: the client's resume point stays its last message.
    let raw = String::from_utf8_lossy(&s.raw).into_owned();
    let frame = &raw[raw.find("event: tidings.expired").unwrap()..];
    assert_eq!(
        frame,
        format!("event: tidings.expired\ndata: {{\"exp\":{exp}}}\n\n")
    );
    assert_eq!(
        s.rest().await,
        vec![],
        "the stream ends after tidings.expired"
    );
    assert!(s.ended);
    assert_eq!(t.server.metrics().drops(DropReason::Expired), 1);
    assert_eq!(
        t.metric("tidings_stream_drops_total{reason=\"expired\"}")
            .await,
        1.0
    );

    // The expired token is refused now; what was published meanwhile
    // arrives on a resume with a fresh token.
    let missed = t
        .publish(
            &json!([{"topic": "secure:a", "data": 2}, {"topic": "secure:a", "data": 3}]),
            Some(&writer),
        )
        .await
        .unwrap()["ids"]
        .clone();
    let r = t
        .subscribe_with(&["secure:a"], &[], bearer(&short))
        .await
        .err()
        .expect("an expired token is refused");
    assert_eq!(r.status, 401);
    let fresh = token(&[], &["secure:>"]);
    let mut resumed = t
        .subscribe_with(&["secure:a"], &[("lastEventId", &last_id)], bearer(&fresh))
        .await
        .unwrap();
    resumed.connected().await;
    for (want, id) in [2, 3].into_iter().zip(missed.as_array().unwrap()) {
        let e = resumed.event().await;
        assert_eq!(e.event_type, "message", "no gap: {e:?}");
        assert_eq!(&e.last_event_id, id.as_str().unwrap());
        assert_eq!(data(&e), json!(want));
    }

    // The public stream outlived the token.
    t.publish_one("demo:a", json!("still here")).await;
    assert_eq!(data(&public.event().await), json!("still here"));
}

#[tokio::test]
async fn a_token_without_exp_is_refused_with_a_401_that_says_so() {
    let t = start().await;
    let no_exp = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"tidings": {"subscribe": ["secure:>"], "publish": ["secure:>"]}}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let r = t
        .subscribe_with(&["secure:a"], &[], bearer(&no_exp))
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.message().contains("no `exp` claim"), "{}", r.message());
    let r = t
        .publish(&json!({"topic": "secure:a", "data": 1}), Some(&no_exp))
        .await
        .unwrap_err();
    assert_eq!(r.status, 401);
    assert!(r.message().contains("no `exp` claim"), "{}", r.message());
}

#[tokio::test]
async fn audience_issuer_and_max_ttl_refuse_with_what_was_wrong() {
    let t = start_with(|a| {
        a.claims.jwt_audience = vec!["tidings".into()];
        a.claims.jwt_issuer = Some("https://id.example.com/".into());
        a.jwt_max_ttl = Some(Duration::from_secs(3600));
    })
    .await;
    let good = || {
        let mut c = claims(&[], &["secure:>"]);
        c.aud = vec!["tidings".into()];
        c.iss = Some("https://id.example.com/".into());
        c
    };
    t.subscribe_with(&["secure:a"], &[], bearer(&sign(good())))
        .await
        .expect("a token with the audience, the issuer and a short life")
        .connected()
        .await;

    let mut wrong_aud = good();
    wrong_aud.aud = vec!["billing".into()];
    let mut no_aud = good();
    no_aud.aud.clear();
    let mut wrong_iss = good();
    wrong_iss.iss = Some("https://elsewhere.example.com/".into());
    let mut no_iss = good();
    no_iss.iss = None;
    let mut long = good();
    long.exp = long.iat.unwrap() + 2 * 3600;
    for (claims, says) in [
        (
            wrong_aud,
            "audience (`aud`) is not one this server accepts (`tidings`)",
        ),
        (no_aud, "no `aud` claim"),
        (wrong_iss, "issuer (`iss`) is not `https://id.example.com/`"),
        (no_iss, "no `iss` claim"),
        (long, "the token lives 2h (exp - iat), longer than the 1h"),
    ] {
        let r = t
            .subscribe_with(&["secure:a"], &[], bearer(&sign(claims)))
            .await
            .err()
            .unwrap();
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.message().contains(says), "{says}: {}", r.message());
    }
}
