//! CORS for browser clients on other origins, and the static demo directory.

mod support;

use support::*;

#[tokio::test]
async fn listed_origins_get_cors_with_credentials_others_get_nothing() {
    let t = start_with(|a| a.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = t
        .http
        .request(reqwest::Method::OPTIONS, t.url("/events?topic=demo%3Aa"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["authorization", "last-event-id", "content-type"] {
        assert!(allowed.contains(needed), "{needed} not in {allowed}");
    }

    let s = t
        .subscribe_with(&["demo:a"], &[], |r| {
            r.header("origin", "https://app.example")
        })
        .await
        .unwrap();
    assert_eq!(
        s.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(s.headers["content-type"], "text/event-stream");

    let s = t
        .subscribe_with(&["demo:a"], &[], |r| {
            r.header("origin", "https://evil.example")
        })
        .await
        .unwrap();
    assert!(s.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn wildcard_origin_allows_any_origin_without_credentials() {
    let t = start_with(|a| a.cors_origins = vec!["*".into()]).await;
    let s = t
        .subscribe_with(&["demo:a"], &[], |r| {
            r.header("origin", "http://localhost:1234")
        })
        .await
        .unwrap();
    assert_eq!(s.headers["access-control-allow-origin"], "*");
    assert!(s.headers.get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let t = start().await;
    let s = t
        .subscribe_with(&["demo:a"], &[], |r| {
            r.header("origin", "https://app.example")
        })
        .await
        .unwrap();
    assert!(s.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn demo_dir_is_served_next_to_the_api() {
    let dir = std::env::temp_dir().join(format!("tidings-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let demo = dir.clone();
    let t = start_with(move |a| a.demo_dir = Some(demo)).await;
    let index = t.http.get(t.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.text().await.unwrap(), "<h1>demo</h1>");
    let js = t.http.get(t.url("/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(
        t.http
            .get(t.url("/missing.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The API still answers.
    t.subscribe(&["demo:a"]).await.unwrap().connected().await;
    let _ = std::fs::remove_dir_all(&dir);
}
