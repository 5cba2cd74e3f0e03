//! `POST /publish`: one message or an array of them.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tidings_core::{
    message::{ConnectionId, EventType, IdempotencyKey, Outgoing},
    topic::Topic,
};

use super::AppState;
use crate::{
    auth::{AuthError, find_token},
    engine::PublishError,
    error::ApiError,
};

/// One message as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    topic: String,
    #[serde(rename = "type")]
    event_type: Option<String>,
    data: Option<Box<RawValue>>,
    exclude: Option<String>,
    #[serde(rename = "idempotencyKey")]
    idempotency_key: Option<String>,
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
    // `Idempotency-Key` names one message; a batch names each in its body.
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(_) if is_batch => {
            return Err(ApiError::BadRequest(
                "`Idempotency-Key` names one message: in a batch, give each message an `idempotencyKey` field".into(),
            ));
        }
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| IdempotencyKey::new(v).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`Idempotency-Key`: {}",
                        tidings_core::message::IdempotencyKeyError
                    ))
                })?,
        ),
    };

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
        let event_type = match message.event_type.as_deref() {
            None => EventType::MESSAGE,
            Some(text) => EventType::new(text).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        };
        let data = message
            .data
            .as_deref()
            .map_or_else(|| "null".to_owned(), |raw| compact_json(raw.get()));
        let mut outgoing = Outgoing::new(topic, event_type, data);
        outgoing.exclude = match message.exclude.as_deref() {
            None => None,
            Some(text) => Some(
                text.parse::<ConnectionId>()
                    .map_err(|e| ApiError::BadRequest(format!("`exclude`: {e}")))?,
            ),
        };
        outgoing.idempotency_key = match message.idempotency_key.as_deref() {
            None => header_key.clone(),
            Some(text) => Some(
                IdempotencyKey::new(text)
                    .map_err(|e| ApiError::BadRequest(format!("`idempotencyKey`: {e}")))?,
            ),
        };
        batch.push(outgoing);
    }

    let accepted = state.engine.publish(batch).await.map_err(|e| match e {
        PublishError::KeyReused(reused) => ApiError::IdempotencyKeyReused(reused.to_string()),
        PublishError::Unavailable(ref detail) | PublishError::Uncertain(ref detail) => {
            tracing::warn!(error = %detail, "publish not accepted");
            ApiError::Unavailable(e.to_string())
        }
    })?;
    let fresh = accepted.iter().filter(|a| !a.repeat).count();
    state.metrics.published.fetch_add(fresh as u64, Relaxed);
    let ids: Vec<String> = accepted.iter().map(|a| a.id.to_string()).collect();
    let body = if is_batch {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.first() })
    };
    let mut response = axum::Json(body).into_response();
    if accepted.iter().any(|a| a.repeat) {
        // Stripe's name for "this answer repeats an earlier publish".
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!(
        "the body must be a message {{\"topic\", \"type\", \"data\", \"exclude\", \"idempotencyKey\"}} or an array of them: {e}"
    ))
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
}
