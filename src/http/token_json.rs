//! JSON bodies of token answers (the Fleet pair, the OAuth token answer), written member
//! by member into one buffer. Tokens this server minted are base64url segments joined
//! by dots (JWS compact serialization, RFC 7515 §7.1; the refresh formats of
//! `tokens::refresh`), which JSON never escapes: such a value is checked eight bytes at
//! a time and copied, instead of going through serde_json's per-byte escape scan (the
//! largest part of a token answer's serialization). Any value that has a byte needing
//! an escape (or any non-ASCII byte) takes serde_json's path, so the bytes are always
//! exactly those `serde_json` writes for the same members in the same order.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// One JSON object being written; members in the order they are added.
pub(super) struct JsonObject {
    buf: Vec<u8>,
}

impl JsonObject {
    /// An object whose members will take about `capacity` bytes.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 2);
        buf.push(b'{');
        Self { buf }
    }

    /// `"key":`; keys are literals of this module's callers, none needing an escape.
    fn key(&mut self, key: &'static str) {
        debug_assert!(!needs_escape_or_non_ascii(key.as_bytes()));
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A string member; `value` is usually a token (copied without a per-byte scan
    /// when it has nothing to escape), else any text (escaped by serde_json).
    pub(super) fn string(&mut self, key: &'static str, value: &str) {
        self.key(key);
        if needs_escape_or_non_ascii(value.as_bytes()) {
            serde_json::to_writer(&mut self.buf, value).expect("writing to a Vec cannot fail");
        } else {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        }
    }

    /// A number member.
    pub(super) fn number(&mut self, key: &'static str, value: u64) {
        self.key(key);
        serde_json::to_writer(&mut self.buf, &value).expect("writing to a Vec cannot fail");
    }

    /// The object as a `200` answer with `Content-Type: application/json` (what
    /// `axum::Json` answers).
    pub(super) fn into_response(mut self) -> Response {
        self.buf.push(b'}');
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.buf,
        )
            .into_response()
    }
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether some byte of the word is zero (exact: no false answer either way).
fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether some byte of `bytes` is one JSON escapes (`"`, `\`, a control character) or
/// is not ASCII; eight bytes per step.
fn needs_escape_or_non_ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks of eight bytes"));
        // Non-ASCII first: the control-character test below is exact only for bytes
        // under 0x80.
        if word & HIGHS != 0
            || word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0
            || has_zero_byte(word ^ (ONES * u64::from(b'"')))
            || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: &str) -> Vec<u8> {
        let mut object = JsonObject::with_capacity(0);
        object.string("v", value);
        object.number("n", 1_234_567);
        object.buf.push(b'}');
        object.buf
    }

    fn serde(value: &str) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Object<'a> {
            v: &'a str,
            n: u64,
        }
        serde_json::to_vec(&Object {
            v: value,
            n: 1_234_567,
        })
        .unwrap()
    }

    #[test]
    fn the_bytes_are_serde_json_s_for_tokens_and_for_text_that_needs_escapes() {
        let jwt = "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLXNp_Z25lZC0";
        let mut values = vec![
            String::new(),
            jwt.to_string(),
            "ft1.YWdlbnQ.Y2xpZW50.c2VjcmV0c2VjcmV0c2VjcmV0".to_string(),
            "a \"quoted\" \\ value".to_string(),
            "tab\there, newline\n, nul\0, del\u{7f}, unit\u{1f}".to_string(),
            "non-ASCII: é, ü, 🙂".to_string(),
            "scope:read scope:write".to_string(),
        ];
        // Every byte that matters at every position of a word and of the remainder.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é', '~'] {
            for at in 0..20 {
                let mut value: String = "a".repeat(20);
                value.insert(at, special);
                values.push(value);
            }
        }
        for value in &values {
            assert_eq!(
                written(value),
                serde(value),
                "{value:?}: {}",
                String::from_utf8_lossy(&written(value))
            );
        }
    }

    #[test]
    fn the_escape_check_finds_each_byte_that_needs_one_anywhere() {
        for byte in 0u8..=0x7f {
            let needs = byte < 0x20 || byte == b'"' || byte == b'\\';
            for at in 0..19 {
                let mut bytes = vec![b'A'; 19];
                bytes[at] = byte;
                assert_eq!(
                    needs_escape_or_non_ascii(&bytes),
                    needs,
                    "{byte:#x} at {at}"
                );
            }
        }
        assert!(needs_escape_or_non_ascii("xxxxxxxé".as_bytes()));
        assert!(!needs_escape_or_non_ascii(
            b"abcdefghABCDEFGH0123456789-_.~ !#"
        ));
    }
}
