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
    /// What `GET /presence` and `tidings.join` say about the holder's
    /// streams (`"tidings": {"info": {"name": "Ann"}}`): a JSON object of
    /// at most [`MAX_TOKEN_INFO_BYTES`](crate::presence::MAX_TOKEN_INFO_BYTES).
    /// Without it, presence shows `{"sub": <the token's sub>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
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
    /// Audiences (`aud`): one string or an array in the token; checked
    /// against `--jwt-audience` when that is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "one_or_many")]
    pub aud: Vec<String>,
    /// Issuer (`iss`), checked against `--jwt-issuer` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
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
            aud: Vec::new(),
            iss: None,
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

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub(super) fn serialize<S: Serializer>(list: &[String], s: S) -> Result<S::Ok, S::Error> {
        match list {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_is_read_as_a_string_or_an_array_and_written_back_the_same_way() {
        let one: Claims = serde_json::from_str(r#"{"exp":1,"aud":"a","tidings":{}}"#).unwrap();
        assert_eq!(one.aud, vec!["a"]);
        assert!(
            serde_json::to_string(&one)
                .unwrap()
                .contains(r#""aud":"a""#)
        );
        let many: Claims =
            serde_json::from_str(r#"{"exp":1,"aud":["a","b"],"tidings":{}}"#).unwrap();
        assert_eq!(many.aud, vec!["a", "b"]);
        assert!(
            serde_json::to_string(&many)
                .unwrap()
                .contains(r#""aud":["a","b"]"#)
        );
        let none: Claims = serde_json::from_str(r#"{"exp":1,"tidings":{}}"#).unwrap();
        assert!(none.aud.is_empty());
        assert!(!serde_json::to_string(&none).unwrap().contains("aud"));
    }
}
