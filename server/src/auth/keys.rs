//! Keys that check (and, for the `token` command, sign) tokens.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use tidings_core::topic::Pattern;

use super::{Access, AuthError, Claims, Expiry, Session};

/// Seconds of clock skew tolerated on `exp` and `nbf` by default
/// (`--jwt-leeway`).
pub const LEEWAY_SECS: u64 = 30;

/// Shortest HS256 secret accepted, in bytes: a key as long as the SHA-256
/// output (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// A key file or secret that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM is neither an RSA nor an EC public/private key.
    #[error("{what} is neither an RSA nor an EC P-256 key in PEM format: {source}")]
    BadPem {
        /// Which key.
        what: &'static str,
        /// Why the last attempt failed.
        source: jsonwebtoken::errors::Error,
    },
    /// The HS256 secret is shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the JWT secret is {len} bytes long; HS256 needs at least {MIN_SECRET_BYTES} random bytes. Make one with `openssl rand -hex 32` and give it to the server and to `tidings-server token` (--jwt-secret or TIDINGS_JWT_SECRET)"
    )]
    ShortSecret {
        /// The length given.
        len: usize,
    },
}

fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret { len: secret.len() });
    }
    Ok(())
}

/// What a token must carry besides a good signature and `exp`.
///
/// ```
/// use std::time::Duration;
/// use tidings_server::auth::keys::TokenPolicy;
///
/// let policy = TokenPolicy {
///     audiences: vec!["tidings".into()],
///     issuer: Some("https://id.example.com/".into()),
///     max_ttl: Some(Duration::from_secs(3600)),
///     ..TokenPolicy::default()
/// };
/// assert_eq!(policy.leeway, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds count).
    pub leeway: Duration,
    /// When not empty, the token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// When set, the token's `iss` must be this.
    pub issuer: Option<String>,
    /// When set, tokens that live longer (`exp` − `iat`, or `exp` − now
    /// without `iat`) are refused.
    pub max_ttl: Option<Duration>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(LEEWAY_SECS),
            audiences: Vec::new(),
            issuer: None,
            max_ttl: None,
        }
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The keys tokens are checked with, and what tokens must carry; cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Keys {
    verifiers: Arc<Vec<(Algorithm, DecodingKey)>>,
    policy: Arc<TokenPolicy>,
}

impl Keys {
    /// Adds an HS256 secret (at least [`MIN_SECRET_BYTES`] bytes).
    pub fn with_secret(mut self, secret: &[u8]) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Arc::make_mut(&mut self.verifiers)
            .push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        Ok(self)
    }

    /// Adds an RS256 (RSA) or ES256 (EC P-256) public key in PEM format.
    pub fn with_public_pem(mut self, pem: &[u8]) -> Result<Self, KeyError> {
        let entry = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (Algorithm::ES256, key),
                Err(source) => {
                    return Err(KeyError::BadPem {
                        what: "the public key",
                        source,
                    });
                }
            },
        };
        Arc::make_mut(&mut self.verifiers).push(entry);
        Ok(self)
    }

    /// Checks tokens against `policy` from now on.
    pub fn with_policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// True when no key is configured (every token is refused).
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// Checks the token's algorithm, signature, `exp` (required), `nbf`,
    /// and the policy's audience, issuer and lifetime; returns its grants
    /// and when it stops being accepted.
    pub fn verify(&self, token: &str) -> Result<Session, AuthError> {
        // `alg: none` and unknown algorithms fail here: `Algorithm` has no `none`.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("cannot read the token header ({e})")))?;
        let Some((alg, key)) = self.verifiers.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted by this server",
                header.alg
            )));
        };
        let policy = &*self.policy;
        let leeway = policy.leeway.as_secs();
        let mut validation = Validation::new(*alg);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = leeway;
        let mut required = vec!["exp"];
        validation.validate_aud = !policy.audiences.is_empty();
        if validation.validate_aud {
            validation.set_audience(&policy.audiences);
            required.push("aud");
        }
        if let Some(issuer) = &policy.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        // Decoded as plain JSON first so that the checks above speak (a
        // missing `exp` is "no exp claim", not a serde error), then read.
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(self.explain(e.kind())))?;
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| AuthError::Invalid(format!("cannot read the token's claims ({e})")))?;

        if let Some(max) = policy.max_ttl {
            // An `iat` in the future (beyond the leeway) must not shorten
            // the lifetime: count from now then.
            let now = unix_now().as_secs();
            let (start, from) = match claims.iat {
                Some(iat) => (iat.min(now + leeway), "exp - iat"),
                None => (now, "exp - now; it has no iat"),
            };
            let lifetime = claims.exp.saturating_sub(start);
            if lifetime > max.as_secs() {
                return Err(AuthError::Invalid(format!(
                    "the token lives {} ({from}), longer than the {} this server accepts (--jwt-max-ttl); mint shorter-lived tokens",
                    humantime::format_duration(Duration::from_secs(lifetime)),
                    humantime::format_duration(Duration::from_secs(max.as_secs())),
                )));
            }
        }

        let parse = |list: &[String]| -> Result<Vec<Pattern>, AuthError> {
            list.iter()
                .map(|s| {
                    Pattern::new(s).map_err(|e| {
                        AuthError::Invalid(format!("granted pattern `{s}` is invalid: {e}"))
                    })
                })
                .collect()
        };
        let info = match &claims.tidings.info {
            Some(info) => serde_json::to_string(info).unwrap_or_else(|_| "{}".into()),
            None => serde_json::json!({ "sub": claims.sub }).to_string(),
        };
        if info.len() > crate::presence::MAX_TOKEN_INFO_BYTES {
            return Err(AuthError::Invalid(format!(
                "the `tidings.info` claim is {} bytes of JSON; at most {} are accepted",
                info.len(),
                crate::presence::MAX_TOKEN_INFO_BYTES
            )));
        }
        Ok(Session {
            access: Access {
                subscribe: parse(&claims.tidings.subscribe)?,
                publish: parse(&claims.tidings.publish)?,
            },
            expiry: Some(Expiry::new(claims.exp, leeway)),
            info: Some(info),
        })
    }

    /// What was wrong, in words a token's author can act on.
    fn explain(&self, kind: &ErrorKind) -> String {
        let policy = &*self.policy;
        let audiences = || {
            policy
                .audiences
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let issuer = policy.issuer.as_deref().unwrap_or_default();
        match kind {
            ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
            ErrorKind::InvalidSignature => "bad signature".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "exp" => "the token has no `exp` claim (a number); tokens must expire: set `exp` to seconds since the Unix epoch".to_owned(),
                "aud" => format!(
                    "the token has no `aud` claim; this server accepts only the audience {}",
                    audiences()
                ),
                "iss" => format!(
                    "the token has no `iss` claim; this server accepts only tokens issued by `{issuer}`"
                ),
                other => format!("the token has no `{other}` claim"),
            },
            ErrorKind::InvalidAudience => format!(
                "the token's audience (`aud`) is not one this server accepts ({})",
                audiences()
            ),
            ErrorKind::InvalidIssuer => {
                format!("the token's issuer (`iss`) is not `{issuer}`")
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("the `{claim}` claim must be a number of seconds since the Unix epoch")
            }
            ErrorKind::Json(e) => format!("cannot read the token's claims ({e})"),
            other => jsonwebtoken::errors::Error::from(other.clone()).to_string(),
        }
    }
}

