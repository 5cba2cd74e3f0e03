//! The real binary: startup lines, env configuration, the `token` command,
//! logs without query tokens, and graceful shutdown on SIGTERM with exit 0.

mod support;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
};

use serde_json::json;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tidings-server");
/// A secret long enough for HS256 (32 bytes or more).
const CLI_SECRET: &str = "cli-secret-0123456789abcdef0123456789";
/// Another one, for tokens the server must refuse.
const OTHER_SECRET: &str = "other-secret-0123456789abcdef0123456";

struct Spawned {
    child: Child,
    base: String,
    stdout_lines: Vec<String>,
}

impl Spawned {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and reads stdout up to the `listening on` line and the
/// lines printed with it.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("TIDINGS_JWT_SECRET")
        .env_remove("TIDINGS_PUBLIC")
        .env_remove("TIDINGS_PUBLIC_READ")
        .env_remove("TIDINGS_NO_PUBLIC")
        .env_remove("TIDINGS_JWT_AUDIENCE")
        .env_remove("TIDINGS_JWT_ISSUER")
        .env_remove("TIDINGS_JWT_MAX_TTL")
        .env_remove("TIDINGS_LISTEN")
        .env_remove("TIDINGS_REDIS_URL")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut base = None;
    // The last startup line is the hint on minting tokens.
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            base = Some(addr.to_owned());
        }
        lines.push(line.trim_end().to_owned());
        if line.contains("tidings-server token") {
            break;
        }
    }
    let Some(base) = base else {
        let _ = child.kill();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("no `listening on` line: {lines:?}\n{err}");
    };
    Spawned {
        child,
        base,
        stdout_lines: lines,
    }
}

fn mint(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("token")
        .args(args)
        .env_remove("TIDINGS_JWT_SECRET")
        .output()
        .unwrap()
}

async fn open(base: &str, topics: &[&str], extra: &[(&str, &str)]) -> Result<SseStream, Refused> {
    let url = format!("{base}/events?{}", query(topics, extra));
    let response = reqwest::get(url).await.unwrap();
    if response.status() != 200 {
        return Err(refused(response).await);
    }
    Ok(SseStream::new(response))
}

