//! Command line and environment configuration (clap).
//!
//! Every flag has an environment variable, so the same settings work in a
//! shell, a container and a unit file. `tidings-server --help` lists them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use tidings_core::topic::Pattern;

use crate::auth::TokenPolicy;

/// The namespace that the default configuration opens to anonymous clients.
pub const DEFAULT_PUBLIC: &str = "demo:>";

/// `--replay-rate`: messages a second all replays together may send.
pub const DEFAULT_REPLAY_RATE: u64 = 100_000;

/// `--replay-rate-per-ip`: messages a second all replays of one client
/// address may send.
pub const DEFAULT_REPLAY_RATE_PER_IP: u64 = 10_000;

/// `tidings-server`: real-time pub/sub over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(
    name = "tidings-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a signed access token (JWT) for clients and publishers.
    Token(TokenArgs),
}

/// Keys that sign and check tokens.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// HS256 secret shared by the server and whoever mints tokens: at least
    /// 32 bytes (`openssl rand -hex 32` makes one). Without it (and without
    /// a public key) the server makes up a random secret for this run and
    /// prints how to mint tokens with it.
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// Claims a token must carry; the `token` command writes them.
#[derive(Debug, Clone, Default, Args)]
pub struct ClaimArgs {
    /// Audience a token must name in its `aud` claim (repeatable; env:
    /// comma-separated; a token naming any one of them is accepted).
    /// Without it, `aud` is not checked.
    #[arg(
        long = "jwt-audience",
        env = "TIDINGS_JWT_AUDIENCE",
        value_delimiter = ','
    )]
    pub jwt_audience: Vec<String>,
    /// Issuer a token's `iss` claim must be (for example your identity
    /// provider's URL). Without it, `iss` is not checked.
    #[arg(long, env = "TIDINGS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