/// A key that signs tokens, with its algorithm.
pub struct SigningKey {
    /// The JWT header (its `alg`).
    pub header: Header,
    /// The key.
    pub key: EncodingKey,
}

impl SigningKey {
    /// HS256 with a shared secret.
    pub fn secret(secret: &[u8]) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Ok(Self {
            header: Header::new(Algorithm::HS256),
            key: EncodingKey::from_secret(secret),
        })
    }

    /// RS256 or ES256 with a private key in PEM format.
    pub fn private_pem(pem: &[u8]) -> Result<Self, KeyError> {
        match EncodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self {
                header: Header::new(Algorithm::RS256),
                key,
            }),
            Err(_) => match EncodingKey::from_ec_pem(pem) {
                Ok(key) => Ok(Self {
                    header: Header::new(Algorithm::ES256),
                    key,
                }),
                Err(source) => Err(KeyError::BadPem {
                    what: "the private key",
                    source,
                }),
            },
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        super::mint(&self.header, claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::Grants;

    const RIGHT: &[u8] = b"0123456789abcdef0123456789abcdef-right";
    const WRONG: &[u8] = b"0123456789abcdef0123456789abcdef-wrong";

    fn grants() -> Grants {
        Grants {
            publish: vec!["a:>".into()],
            subscribe: vec!["a:*".into()],
            info: None,
        }
    }

    fn claims() -> Claims {
        Claims::new(grants(), Duration::from_secs(60), None)
    }

    fn sign(claims: &Claims) -> String {
        SigningKey::secret(RIGHT).unwrap().sign(claims).unwrap()
    }

    fn keys(policy: TokenPolicy) -> Keys {
        Keys::default()
            .with_secret(RIGHT)
            .unwrap()
            .with_policy(policy)
    }

    fn refusal(keys: &Keys, token: &str) -> String {
        match keys.verify(token) {
            Ok(_) => panic!("the token should be refused"),
            Err(AuthError::Invalid(why)) => why,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_minted_token_verifies_and_carries_its_grants_and_expiry() {
        let claims = claims();
        let session = keys(TokenPolicy::default()).verify(&sign(&claims)).unwrap();
        assert_eq!(session.access.publish, vec![Pattern::new("a:>").unwrap()]);
        assert_eq!(session.access.subscribe, vec![Pattern::new("a:*").unwrap()]);
        assert_eq!(session.expiry, Some(Expiry::new(claims.exp, LEEWAY_SECS)));
    }

    #[test]
    fn wrong_secret_expired_future_and_none_are_refused() {
        let keys = keys(TokenPolicy::default());
        let wrong = SigningKey::secret(WRONG).unwrap();
        let claims = claims();
        assert_eq!(
            refusal(&keys, &wrong.sign(&claims).unwrap()),
            "bad signature"
        );

        let mut expired = claims.clone();
        expired.exp -= 3600;
        assert_eq!(refusal(&keys, &sign(&expired)), "the token has expired");

        let mut future = claims.clone();
        future.nbf = Some(future.nbf.unwrap() + 3600);
        future.exp += 7200;
        assert!(refusal(&keys, &sign(&future)).contains("nbf"));

        // alg none: header {"alg":"none"} with the same claims and no signature.
        let signed = sign(&claims);
        let payload = signed.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(keys.verify(&none).is_err());
    }

    #[test]
    fn a_token_without_exp_is_refused_and_told_why() {
        let header = Header::new(Algorithm::HS256);
        let key = EncodingKey::from_secret(RIGHT);
        let no_exp = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"tidings": {"subscribe": ["a:*"]}}),
            &key,
        )
        .unwrap();
        let why = refusal(&keys(TokenPolicy::default()), &no_exp);
        assert!(why.contains("no `exp` claim"), "{why}");
        let text_exp = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"exp": "tomorrow", "tidings": {}}),
            &key,
        )
        .unwrap();
        let why = refusal(&keys(TokenPolicy::default()), &text_exp);
        assert!(why.contains("no `exp` claim (a number)"), "{why}");
    }

    #[test]
    fn short_secrets_are_refused_with_how_to_make_one() {
        for secret in [&b""[..], b"a", &[b'x'; MIN_SECRET_BYTES - 1]] {
            let err = Keys::default().with_secret(secret).err().unwrap();
            assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
            assert!(SigningKey::secret(secret).is_err());
        }
        assert!(
            Keys::default()
                .with_secret(&[b'x'; MIN_SECRET_BYTES])
                .is_ok()
        );
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let strict = keys(TokenPolicy {
            audiences: vec!["tidings".into(), "tidings-staging".into()],
            issuer: Some("https://id.example.com/".into()),
            ..TokenPolicy::default()
        });
        let mut good = claims();
        good.aud = vec!["other".into(), "tidings-staging".into()];
        good.iss = Some("https://id.example.com/".into());
        strict.verify(&sign(&good)).unwrap();

        let mut no_aud = good.clone();
        no_aud.aud.clear();
        let why = refusal(&strict, &sign(&no_aud));
        assert!(
            why.contains("no `aud` claim") && why.contains("`tidings`"),
            "{why}"
        );
        let mut wrong_aud = good.clone();
        wrong_aud.aud = vec!["billing".into()];
        let why = refusal(&strict, &sign(&wrong_aud));
        assert!(why.contains("audience (`aud`) is not one"), "{why}");

        let mut no_iss = good.clone();
        no_iss.iss = None;
        assert!(refusal(&strict, &sign(&no_iss)).contains("no `iss` claim"));
        let mut wrong_iss = good.clone();
        wrong_iss.iss = Some("https://evil.example.com/".into());
        let why = refusal(&strict, &sign(&wrong_iss));
        assert!(
            why.contains("issuer (`iss`) is not `https://id.example.com/`"),
            "{why}"
        );

        // Without a configured audience, a token's `aud` is not checked.
        keys(TokenPolicy::default())
            .verify(&sign(&wrong_aud))
            .unwrap();
    }

    #[test]
    fn max_ttl_counts_from_iat_or_from_now_and_ignores_a_future_iat() {
        let hour = keys(TokenPolicy {
            max_ttl: Some(Duration::from_secs(3600)),
            ..TokenPolicy::default()
        });
        let ok = Claims::new(grants(), Duration::from_secs(3600), None);
        hour.verify(&sign(&ok)).unwrap();
        let long = Claims::new(grants(), Duration::from_secs(3601), None);
        let why = refusal(&hour, &sign(&long));
        assert!(
            why.contains("1h 1s (exp - iat)") && why.contains("--jwt-max-ttl"),
            "{why}"
        );

        // Issued long ago with a long life: refused even if little is left.
        let mut old = ok.clone();
        old.iat = Some(old.exp - 7200);
        old.nbf = old.iat;
        assert!(refusal(&hour, &sign(&old)).contains("2h"));

        // Without iat: from now.
        let mut no_iat = long.clone();
        no_iat.iat = None;
        assert!(refusal(&hour, &sign(&no_iat)).contains("exp - now"));
        no_iat.exp -= 10;
        hour.verify(&sign(&no_iat)).unwrap();

        // An iat set in the future cannot make a day-long token look short.
        let mut tricky = Claims::new(grants(), Duration::from_secs(86_400), None);
        tricky.iat = Some(tricky.exp - 60);
        assert!(refusal(&hour, &sign(&tricky)).contains("--jwt-max-ttl"));
    }

    #[test]
    fn bad_granted_patterns_invalidate_the_token() {
        let mut g = grants();
        g.subscribe.push("a:>:b".into());
        let token = sign(&Claims::new(g, Duration::from_secs(60), None));
        assert!(refusal(&keys(TokenPolicy::default()), &token).contains("a:>:b"));
    }
}
