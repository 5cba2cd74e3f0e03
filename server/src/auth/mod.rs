//! Who may subscribe and publish to what.
//!
//! Rights are topic patterns. A token carries them in its `tidings` claim;
//! anonymous clients get the configured public patterns. A subscription
//! pattern is allowed only when a granted pattern *covers* it (every topic
//! it can match is matched by the grant), so `order:acme:>` never lets a
//! client subscribe to `order:>` or `order:*:x`.

pub mod keys;
mod token;

pub use keys::{KeyError, Keys, TokenPolicy};
pub use token::{Claims, Grants, mint};

use std::fmt;

use axum::http;

use tidings_core::topic::{Pattern, Topic};

/// The rights of one request: granted patterns for subscribing and publishing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Patterns the client may subscribe within.
    pub subscribe: Vec<Pattern>,
    /// Patterns the client may publish within.
    pub publish: Vec<Pattern>,
}

impl Access {
    /// True when some grant covers every topic `pattern` can match.
    ///
    /// ```
    /// use tidings_core::topic::Pattern;
    /// use tidings_server::auth::Access;
    ///
    /// let access = Access { subscribe: vec![Pattern::new("order:acme:>").unwrap()], publish: vec![] };
    /// assert!(access.may_subscribe(&Pattern::new("order:acme:*").unwrap()));
    /// assert!(!access.may_subscribe(&Pattern::new("order:*:42").unwrap()));
    /// ```
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe.iter().any(|grant| grant.covers(pattern))
    }

    /// True when some grant matches `topic`.
    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|grant| grant.matches(topic))
    }

    /// Adds another set of rights to this one.
    pub fn extend(&mut self, other: &Access) {
        self.subscribe.extend(other.subscribe.iter().cloned());
        self.publish.extend(other.publish.iter().cloned());
    }
}

/// When a token stops being accepted: a stream opened with it ends then
/// (with `tidings.expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The token's `exp` claim, seconds since the Unix epoch.
    pub exp: u64,
    /// The first instant the server refuses the token, milliseconds since
    /// the Unix epoch: one second after `exp` + leeway (a token is still
    /// accepted during its `exp` + leeway second).
    pub refused_at_ms: u64,
}

impl Expiry {
    /// The expiry of a token whose `exp` is `exp`, with `leeway_secs` of
    /// tolerated clock skew.
    ///
    /// ```
    /// use tidings_server::auth::Expiry;
    ///
    /// assert_eq!(Expiry::new(100, 30).refused_at_ms, 131_000);
    /// ```
    pub fn new(exp: u64, leeway_secs: u64) -> Self {
        Self {
            exp,
            refused_at_ms: exp
                .saturating_add(leeway_secs)
                .saturating_add(1)
                .saturating_mul(1000),
        }
    }
}

/// The rights of a request, and when they end if a token gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// What the request may do.
    pub access: Access,
    /// When the token stops being accepted; `None` without a token (public
    /// rights never expire).
    pub expiry: Option<Expiry>,
    /// Who the token says the holder is, for presence (compact JSON object
    /// text: its `tidings.info` claim, else `{"sub": ...}`); `None`
    /// without a token.
    pub info: Option<String>,
}

/// Why a request's token was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token, and the request needs more than the public patterns.
    Missing,
    /// The `Authorization` header is not `Bearer <token>`.
    NotBearer,
    /// The token is malformed, badly signed, expired or not yet valid.
    Invalid(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "a token is required: send `Authorization: Bearer <token>`, a `tidings_token` cookie or an `access_token` query parameter",
            ),
            Self::NotBearer => f.write_str("the Authorization header must be `Bearer <token>`"),
            Self::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Checks tokens and turns them into [`Access`].
#[derive(Clone)]
pub struct Authenticator {
    keys: Keys,
    public: Access,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator that checks tokens with `keys` and grants `public`
    /// to everyone.
    pub fn new(keys: Keys, public: Access) -> Self {
        Self { keys, public }
    }

    /// The rights of everyone, token or not.
    pub fn public(&self) -> &Access {
        &self.public
    }

    /// The rights of a request carrying `token` (or none).
    ///
    /// A token that is present but invalid is an error even for public
    /// topics: a client with a broken token should learn about it.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Access, AuthError> {
        self.session(token).map(|session| session.access)
    }

    /// Like [`authenticate`](Self::authenticate), with the token's expiry
    /// (for streams, which must end when their token does).
    pub fn session(&self, token: Option<&str>) -> Result<Session, AuthError> {
        let mut session = Session {
            access: self.public.clone(),
            expiry: None,
            info: None,
        };
        if let Some(token) = token {
            let granted = self.keys.verify(token)?;
            session.access.extend(&granted.access);
            session.expiry = granted.expiry;
            session.info = granted.info;
        }
        Ok(session)
    }
}

/// Finds the request's token: the `Authorization: Bearer` header, else the
/// `tidings_token` cookie, else the `access_token` query parameter.
pub fn find_token<'a>(
    headers: &'a http::HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Option<&'a str>, AuthError> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::NotBearer);
        }
        return Ok(Some(token.trim()));
    }
    for cookies in headers.get_all(http::header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == "tidings_token" && !value.is_empty() {
                    return Ok(Some(value));
                }
            }
        }
    }
    Ok(query_token.filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    fn access(subscribe: &[&str]) -> Access {
        Access {
            subscribe: subscribe.iter().map(|s| p(s)).collect(),
            publish: subscribe.iter().map(|s| p(s)).collect(),
        }
    }

    #[test]
    fn tenant_grant_never_covers_other_tenants_or_wider_patterns() {
        let acme = access(&["order:acme:>"]);
        for ok in [
            "order:acme:42",
            "order:acme:*",
            "order:acme:>",
            "order:acme:42:>",
        ] {
            assert!(acme.may_subscribe(&p(ok)), "{ok}");
        }
        for refused in [
            "order:>",
            "order:*",
            "order:*:42",
            "order:*:>",
            "order:globex:42",
            "order:acme",
            ">",
            "*:acme:42",
        ] {
            assert!(!acme.may_subscribe(&p(refused)), "{refused}");
        }
        assert!(acme.may_publish(&Topic::new("order:acme:1").unwrap()));
        assert!(!acme.may_publish(&Topic::new("order:globex:1").unwrap()));
        assert!(!acme.may_publish(&Topic::new("order:acme").unwrap()));
    }

    #[test]
    fn star_grant_covers_one_segment_only() {
        let a = access(&["chat:*:messages"]);
        assert!(a.may_subscribe(&p("chat:room1:messages")));
        assert!(a.may_subscribe(&p("chat:*:messages")));
        assert!(!a.may_subscribe(&p("chat:>")));
        assert!(!a.may_subscribe(&p("chat:room1:messages:x")));
        assert!(!a.may_subscribe(&p("chat:room1:*")));
    }

    #[test]
    fn token_sources_in_order_header_cookie_query() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(find_token(&headers, Some("q")), Ok(Some("q")));
        headers.insert(
            http::header::COOKIE,
            "a=b; tidings_token=c".parse().unwrap(),
        );
        assert_eq!(find_token(&headers, Some("q")), Ok(Some("c")));
        headers.insert(http::header::AUTHORIZATION, "Bearer h".parse().unwrap());
        assert_eq!(find_token(&headers, Some("q")), Ok(Some("h")));
        headers.insert(http::header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(find_token(&headers, None), Err(AuthError::NotBearer));
    }
}
