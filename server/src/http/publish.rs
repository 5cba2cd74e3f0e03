//! `POST /publish`: one message or an array of them.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tidings_core::topic::Topic;

use super::AppState;
use crate::{
    auth::{AuthError, find_token},
    backend::Outgoing,
    error::ApiError,
};

/// Longest event type, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// One message as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    topic: String,
    #[serde(rename = "type")]
    event_type: Option<String>,
    data: Option<Box<RawValue>>,
    exclude: Option<String>,
}

pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    state.refuse_if_shutting_down()?;
    let settings = &state.settings;

    // A JSON content type makes cross-origin browsers ask first (CORS
    // preflight), so a page cannot publish with a visitor's cookie.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = settings.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }

    // Rights before reading the body: an anonymous client learns at once.
    let query_token = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let token = find_token(&headers, query_token.as_deref())?;
    let access = state.auth.authenticate(token)?;

    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "could not read the body: {e}"
            )));
        }
    };

    let is_batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let posted: Vec<Posted> = if is_batch {
        serde_json::from_slice(&bytes).map_err(|e| bad_json(&e))?
    } else {
        vec![serde_json::from_slice(&bytes).map_err(|e| bad_json(&e))?]
    };
    if posted.is_empty() {
        return Err(ApiError::BadRequest("the batch is empty".into()));
    }
    if posted.len() > settings.max_batch {
        return Err(ApiError::BatchTooLarge {
            len: posted.len(),
            max: settings.max_batch,
        });
    }

    let mut batch = Vec::with_capacity(posted.len());
    for message in posted {
        let topic =
            Topic::new(&message.topic).map_err(|e| ApiError::bad_topic(&message.topic, e))?;
        if !access.may_publish(&topic) {
            return Err(match token {
                None => ApiError::Unauthorized(AuthError::Missing),
                Some(_) => ApiError::Forbidden(format!(
                    "your token does not allow publishing to `{topic}`"
                )),
            });
        }
        let event_type = message.event_type.unwrap_or_else(|| "message".to_owned());
        check_type(&event_type)?;
        let data = message
            .data
            .as_deref()
            .map_or_else(|| "null".to_owned(), |raw| compact_json(raw.get()));
        batch.push(Outgoing {
            topic,
            event_type,
            data,
            exclude: message.exclude,
        });
    }

    let count = batch.len();
    let ids = state
        .backend
        .publish(batch)
        .await
        .map_err(|e| ApiError::engine_unavailable("the message was not confirmed", e))?;
    state.metrics.published.fetch_add(count as u64, Relaxed);
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let body = if is_batch {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.first() })
    };
    Ok(axum::Json(body).into_response())
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!(
        "the body must be a message {{\"topic\", \"type\", \"data\", \"exclude\"}} or an array of them: {e}"
    ))
}

fn check_type(event_type: &str) -> Result<(), ApiError> {
    if event_type.is_empty() || event_type.len() > MAX_TYPE_LEN {
        return Err(ApiError::BadRequest(format!(
            "`type` must be 1 to {MAX_TYPE_LEN} bytes"
        )));
    }
    if event_type.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`type` must not contain control characters or line breaks".into(),
        ));
    }
    if event_type.starts_with("tidings.") {
        return Err(ApiError::BadRequest(
            "types starting with `tidings.` are reserved for the server's own events".into(),
        ));
    }
    Ok(())
}

/// Removes the insignificant whitespace of valid JSON, keeping every value
/// (numbers included) exactly as written, so `data:` is one line.
pub fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_strips_whitespace_outside_strings_only() {
        assert_eq!(
            compact_json("{ \"a b\" : [ 1 ,\n 2.50 ] ,\r\n \"c\":\"x \\\" y\\\\\" }"),
            "{\"a b\":[1,2.50],\"c\":\"x \\\" y\\\\\"}"
        );
        assert_eq!(
            compact_json("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn reserved_and_unsafe_types_are_refused() {
        assert!(check_type("status").is_ok());
        assert!(check_type("tidings.gap").is_err());
        assert!(check_type("a\nb").is_err());
        assert!(check_type("").is_err());
    }
}
