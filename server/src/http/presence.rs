//! `GET /presence?topic=T`: the streams subscribed to `T` on every instance.

use std::sync::Arc;

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use tidings_core::topic::{Pattern, Topic, is_internal};

use super::AppState;
use crate::{
    auth::{AuthError, find_token},
    error::ApiError,
    presence::{Cursor, DEFAULT_PAGE},
};

/// What the query string asks for.
#[derive(Debug, Default)]
struct PresenceQuery {
    topics: Vec<String>,
    limit: Option<String>,
    cursor: Option<String>,
    access_token: Option<String>,
}

impl PresenceQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "topic" => parsed.topics.push(value.into_owned()),
                "limit" => parsed.limit = Some(value.into_owned()),
                "cursor" => parsed.cursor = Some(value.into_owned()),
                "access_token" => parsed.access_token = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

pub(super) async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    state.refuse_if_shutting_down()?;
    let query = PresenceQuery::parse(query.as_deref());
    let [topic] = &query.topics[..] else {
        return Err(ApiError::BadRequest(
            "give exactly one topic: GET /presence?topic=quiz:room1".into(),
        ));
    };
    let topic = Topic::new(topic).map_err(|e| ApiError::bad_topic(topic, e))?;
    if is_internal(&topic) {
        return Err(ApiError::BadRequest(format!(
            "topics starting with `$` belong to the server: `{topic}` has no presence"
        )));
    }
    let max = state.settings.presence_page_max.max(1);
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE.min(max),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be a number from 1 to {max}"
                )));
            }
        },
    };
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<Cursor>()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        ),
    };

    // The same rights as subscribing to the topic.
    let token = find_token(&headers, query.access_token.as_deref())?;
    let access = state.auth.authenticate(token)?;
    if !access.may_subscribe(&Pattern::from(topic.clone())) {
        return Err(match token {
            None => ApiError::Unauthorized(AuthError::Missing),
            Some(_) => ApiError::Forbidden(format!(
                "your token does not allow subscribing to `{topic}`, so not seeing its presence either"
            )),
        });
    }

    let page = state
        .presence
        .store()
        .list(&topic, after, limit)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot list presence");
            ApiError::Unavailable(
                "the message engine is unavailable, so presence cannot be listed; retry later"
                    .into(),
            )
        })?;

    // The records are JSON already: joined, not parsed again.
    let mut body = String::with_capacity(
        64 + page
            .members
            .iter()
            .map(|m| m.record.len() + 1)
            .sum::<usize>(),
    );
    body.push_str(r#"{"topic":"#);
    body.push_str(&serde_json::Value::from(topic.as_str()).to_string());
    body.push_str(r#","clients":["#);
    for (i, member) in page.members.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&member.record);
    }
    body.push_str(r#"],"total":"#);
    body.push_str(&page.total.to_string());
    body.push_str(r#","next":"#);
    match page.next {
        Some(next) => {
            body.push('"');
            body.push_str(&next.to_string());
            body.push('"');
        }
        None => body.push_str("null"),
    }
    body.push('}');
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