async fn post(base: &str, path_and_query: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path_and_query}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn token_command_mints_tokens_the_server_accepts_and_query_tokens_stay_out_of_logs() {
    let mut server = spawn(
        &["--listen", "127.0.0.1:0"],
        &[("TIDINGS_JWT_SECRET", CLI_SECRET)],
    );
    let out = mint(&[
        "--jwt-secret",
        CLI_SECRET,
        "--publish",
        "crm:>",
        "--subscribe",
        "crm:acme:>",
        "--ttl",
        "10m",
        "--sub",
        "ops",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let mut s = open(&server.base, &["crm:acme:*"], &[("access_token", &token)])
        .await
        .unwrap();
    s.connected().await;
    let r = post(
        &server.base,
        &format!("/publish?access_token={token}"),
        json!({"topic": "crm:acme:1", "data": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.event().await.event_type, "message");
    // The grant is a pattern: other tenants stay closed.
    let r = open(&server.base, &["crm:>"], &[("access_token", &token)])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 403);
    // A token from another secret is refused.
    let other = mint(&["--jwt-secret", OTHER_SECRET, "--subscribe", "crm:>"]);
    let other = String::from_utf8(other.stdout).unwrap().trim().to_owned();
    let r = open(&server.base, &["crm:acme:1"], &[("access_token", &other)])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);

    assert!(server.terminate().success());
    let logs = server.stderr();
    assert!(logs.contains("/events"), "requests are logged:\n{logs}");
    assert!(logs.contains("/publish"));
    assert!(!logs.contains(&token), "a query token was logged:\n{logs}");
    assert!(!logs.contains(&other));
    assert!(!logs.contains("access_token"), "{logs}");
}

#[test]
fn token_command_refuses_bad_input() {
    let out = mint(&["--jwt-secret", CLI_SECRET, "--subscribe", "a:>:b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last segment"));
    let out = mint(&["--subscribe", "a:>"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
    let out = mint(&[
        "--jwt-secret",
        CLI_SECRET,
        "--subscribe",
        "a:>",
        "--ttl",
        "soon",
    ]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn sigterm_closes_streams_with_a_short_retry_and_exits_zero() {
    let mut server = spawn(
        &["--listen", "127.0.0.1:0", "--jwt-secret", CLI_SECRET],
        &[],
    );
    let mut s = open(&server.base, &["demo:bye"], &[]).await.unwrap();
    s.connected().await;
    let r = post(
        &server.base,
        "/publish",
        json!({"topic": "demo:bye", "data": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let rest = s.rest().await;
    assert!(matches!(rest.first(), Some(Item::Event(_))), "{rest:?}");
    assert_eq!(
        rest.last(),
        Some(&Item::Retry(tidings_server::SHUTDOWN_RETRY_MS))
    );
    assert!(s.ended);
    // Stopped listening.
    assert!(
        reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn env_configuration_and_startup_hints() {
    let mut server = spawn(
        &[],
        &[
            ("TIDINGS_LISTEN", "127.0.0.1:0"),
            ("TIDINGS_PUBLIC", "room:>,lobby:*"),
        ],
    );
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    let printed = server.stdout_lines.join("\n");
    assert!(printed.contains("room:>, lobby:*"), "{printed}");
    // No secret: a random one, and the command to mint tokens with it.
    assert!(
        printed.contains("tidings-server token --jwt-secret "),
        "{printed}"
    );
    open(&server.base, &["room:1:2"], &[])
        .await
        .unwrap()
        .connected()
        .await;
    open(&server.base, &["lobby:x"], &[])
        .await
        .unwrap()
        .connected()
        .await;
    assert_eq!(
        open(&server.base, &["demo:x"], &[])
            .await
            .err()
            .unwrap()
            .status,
        401
    );

    // The printed secret mints tokens this server accepts.
    let secret = printed
        .split("token --jwt-secret ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let out = mint(&["--jwt-secret", secret, "--subscribe", "private:>"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    open(&server.base, &["private:x"], &[("access_token", &token)])
        .await
        .unwrap()
        .connected()
        .await;
    assert!(server.terminate().success());
}

#[test]
fn an_unreachable_redis_fails_the_start_with_its_address() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach Redis at 127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn short_secrets_are_refused_at_start_and_by_the_token_command_with_how_to_make_one() {
    for short in ["a", "tour-secret", &"x".repeat(31)] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", short])
            .env_remove("TIDINGS_JWT_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{short}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("at least 32"), "{stderr}");
        assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
        // The environment variable is checked the same way.
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env("TIDINGS_JWT_SECRET", short)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{short} in the environment");
        let out = mint(&["--jwt-secret", short, "--subscribe", "a:>"]);
        assert_eq!(out.status.code(), Some(2), "token with {short}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("openssl rand -hex 32"));
    }
}

#[tokio::test]
async fn flags_that_open_nothing_are_warned_about_at_start() {
    let mut server = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-public",
            "--public-read",
            "news:>",
        ],
        &[],
    );
    let printed = server.stdout_lines.join("\n");
    assert!(
        printed.contains("warning: --public-read news:> opens nothing: --no-public"),
        "{printed}"
    );
    // It opens nothing indeed.
    assert_eq!(
        open(&server.base, &["news:eu"], &[])
            .await
            .err()
            .unwrap()
            .status,
        401
    );
    assert!(server.terminate().success());
    let logs = server.stderr();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("--public-read news:> opens nothing")),
        "{logs}"
    );

    // Read-only public patterns without the default: --public-read alone.
    let mut server = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--public-read",
            "news:>",
            "--public-read",
            "news:eu",
        ],
        &[],
    );
    let printed = server.stdout_lines.join("\n");
    assert!(
        printed.contains("warning: --public-read news:eu opens nothing more"),
        "{printed}"
    );
    assert!(
        printed.contains("subscribe news:>, news:eu / publish -"),
        "{printed}"
    );
    open(&server.base, &["news:eu"], &[])
        .await
        .unwrap()
        .connected()
        .await;
    assert_eq!(
        open(&server.base, &["demo:x"], &[])
            .await
            .err()
            .unwrap()
            .status,
        401
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn the_token_command_writes_the_audience_and_issuer_the_server_requires() {
    let env = [
        ("TIDINGS_JWT_SECRET", CLI_SECRET),
        ("TIDINGS_JWT_AUDIENCE", "tidings,tidings-staging"),
        ("TIDINGS_JWT_ISSUER", "https://id.example.com/"),
        ("TIDINGS_JWT_MAX_TTL", "1h"),
    ];
    let mut server = spawn(&["--listen", "127.0.0.1:0"], &env);
    let minted = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("token")
            .args(args)
            .envs(env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let good = minted(&["--subscribe", "secure:>", "--ttl", "30m"]);
    open(&server.base, &["secure:a"], &[("access_token", &good)])
        .await
        .unwrap()
        .connected()
        .await;
    let long = minted(&["--subscribe", "secure:>", "--ttl", "2h"]);
    let r = open(&server.base, &["secure:a"], &[("access_token", &long)])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.message().contains("--jwt-max-ttl"), "{}", r.message());
    let other = minted(&["--subscribe", "secure:>", "--jwt-audience", "billing"]);
    let r = open(&server.base, &["secure:a"], &[("access_token", &other)])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.message().contains("audience"), "{}", r.message());
    assert!(server.terminate().success());
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--redis",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwt-audience",
        "--jwt-issuer",
        "--jwt-max-ttl",
        "--jwt-leeway",
        "TIDINGS_JWT_AUDIENCE",
        "TIDINGS_JWT_ISSUER",
        "TIDINGS_JWT_MAX_TTL",
        "TIDINGS_JWT_LEEWAY",
        "--public",
        "--public-read",
        "--heartbeat",
        "--retry-ms",
        "--write-timeout",
        "--max-body-bytes",
        "--max-batch",
        "--max-topics",
        "--max-connections",
        "--max-connections-per-ip",
        "--queue",
        "--history",
        "--cors-origin",
        "--demo-dir",
        "--shutdown-timeout",
        "TIDINGS_LISTEN",
        "TIDINGS_REDIS_URL",
        "TIDINGS_JWT_SECRET",
        "TIDINGS_PUBLIC",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
