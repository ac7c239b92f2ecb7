//! `Idempotency-Key` handling for POST.
//!
//! A POST that carries the header inserts its row at most once per key. The
//! writer stores the key with a hash of the request path and body and with
//! the response, in the transaction that inserts the row, so a repeat of the
//! same request gets the stored response and no new row even across
//! restarts. Only requests that inserted a row are stored, so a POST
//! rejected with 400 leaves its key free. Stored keys never expire.
//!
//! Keys of requests being served are also kept in memory, so that a second
//! request with the same key gets 409 while the first one runs. The writer's
//! lookup still decides on its own, so a key whose first request was cut
//! off after reaching the writer never inserts twice.

use std::collections::HashSet;
use std::sync::Mutex;

use hyper::header::{HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};

/// Request header that names an idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Response header, with value `true`, on a response replayed for a
/// repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Maximum length of an idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Idempotency key of a POST with the hash that identifies its request.
#[derive(Debug)]
pub(crate) struct IdempotencyKey {
    pub(crate) key: String,
    /// SHA-256 of the request path and body.
    pub(crate) request_hash: [u8; 32],
}

impl IdempotencyKey {
    pub(crate) fn new(key: String, path: &str, body: &[u8]) -> Self {
        Self {
            key,
            request_hash: request_hash(path, body),
        }
    }
}

/// Returns the `Idempotency-Key` header of a request, `None` when it has
/// none, or the reason why the header is invalid.
pub(crate) fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("request has more than one Idempotency-Key header; send one".into());
    }

    let key = value.to_str().map_err(|_| {
        "Idempotency-Key header contains bytes other than visible ASCII; \
         send a key of visible ASCII characters"
            .to_owned()
    })?;
    if key.is_empty() {
        return Err(format!(
            "Idempotency-Key header is empty; send a key of 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        ));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key header is {} bytes long; send a key of at most \
             {MAX_IDEMPOTENCY_KEY_BYTES} bytes",
            key.len()
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Hashes a request path and body. The path's length goes first, so that no
/// two different pairs hash the same bytes.
fn request_hash(path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((path.len() as u64).to_be_bytes());
    hasher.update(path.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// Keys of the requests being served.
#[derive(Default)]
pub(crate) struct InProgress {
    keys: Mutex<HashSet<String>>,
}

impl InProgress {
    /// Marks `key` as in progress until the returned claim is dropped, or
    /// returns `None` when another request holds it.
    pub(crate) fn claim(&self, key: &str) -> Option<Claim<'_>> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !keys.insert(key.to_owned()) {
            return None;
        }
        Some(Claim {
            in_progress: self,
            key: key.to_owned(),
        })
    }
}

/// Claim on an idempotency key, released on drop, so that a request cut off
/// mid-way releases its key as well.
pub(crate) struct Claim<'a> {
    in_progress: &'a InProgress,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut keys = self
            .in_progress
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).unwrap();
            headers.append("Idempotency-Key", value);
        }
        headers
    }

    #[test]
    fn key_header_is_optional() {
        assert_eq!(key_from_headers(&HeaderMap::new()), Ok(None));
        assert_eq!(
            key_from_headers(&headers(&[b"order-17"])),
            Ok(Some("order-17".into()))
        );
    }

    #[test]
    fn key_length_is_limited() {
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
        assert_eq!(
            key_from_headers(&headers(&[longest.as_bytes()])),
            Ok(Some(longest.clone()))
        );

        let too_long = format!("{longest}k");
        let err = key_from_headers(&headers(&[too_long.as_bytes()])).unwrap_err();
        assert!(err.contains("256 bytes long"), "{err}");

        let err = key_from_headers(&headers(&[b""])).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn invalid_key_headers_are_rejected() {
        let err = key_from_headers(&headers(&[b"caf\xe9"])).unwrap_err();
        assert!(err.contains("visible ASCII"), "{err}");

        let err = key_from_headers(&headers(&[b"a", b"b"])).unwrap_err();
        assert!(err.contains("more than one"), "{err}");
    }

    #[test]
    fn hash_separates_path_and_body() {
        assert_eq!(request_hash("/a", b"{}"), request_hash("/a", b"{}"));
        assert_ne!(request_hash("/a", b"{}"), request_hash("/b", b"{}"));
        assert_ne!(request_hash("/a", b"{}"), request_hash("/a", b"[]"));
        assert_ne!(request_hash("/a", b"b{}"), request_hash("/ab", b"{}"));
    }

    #[test]
    fn claim_is_exclusive_until_dropped() {
        let in_progress = InProgress::default();
        let first = in_progress.claim("k").expect("first claim");
        assert!(in_progress.claim("k").is_none());
        assert!(in_progress.claim("other").is_some());

        drop(first);
        assert!(in_progress.claim("k").is_some());
    }
}
