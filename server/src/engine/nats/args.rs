//! The `--nats*` command-line flags, ready to flatten into the server's
//! configuration (`#[command(flatten)] nats: NatsArgs`).

use std::{path::PathBuf, time::Duration};

use super::{NatsAuth, NatsSettings, NatsTls};

/// NATS mode flags. `--nats` turns the mode on; the rest only matter then.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct NatsArgs {
    /// NATS mode: share messages and history through a JetStream stream on
    /// these servers (nats://HOST:4222[,nats://HOST2:4222...]).
    #[arg(long = "nats", env = "TIDINGS_NATS_URL", value_name = "URL[,URL...]")]
    pub urls: Option<String>,
    /// NATS credentials file (.creds: JWT and nkey seed).
    #[arg(long, env = "TIDINGS_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// NATS token.
    #[arg(long, env = "TIDINGS_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "TIDINGS_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, env = "TIDINGS_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Require TLS to NATS even if the server does not ask for it.
    #[arg(long, env = "TIDINGS_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
    /// Extra CA certificate (PEM) to trust for NATS.
    #[arg(long, env = "TIDINGS_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS (with --nats-tls-key).
    #[arg(long, env = "TIDINGS_NATS_TLS_CERT", value_name = "FILE")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS mutual TLS (with --nats-tls-cert).
    #[arg(long, env = "TIDINGS_NATS_TLS_KEY", value_name = "FILE")]
    pub nats_tls_key: Option<PathBuf>,
    /// JetStream stream name; instances sharing it form one deployment.
    #[arg(long, env = "TIDINGS_NATS_STREAM", default_value = super::DEFAULT_STREAM)]
    pub nats_stream: String,
    /// Prefix of every subject of the deployment.
    #[arg(long, env = "TIDINGS_NATS_SUBJECT_PREFIX", default_value = super::DEFAULT_SUBJECT_PREFIX)]
    pub nats_subject_prefix: String,
    /// Replicas of the stream [default: 3 when the cluster has 3 or more
    /// servers, else 1].
    #[arg(long, env = "TIDINGS_NATS_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: Option<u8>,
    /// Drop messages older than this (e.g. 24h) [default: no age limit].
    #[arg(long, env = "TIDINGS_NATS_MAX_AGE", value_parser = humantime::parse_duration)]
    pub nats_max_age: Option<Duration>,
    /// Keep at most this many bytes in the stream [default: no limit].
    #[arg(long, env = "TIDINGS_NATS_MAX_BYTES")]
    pub nats_max_bytes: Option<u64>,
    /// How long a publish waits for JetStream's acknowledgement.
    #[arg(long, env = "TIDINGS_NATS_PUBLISH_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub nats_publish_timeout: Duration,
}

/// Flags that do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsArgsError {
    /// Only one way to authenticate.
    #[error("give only one of --nats-creds, --nats-token, --nats-user/--nats-password")]
    SeveralCredentials,
    /// User without password or the reverse.
    #[error("--nats-user and --nats-password go together")]
    HalfUserPassword,
    /// Certificate without key or the reverse.
    #[error("--nats-tls-cert and --nats-tls-key go together")]
    HalfClientCertificate,
    /// A `--nats-*` flag without `--nats`.
    #[error("--{0} only matters with --nats URL")]
    WithoutNats(&'static str),
}

impl NatsArgs {
    /// The settings, `None` when `--nats` is not given.
    pub fn settings(&self) -> Result<Option<NatsSettings>, NatsArgsError> {
        let Some(urls) = &self.urls else {
            let given = [
                ("nats-creds", self.nats_creds.is_some()),
                ("nats-token", self.nats_token.is_some()),
                ("nats-user", self.nats_user.is_some()),
                ("nats-replicas", self.nats_replicas.is_some()),
                ("nats-max-age", self.nats_max_age.is_some()),
                ("nats-max-bytes", self.nats_max_bytes.is_some()),
            ];
            return match given.iter().find(|(_, set)| *set) {
                Some((flag, _)) => Err(NatsArgsError::WithoutNats(flag)),
                None => Ok(None),
            };
        };
        let ways = [
            self.nats_creds.is_some(),
            self.nats_token.is_some(),
            self.nats_user.is_some() || self.nats_password.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(NatsArgsError::SeveralCredentials);
        }
        let auth = match (
            &self.nats_creds,
            &self.nats_token,
            &self.nats_user,
            &self.nats_password,
        ) {
            (Some(path), ..) => NatsAuth::CredentialsFile(path.clone()),
            (_, Some(token), ..) => NatsAuth::Token(token.clone()),
            (_, _, Some(user), Some(password)) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (_, _, None, None) => NatsAuth::None,
            _ => return Err(NatsArgsError::HalfUserPassword),
        };
        let client_cert = match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(NatsArgsError::HalfClientCertificate),
        };
        let mut settings = NatsSettings::new(urls);
        settings.auth = auth;
        settings.tls = NatsTls {
            require: self.nats_tls_required,
            ca_file: self.nats_tls_ca.clone(),
            client_cert,
        };
        settings.stream = self.nats_stream.clone();
        settings.subject_prefix = self.nats_subject_prefix.clone();
        settings.replicas = self.nats_replicas.map(usize::from);
        settings.max_age = self.nats_max_age;
        settings.max_bytes = self
            .nats_max_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        settings.publish_timeout = self.nats_publish_timeout;
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<NatsSettings>, NatsArgsError> {
        let mut all = vec!["tidings-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().nats.settings()
    }

    #[test]
    fn flags_become_settings() {
        assert_eq!(parse(&[]), Ok(None));
        let s = parse(&[
            "--nats",
            "nats://a:4222, nats://b:4222",
            "--nats-user",
            "u",
            "--nats-password",
            "p",
            "--nats-replicas",
            "3",
            "--nats-max-age",
            "24h",
            "--nats-max-bytes",
            "1000000",
            "--nats-stream",
            "S",
            "--nats-subject-prefix",
            "acme.t",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            s.auth,
            NatsAuth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.max_age, Some(Duration::from_secs(86_400)));
        assert_eq!(s.max_bytes, Some(1_000_000));
        assert_eq!(
            (s.stream.as_str(), s.subject_prefix.as_str()),
            ("S", "acme.t")
        );
        let d = parse(&["--nats", "nats://a:4222"]).unwrap().unwrap();
        assert_eq!((d.replicas, d.max_age, d.max_bytes), (None, None, None));
        assert_eq!(d.stream, super::super::DEFAULT_STREAM);
    }

    #[test]
    fn flags_that_do_not_go_together_are_named() {
        let url = "nats://a:4222";
        assert_eq!(
            parse(&[
                "--nats",
                url,
                "--nats-token",
                "t",
                "--nats-user",
                "u",
                "--nats-password",
                "p"
            ]),
            Err(NatsArgsError::SeveralCredentials)
        );
        assert_eq!(
            parse(&["--nats", url, "--nats-user", "u"]),
            Err(NatsArgsError::HalfUserPassword)
        );
        assert_eq!(
            parse(&["--nats", url, "--nats-tls-cert", "c.pem"]),
            Err(NatsArgsError::HalfClientCertificate)
        );
        assert_eq!(
            parse(&["--nats-replicas", "3"]),
            Err(NatsArgsError::WithoutNats("nats-replicas"))
        );
    }
}
