//! The token's claims and minting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The Tidings rights inside a token (`"tidings"` claim).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Patterns the holder may publish within.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns the holder may subscribe within.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// The claims Tidings reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Subject, for the operator's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The rights.
    pub tidings: Grants,
}

impl Claims {
    /// Claims valid from now for `ttl`.
    pub fn new(grants: Grants, ttl: Duration, sub: Option<String>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            exp: now + ttl.as_secs().max(1),
            nbf: Some(now),
            iat: Some(now),
            sub,
            tidings: grants,
        }
    }
}

/// Signs `claims` with `key` using `header.alg`.
pub fn mint(
    header: &Header,
    claims: &Claims,
    key: &EncodingKey,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(header, claims, key)
}
