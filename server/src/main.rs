//! `tidings-server`: run the server, or mint a token.

use std::{io::Write as _, process::ExitCode};

use clap::Parser;
use tidings_core::topic::Pattern;
use tidings_server::{
    auth::{Claims, Grants, keys::SigningKey},
    config::{Cli, Command, ServeArgs, TokenArgs},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        None => serve(cli.serve),
    }
}

fn token(args: TokenArgs) -> ExitCode {
    for pattern in args.publish.iter().chain(&args.subscribe) {
        if let Err(e) = Pattern::new(pattern) {
            eprintln!("error: pattern `{pattern}` is invalid: {e}");
            return ExitCode::from(2);
        }
    }
    if args.publish.is_empty() && args.subscribe.is_empty() {
        eprintln!("error: give at least one --publish or --subscribe pattern");
        return ExitCode::from(2);
    }
    let key = match (&args.jwt_private_key, &args.keys.jwt_secret) {
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|pem| SigningKey::private_pem(&pem).map_err(|e| e.to_string())),
        (None, Some(secret)) => SigningKey::secret(secret.as_bytes()).map_err(|e| e.to_string()),
        (None, None) => Err(
            "give the server's secret with --jwt-secret (or TIDINGS_JWT_SECRET), or a private key with --jwt-private-key"
                .to_owned(),
        ),
    };
    let key = match key {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let grants = Grants {
        publish: args.publish,
        subscribe: args.subscribe,
        info: args.info,
    };
    let mut claims = Claims::new(grants, args.ttl, args.sub);
    claims.aud = args
        .claims
        .jwt_audience
        .into_iter()
        .filter(|a| !a.is_empty())
        .collect();
    claims.iss = args.claims.jwt_issuer.filter(|i| !i.is_empty());
    match key.sign(&claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot sign the token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hyper=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Registered before anything is printed: whoever waits for the
        // "listening on" line may send SIGTERM at once, and a signal that
        // arrives before its handler would kill the process with no
        // shutdown (and a non-zero status).
        let stop = stop_signal();
        let public = args.public_patterns();
        let warnings = args.warnings();
        let server = match tidings_server::start(args).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}://{}", server.scheme(), server.local_addr());
        if public.0.is_empty() {
            let _ = writeln!(out, "no public topics: every client needs a token");
        } else {
            let _ = writeln!(
                out,
                "public (no token needed): subscribe {} / publish {}",
                public.0.join(", "),
                if public.1.is_empty() { "-".to_owned() } else { public.1.join(", ") }
            );
        }
        for warning in &warnings {
            let _ = writeln!(out, "warning: {warning}");
            tracing::warn!("{warning}");
        }
        match server.generated_secret() {
            Some(secret) => {
                let _ = writeln!(
                    out,
                    "no --jwt-secret given: using a random secret for this run only. Mint a token with:\n  tidings-server token --jwt-secret {secret} --subscribe 'PATTERN' --publish 'PATTERN' --ttl 1h"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "mint a token with: tidings-server token --subscribe 'PATTERN' --publish 'PATTERN' --ttl 1h (same TIDINGS_JWT_SECRET)"
                );
            }
        }
        let _ = out.flush();
        drop(out);

        stop.await;
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// A future that completes on SIGTERM or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        async move {
            let _ = ctrl_c.await;
        }
    }
}