/// Settings of the running server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The chosen address is
    /// printed as `listening on http://ADDR`.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PEM file with the certificate chain to serve HTTPS with (HTTP/2 and
    /// HTTP/1.1 by ALPN); needs `--tls-key`. Reloaded on SIGHUP and when the
    /// file changes, without closing open streams.
    #[arg(long, env = "TIDINGS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDINGS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Redis URL for cluster mode (several instances share messages and history).
    #[arg(long, env = "TIDINGS_REDIS_URL")]
    pub redis: Option<String>,

    /// Redis key of the shared stream (cluster mode); instances that use the
    /// same key form one deployment.
    #[arg(long, env = "TIDINGS_REDIS_STREAM_KEY", default_value = crate::engine::redis::DEFAULT_STREAM_KEY)]
    pub redis_stream_key: String,

    /// Messages the shared Redis stream keeps (`MAXLEN ~`) and each instance
    /// loads at start, so clients can resume on any instance (cluster mode).
    #[arg(long, env = "TIDINGS_REDIS_HISTORY", default_value_t = crate::engine::redis::DEFAULT_HISTORY)]
    pub redis_history: usize,

    /// How this instance writes entries to the shared Redis stream: `2`
    /// (one field each, the default) or `1` (a field per part, the only
    /// form builds from before 2026-12-03 read). Every instance reads both:
    /// to upgrade a running cluster one instance at a time, start the new
    /// build with `1`, and switch to `2` once no older build runs.
    #[arg(
        long,
        env = "TIDINGS_REDIS_ENTRY_FORMAT",
        value_enum,
        default_value = "2"
    )]
    pub redis_entry_format: crate::engine::redis::EntryFormat,

    /// Milliseconds the instance waits before reading the shared Redis
    /// stream again after a read whose messages went to 32 or more streams
    /// (each message counted once per stream; 0: read again at once).
    /// Under a busy fan-out the next read then takes several messages
    /// together and each stream writes them in one go:
    /// more deliveries a second for less CPU, at up to this much more
    /// latency; a small fan-out or a quiet stream never waits.
    #[arg(
        long,
        env = "TIDINGS_REDIS_READ_PAUSE_MS",
        default_value_t = crate::engine::redis::DEFAULT_READ_PAUSE.as_millis() as u64
    )]
    pub redis_read_pause_ms: u64,

    /// How long a publish waits for Redis before it is answered 503 (cluster
    /// mode). The answer then says the message may have been published:
    /// retry with the same `Idempotency-Key`.
    #[arg(long, env = "TIDINGS_REDIS_PUBLISH_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub redis_publish_timeout: Duration,

    /// NATS JetStream mode (`--nats URL[,URL...]` and its options).
    #[command(flatten)]
    pub nats: crate::engine::nats::NatsArgs,

    /// Token signing/checking secret.
    #[command(flatten)]
    pub keys: KeyArgs,

    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key that
    /// checks tokens signed by your identity provider.
    #[arg(long, env = "TIDINGS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Audience and issuer tokens must carry.
    #[command(flatten)]
    pub claims: ClaimArgs,

    /// Refuse tokens that live longer than this (`exp` - `iat`, or `exp` -
    /// now when the token has no `iat`), e.g. `1h`.
    #[arg(long, env = "TIDINGS_JWT_MAX_TTL", value_parser = humantime::parse_duration)]
    pub jwt_max_ttl: Option<Duration>,

    /// Clock skew tolerated on a token's `exp` and `nbf` (whole seconds).
    /// A stream ends with `tidings.expired` once its token's `exp` plus
    /// this has passed.
    #[arg(long, env = "TIDINGS_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Pattern anyone may subscribe and publish to without a token
    /// (repeatable; env: comma-separated). Without --public and
    /// --public-read, `demo:>` is public.
    #[arg(long = "public", env = "TIDINGS_PUBLIC", value_delimiter = ',')]
    pub public: Vec<String>,

    /// Pattern anyone may subscribe to without a token, but not publish to
    /// (repeatable; env: comma-separated). Replaces the default `demo:>`
    /// like --public does.
    #[arg(
        long = "public-read",
        env = "TIDINGS_PUBLIC_READ",
        value_delimiter = ','
    )]
    pub public_read: Vec<String>,

    /// Open nothing to anonymous clients: no `demo:>`, and --public and
    /// --public-read are ignored.
    #[arg(long, env = "TIDINGS_NO_PUBLIC")]
    pub no_public: bool,

    /// Interval between heartbeat comments on idle streams (keep it under
    /// your proxies' idle timeouts).
    #[arg(long, env = "TIDINGS_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// Reconnection delay sent to clients in the `retry:` field (ms).
    #[arg(long = "retry-ms", env = "TIDINGS_RETRY_MS", default_value_t = 2000)]
    pub retry_ms: u64,

    /// A stream whose pending bytes cannot be written for this long is
    /// dropped (dead or stuck client).
    #[arg(long, env = "TIDINGS_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// A live stream written less than this long ago waits until then
    /// before its next write, and sends what arrived meanwhile together:
    /// fewer writes (less CPU) under a busy fan-out, for up to this much
    /// more latency. A stream quiet for longer writes at once (0: off).
    #[arg(long, env = "TIDINGS_WRITE_DELAY", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub write_delay: Duration,

    /// Without --write-delay: a live stream whose last write carried two
    /// or more messages (it is behind, or its topics are busy) waits until
    /// this long after that write before the next, and sends what arrived
    /// meanwhile together. A stream whose writes carry one message each
    /// never waits (0: off).
    #[arg(long, env = "TIDINGS_BUSY_WRITE_DELAY", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub busy_write_delay: Duration,

    /// Largest publish body in bytes (413 above).
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Most messages in one publish request (413 above).
    #[arg(long, env = "TIDINGS_MAX_BATCH", default_value_t = 100)]
    pub max_batch: usize,

    /// Most topics and patterns in one subscription (400 above).
    #[arg(long, env = "TIDINGS_MAX_TOPICS", default_value_t = 32)]
    pub max_topics: usize,

    /// Most open streams in total (503 above).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most open streams from one client IP (429 above).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Most streams from one client IP catching up from history at once (a
    /// resume with messages to replay; it counts until the replay reaches
    /// live). Over it the resume is refused with 429 `too_many_replays`
    /// and `Retry-After`.
    #[arg(long, env = "TIDINGS_MAX_REPLAYS_PER_IP", default_value_t = 8)]
    pub max_replays_per_ip: usize,

    /// Replays from history one client IP may start a second (bursts of one
    /// second's worth; 0: no limit). A resume over it is refused with 429
    /// `too_many_replays` and `Retry-After` before it is placed, so a
    /// client that loops "resume from the start, read, close" costs the
    /// server a refusal, not a subscription. Only resumes that had
    /// messages to replay count.
    #[arg(long, env = "TIDINGS_REPLAY_STARTS_PER_IP", default_value_t = 50)]
    pub replay_starts_per_ip: u64,

    /// Messages a second that all replays together may send from history
    /// (0: unlimited). Live messages are never paced; a resume far behind
    /// takes longer instead of taking the CPU from live traffic.
    #[arg(long, env = "TIDINGS_REPLAY_RATE", default_value_t = DEFAULT_REPLAY_RATE)]
    pub replay_rate: u64,

    /// Messages a second that all replays of one client IP together may
    /// send from history, within `--replay-rate` (bursts of a tenth of a
    /// second's worth; 0: no per-address limit). Clients looping "resume
    /// from the start, read a little, close" from one address then cost
    /// the server at most this, however many replays they start.
    #[arg(long, env = "TIDINGS_REPLAY_RATE_PER_IP", default_value_t = DEFAULT_REPLAY_RATE_PER_IP)]
    pub replay_rate_per_ip: u64,

    /// Most open TCP connections of any kind (streams, publishes, idle
    /// keep-alive). Over it new connections get 503 and are closed, or are
    /// closed at accept once a small reserve for those answers is used up.
    /// Default: `--max-connections` + 1024, lowered to fit the process's
    /// open-file limit.
    #[arg(long, env = "TIDINGS_MAX_TCP_CONNECTIONS")]
    pub max_tcp_connections: Option<usize>,

    /// Most open TCP connections from one client IP (429 above). Default:
    /// twice `--max-connections-per-ip`. Not applied with
    /// `--trust-forwarded-for` (every connection then comes from the proxy).
    #[arg(long, env = "TIDINGS_MAX_TCP_CONNECTIONS_PER_IP")]
    pub max_tcp_connections_per_ip: Option<usize>,

    /// Longest time to receive a request's headers once they have started
    /// (408 and close above; slowloris).
    #[arg(long, env = "TIDINGS_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Longest time to receive a whole request body, counted from the end of
    /// its headers (408 and close above).
    #[arg(long, env = "TIDINGS_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Who writes HTTP/1.1 event streams: `direct` (default) is `lean`,
    /// and on a cleartext socket a stream waiting for its next message is
    /// written by the publisher itself, without waking the stream's task;
    /// `lean` writes them straight to the socket after the response head,
    /// keeping no per-connection buffers while a stream is open; `hyper`
    /// leaves them to hyper like every other response (for comparison).
    #[arg(long, env = "TIDINGS_STREAM_WRITER", value_enum, default_value_t = StreamWriter::Direct)]
    pub stream_writer: StreamWriter,

    /// A connection with no request in progress (idle keep-alive, or a new
    /// connection that sends nothing) is closed after this long.
    #[arg(long, env = "TIDINGS_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// Messages queued for one subscriber before it counts as too slow and
    /// its stream is closed (it resumes from history).
    #[arg(long, env = "TIDINGS_QUEUE", default_value_t = 1024)]
    pub queue: usize,

    /// Bytes queued for one subscriber before it counts as too slow and its
    /// stream is closed (it resumes from history). One larger message still
    /// goes through.
    #[arg(long, env = "TIDINGS_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub queue_bytes: usize,

    /// Bytes queued across all subscribers: over it, a subscriber that
    /// already has something waiting is cut instead of growing.
    #[arg(long, env = "TIDINGS_QUEUE_TOTAL_BYTES", default_value_t = 256 << 20)]
    pub queue_total_bytes: usize,

    /// How long a publish's idempotency key is remembered: a retry with
    /// the same key within it answers the original id.
    #[arg(long, env = "TIDINGS_IDEMPOTENCY_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,

    /// Messages kept per topic for resuming with `Last-Event-ID`.
    #[arg(long, env = "TIDINGS_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Origins allowed to use the API from a browser (repeatable; env:
    /// comma-separated). `*` allows any origin but without cookies.
    #[arg(
        long = "cors-origin",
        env = "TIDINGS_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Take the client address for per-IP limits from the last
    /// `X-Forwarded-For` entry (only behind a proxy you control).
    #[arg(long, env = "TIDINGS_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Directory of static files served at `/` (the demo app).
    #[arg(long, env = "TIDINGS_DEMO_DIR")]
    pub demo_dir: Option<PathBuf>,

    /// How long a stream's presence entry lives in the engine without a
    /// refresh: each instance refreshes its own every third of it, so a
    /// killed instance's entries (and their `tidings.leave`) go within
    /// about this long.
    #[arg(long, env = "TIDINGS_PRESENCE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,

    /// Most clients one `GET /presence` answer lists (`limit` may ask for
    /// fewer; `cursor` pages through the rest).
    #[arg(long, env = "TIDINGS_PRESENCE_PAGE_MAX", default_value_t = 1000)]
    pub presence_page_max: usize,

    /// Longest wait for publishes in flight on shutdown.
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

