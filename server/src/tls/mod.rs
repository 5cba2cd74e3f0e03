//! HTTPS: rustls (ring provider) with ALPN `h2` and `http/1.1`, and a
//! certificate that can be replaced while the server runs.
//!
//! The certificate and key are read from PEM files at start, and again on
//! SIGHUP or when either file changes (checked every
//! [`RELOAD_CHECK`]). A reload only affects new handshakes: open
//! connections, and the streams on them, keep going. A reload that fails
//! (a half-written file, a key that does not match) keeps the previous
//! certificate and logs why.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use parking_lot::RwLock;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error(
        "{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`); give the certificate chain, server certificate first"
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key cannot sign, or does not belong to the certificate.
    #[error("the key in {key} cannot be used with the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The certificate in use, replaceable while the server runs.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times and sizes last loaded, to notice changes.
    stamp: RwLock<Option<[(SystemTime, u64); 2]>>,
}

impl CertStore {
    /// Loads the certificate chain and key from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = stamp(cert_path, key_path);
        let current = certified_key(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
            stamp: RwLock::new(stamp),
        })
    }

    /// Reads the files again and uses them for new handshakes; on error the
    /// previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamp(&self.cert_path, &self.key_path);
        let key = certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write() = Arc::new(key);
        *self.stamp.write() = stamp;
        Ok(())
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = stamp(&self.cert_path, &self.key_path);
        now.is_some() && now != *self.stamp.read()
    }

    /// The rustls server configuration: this store's certificate, ALPN
    /// `h2` then `http/1.1`.
    pub(crate) fn server_config(self: &Arc<Self>) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Reloads on SIGHUP and when the files change, until `stop`. The
    /// signal handler is installed before this returns, so a SIGHUP sent
    /// as soon as the server prints its address is not lost (nor fatal).
    /// Must be called within the runtime.
    pub(crate) fn watch(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate reloads when its files change");
                None
            }
        };
        async move {
            let mut check = tokio::time::interval(RELOAD_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let signal = async {
                    match &mut hangup {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<Option<()>>();
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = signal => "SIGHUP",
                    _ = check.tick() => {
                        if !self.changed() {
                            continue;
                        }
                        "a changed file"
                    }
                };
                self.reload_logged(why);
            }
        }
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.cert_path.display(),
                "reloaded the TLS certificate ({why}); open connections keep theirs"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "could not reload the TLS certificate ({why}); still using the previous one"
            ),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<[(SystemTime, u64); 2]> {
    let one = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Some([one(cert)?, one(key)?])
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(mismatch)?;
    Ok(certified)
}
