//! Keys that check (and, for the `token` command, sign) tokens.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tidings_core::topic::Pattern;

use super::{Access, AuthError, Claims};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// A key file or secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM is neither an RSA nor an EC public/private key.
    #[error("{what} is neither an RSA nor an EC P-256 key in PEM format: {source}")]
    BadPem {
        /// Which key.
        what: &'static str,
        /// Why the last attempt failed.
        source: jsonwebtoken::errors::Error,
    },
    /// The secret is empty.
    #[error("the JWT secret is empty; give at least 32 random bytes")]
    EmptySecret,
}

/// The keys tokens are checked with; cheap to clone.
#[derive(Clone, Default)]
pub struct Keys {
    verifiers: Arc<Vec<(Algorithm, DecodingKey)>>,
}

impl Keys {
    /// Adds an HS256 secret.
    pub fn with_secret(mut self, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
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

    /// True when no key is configured (every token is refused).
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// Checks the token's algorithm, signature, `exp` and `nbf` and returns
    /// its grants.
    pub fn verify(&self, token: &str) -> Result<Access, AuthError> {
        // `alg: none` and unknown algorithms fail here: `Algorithm` has no `none`.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("cannot read the token header ({e})")))?;
        let Some((alg, key)) = self.verifiers.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted by this server",
                header.alg
            )));
        };
        let mut validation = Validation::new(*alg);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidSignature => "bad signature".to_owned(),
                _ => e.to_string(),
            })
        })?;
        let parse = |list: &[String]| -> Result<Vec<Pattern>, AuthError> {
            list.iter()
                .map(|s| {
                    Pattern::new(s).map_err(|e| {
                        AuthError::Invalid(format!("granted pattern `{s}` is invalid: {e}"))
                    })
                })
                .collect()
        };
        Ok(Access {
            subscribe: parse(&data.claims.tidings.subscribe)?,
            publish: parse(&data.claims.tidings.publish)?,
        })
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
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
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

    fn grants() -> Grants {
        Grants {
            publish: vec!["a:>".into()],
            subscribe: vec!["a:*".into()],
        }
    }

    #[test]
    fn a_minted_token_verifies_and_carries_its_grants() {
        let keys = Keys::default().with_secret(b"s3cret").unwrap();
        let token = SigningKey::secret(b"s3cret")
            .unwrap()
            .sign(&Claims::new(grants(), Duration::from_secs(60), None))
            .unwrap();
        let access = keys.verify(&token).unwrap();
        assert_eq!(access.publish, vec![Pattern::new("a:>").unwrap()]);
        assert_eq!(access.subscribe, vec![Pattern::new("a:*").unwrap()]);
    }

    #[test]
    fn wrong_secret_expired_future_and_none_are_refused() {
        let keys = Keys::default().with_secret(b"right").unwrap();
        let wrong = SigningKey::secret(b"wrong").unwrap();
        let good = SigningKey::secret(b"right").unwrap();
        let claims = Claims::new(grants(), Duration::from_secs(60), None);
        assert!(keys.verify(&wrong.sign(&claims).unwrap()).is_err());

        let mut expired = claims.clone();
        expired.exp -= 3600;
        let err = keys.verify(&good.sign(&expired).unwrap()).unwrap_err();
        assert_eq!(err, AuthError::Invalid("the token has expired".into()));

        let mut future = claims.clone();
        future.nbf = Some(future.nbf.unwrap() + 3600);
        future.exp += 7200;
        assert!(keys.verify(&good.sign(&future).unwrap()).is_err());

        // alg none: header {"alg":"none"} with the same claims and no signature.
        let signed = good.sign(&claims).unwrap();
        let payload = signed.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(keys.verify(&none).is_err());
    }

    #[test]
    fn bad_granted_patterns_invalidate_the_token() {
        let keys = Keys::default().with_secret(b"k").unwrap();
        let mut g = grants();
        g.subscribe.push("a:>:b".into());
        let token = SigningKey::secret(b"k")
            .unwrap()
            .sign(&Claims::new(g, Duration::from_secs(60), None))
            .unwrap();
        assert!(keys.verify(&token).is_err());
    }
}