impl Default for ServeArgs {
    /// The defaults of the command line, with `--listen 127.0.0.1:0`.
    fn default() -> Self {
        let mut args = Cli::parse_from(["tidings-server"]).serve;
        args.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        args
    }
}

impl ServeArgs {
    /// The patterns open to anonymous clients for subscribing and publishing.
    ///
    /// `demo:>` is the default for both when neither `--public` nor
    /// `--public-read` is given; `--no-public` opens nothing at all.
    pub fn public_patterns(&self) -> (Vec<String>, Vec<String>) {
        if self.no_public {
            return (Vec::new(), Vec::new());
        }
        if self.public.is_empty() && self.public_read.is_empty() {
            return (vec![DEFAULT_PUBLIC.into()], vec![DEFAULT_PUBLIC.into()]);
        }
        let both: Vec<String> = self
            .public
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        let mut read = both.clone();
        read.extend(self.public_read.iter().filter(|p| !p.is_empty()).cloned());
        (read, both)
    }

    /// What tokens must carry, from `--jwt-audience`, `--jwt-issuer`,
    /// `--jwt-max-ttl` and `--jwt-leeway`.
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            leeway: self.jwt_leeway,
            audiences: self
                .claims
                .jwt_audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            issuer: self.claims.jwt_issuer.clone().filter(|i| !i.is_empty()),
            max_ttl: self.jwt_max_ttl,
        }
    }

    /// Settings that do not do what they seem to ask for (they open
    /// nothing, or nothing more), in words that say what to change. The
    /// server starts anyway; `main` prints and logs these.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let given = |list: &[String]| -> Vec<String> {
            list.iter().filter(|p| !p.is_empty()).cloned().collect()
        };
        let (public, public_read) = (given(&self.public), given(&self.public_read));
        if self.no_public {
            for (flag, list) in [("--public", &public), ("--public-read", &public_read)] {
                for pattern in list {
                    warnings.push(format!(
                        "{flag} {pattern} opens nothing: --no-public closes every public pattern. Drop --no-public (any --public or --public-read already replaces the default {DEFAULT_PUBLIC})"
                    ));
                }
            }
            return warnings;
        }
        // A pattern another one already covers adds nothing. Invalid
        // patterns are left to the start, which refuses them.
        let parsed = |list: &[String]| -> Vec<(String, Option<Pattern>)> {
            list.iter()
                .map(|p| (p.clone(), Pattern::new(p).ok()))
                .collect()
        };
        let (public, public_read) = (parsed(&public), parsed(&public_read));
        let covered_by = |i: usize, p: &Pattern, list: &[(String, Option<Pattern>)], same: bool| {
            list.iter().enumerate().find_map(|(j, (text, q))| {
                let q = q.as_ref()?;
                // Within one list, of two equal patterns the later one is redundant.
                let skip = same && (j == i || (q == p && j > i));
                (!skip && q.covers(p)).then(|| text.clone())
            })
        };
        for (i, (text, pattern)) in public.iter().enumerate() {
            let Some(pattern) = pattern else { continue };
            if let Some(by) = covered_by(i, pattern, &public, true) {
                warnings.push(format!(
                    "--public {text} opens nothing more: --public {by} already covers it"
                ));
            }
        }
        for (i, (text, pattern)) in public_read.iter().enumerate() {
            let Some(pattern) = pattern else { continue };
            if let Some(by) = covered_by(i, pattern, &public, false) {
                warnings.push(format!(
                    "--public-read {text} opens nothing more: --public {by} already opens it to subscribe and publish. Drop one of them (--public-read alone is read-only)"
                ));
            } else if let Some(by) = covered_by(i, pattern, &public_read, true) {
                warnings.push(format!(
                    "--public-read {text} opens nothing more: --public-read {by} already covers it"
                ));
            }
        }
        warnings
    }
}

