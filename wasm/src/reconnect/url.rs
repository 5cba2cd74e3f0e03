//! The subscribe URL: topics, resume point and (for EventSource) the token.

use alloc::string::String;

/// Builds `base?topic=..&topic=..&lastEventId=..&access_token=..` per the
/// Tidings protocol, keeping any query `base` already has.
///
/// ```
/// use tidings_wasm::reconnect::subscribe_url;
/// let url = subscribe_url("/events", &["chat:*", "news"], Some("9"), None);
/// assert_eq!(url, "/events?topic=chat%3A*&topic=news&lastEventId=9");
/// ```
pub fn subscribe_url(
    base: &str,
    topics: &[impl AsRef<str>],
    last_event_id: Option<&str>,
    access_token: Option<&str>,
) -> String {
    let mut url = String::from(base);
    let mut separator = if base.contains('?') { '&' } else { '?' };
    let mut param = |name: &str, value: &str| {
        url.push(separator);
        separator = '&';
        url.push_str(name);
        url.push('=');
        encode_component(&mut url, value);
    };
    for topic in topics {
        param("topic", topic.as_ref());
    }
    if let Some(id) = last_event_id {
        param("lastEventId", id);
    }
    if let Some(token) = access_token {
        param("access_token", token);
    }
    url
}

/// Percent-encodes like `encodeURIComponent`.
pub(crate) fn encode_component(out: &mut String, value: &str) {
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        if keep {
            out.push(byte as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_reserved_byte() {
        let url = subscribe_url(
            "http://h/events?x=1",
            &["a:>"],
            Some("1-2 3&4"),
            Some("t.k+n/="),
        );
        assert_eq!(
            url,
            "http://h/events?x=1&topic=a%3A%3E&lastEventId=1-2%203%264&access_token=t.k%2Bn%2F%3D"
        );
    }

    #[test]
    fn encodes_non_ascii_as_utf8() {
        assert_eq!(subscribe_url("/e", &["é"], None, None), "/e?topic=%C3%A9");
    }
}
