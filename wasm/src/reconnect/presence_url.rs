//! The presence URL: `GET /presence` beside the subscribe URL.

use alloc::string::String;

use super::url::encode_component;

/// `GET /presence?topic=..` beside `events_url` (its last path segment
/// replaced by `presence`, its query dropped), with an optional `limit`
/// and `cursor`.
///
/// ```
/// use tidings_wasm::reconnect::presence_url;
/// assert_eq!(
///     presence_url("https://h/api/events?x=1", "quiz:room 1", Some(50), Some("17.ab")),
///     "https://h/api/presence?topic=quiz%3Aroom%201&limit=50&cursor=17.ab"
/// );
/// assert_eq!(presence_url("/events", "a", None, None), "/presence?topic=a");
/// ```
pub fn presence_url(
    events_url: &str,
    topic: &str,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> String {
    let path = events_url.split(['?', '#']).next().unwrap_or_default();
    let dir = match path.rfind('/') {
        Some(slash) => &path[..=slash],
        None => "",
    };
    let mut url = String::from(dir);
    url.push_str("presence?topic=");
    encode_component(&mut url, topic);
    if let Some(limit) = limit {
        url.push_str("&limit=");
        url.push_str(itoa(limit).as_str());
    }
    if let Some(cursor) = cursor {
        url.push_str("&cursor=");
        encode_component(&mut url, cursor);
    }
    url
}

/// Decimal digits without `core::fmt` (it costs the bundle).
fn itoa(mut n: u32) -> String {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[i..].iter().map(|&d| char::from(d)).collect()
}