/// `tidings-server token`: mint a token.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Pattern the token may publish to (repeatable).
    #[arg(long)]
    pub publish: Vec<String>,
    /// Pattern the token may subscribe to (repeatable).
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// How long the token is valid (`30m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Subject (`sub` claim), e.g. a user id, for your own records.
    #[arg(long)]
    pub sub: Option<String>,
    /// What presence shows about the holder (`tidings.info` claim): a JSON
    /// object, e.g. `'{"name":"Ann"}'`. Without it, `{"sub": ...}`.
    #[arg(long, value_parser = parse_info)]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Token signing/checking secret.
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Audience and issuer written into the token (`aud`, `iss`); the same
    /// environment as the server's gives tokens it accepts.
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// PEM file with an RSA (RS256) or EC P-256 (ES256) private key to sign
    /// with instead of the HS256 secret.
    #[arg(long, env = "TIDINGS_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,
}

/// Reads `--info`: a JSON object.
fn parse_info(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("--info must be a JSON object, e.g. '{\"name\":\"Ann\"}'".into()),
        Err(e) => Err(format!("--info is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_mean_loopback_8080_with_the_demo_namespace_public() {
        let cli = Cli::parse_from(["tidings-server"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.serve.public_patterns().0, vec![DEFAULT_PUBLIC]);
        assert_eq!(cli.serve.heartbeat, Duration::from_secs(15));
    }

    #[test]
    fn public_read_only_is_not_publishable_and_no_public_closes_all() {
        let cli = Cli::parse_from([
            "tidings-server",
            "--public",
            "a:>",
            "--public",
            "b:*",
            "--public-read",
            "news:>",
        ]);
        let (read, write) = cli.serve.public_patterns();
        assert_eq!(read, vec!["a:>", "b:*", "news:>"]);
        assert_eq!(write, vec!["a:>", "b:*"]);
        let cli = Cli::parse_from(["tidings-server", "--no-public"]);
        assert_eq!(cli.serve.public_patterns(), (vec![], vec![]));
    }

    #[test]
    fn any_public_flag_replaces_the_default_and_no_public_wins() {
        let serve = |args: &[&str]| {
            let mut all = vec!["tidings-server"];
            all.extend_from_slice(args);
            Cli::parse_from(all).serve
        };
        let read_only = serve(&["--public-read", "news:>"]).public_patterns();
        assert_eq!(read_only, (vec!["news:>".to_owned()], vec![]));
        let closed = serve(&["--no-public", "--public-read", "news:>"]);
        assert_eq!(closed.public_patterns(), (vec![], vec![]));
    }

    #[test]
    fn warnings_name_flags_that_open_nothing_or_nothing_more() {
        let warnings = |args: &[&str]| {
            let mut all = vec!["tidings-server"];
            all.extend_from_slice(args);
            Cli::parse_from(all).serve.warnings()
        };
        assert!(warnings(&[]).is_empty());
        assert!(warnings(&["--no-public"]).is_empty());
        assert!(warnings(&["--public", "a:>", "--public-read", "news:>"]).is_empty());

        let w = warnings(&["--no-public", "--public-read", "news:>", "--public", "a:>"]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("--public a:> opens nothing: --no-public"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("--public-read news:> opens nothing"),
            "{w:?}"
        );

        let w = warnings(&["--public", "news:>", "--public-read", "news:eu:*"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--public news:> already opens it"), "{w:?}");

        let w = warnings(&["--public", "a:>", "--public", "a:b", "--public", "a:>"]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("--public a:b opens nothing more"), "{w:?}");
        assert!(w[1].starts_with("--public a:> opens nothing more"), "{w:?}");

        let w = warnings(&["--public-read", "n:*", "--public-read", "n:x"]);
        assert_eq!(
            w,
            vec!["--public-read n:x opens nothing more: --public-read n:* already covers it"]
        );
        // Invalid patterns are the start's to refuse, not a warning.
        assert!(warnings(&["--public", "a:>:b", "--public", "a:>:b"]).is_empty());
    }

    #[test]
    fn jwt_claims_flags_take_lists_and_durations() {
        let cli = Cli::parse_from([
            "tidings-server",
            "--jwt-audience",
            "a,b",
            "--jwt-audience",
            "c",
            "--jwt-issuer",
            "https://id.example.com/",
            "--jwt-max-ttl",
            "1h",
            "--jwt-leeway",
            "5s",
        ]);
        let policy = cli.serve.token_policy();
        assert_eq!(policy.audiences, vec!["a", "b", "c"]);
        assert_eq!(policy.issuer.as_deref(), Some("https://id.example.com/"));
        assert_eq!(policy.max_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(policy.leeway, Duration::from_secs(5));
        let defaults = Cli::parse_from(["tidings-server"]).serve.token_policy();
        assert_eq!(defaults, TokenPolicy::default());
    }

    #[test]
    fn token_subcommand_parses_ttl() {
        let cli = Cli::parse_from([
            "tidings-server",
            "token",
            "--publish",
            "order:>",
            "--subscribe",
            "order:>",
            "--ttl",
            "2h",
        ]);
        let Some(Command::Token(token)) = cli.command else {
            panic!("expected the token command")
        };
        assert_eq!(token.ttl, Duration::from_secs(7200));
        assert_eq!(token.publish, vec!["order:>"]);
    }
}

/// Who writes HTTP/1.1 event streams (`--stream-writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamWriter {
    /// Lean, and a waiting stream on a cleartext socket is written by its
    /// publisher directly.
    Direct,
    /// Straight to the socket after the response head (no buffers kept).
    Lean,
    /// Hyper, like every other response.
    Hyper,
}
