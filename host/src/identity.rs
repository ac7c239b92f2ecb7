//! Stable identities: a file's content fingerprint and each record's
//! idempotency key.
//!
//! Both are derived from content and position only, so they come out the
//! same on every retry, after a restart, and when a dead letter is
//! reprocessed (which reuses the key stored in its sidecar).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::KeySource;

/// Returns the lowercase hex SHA-256 digest of a file's contents.
///
/// # Errors
///
/// Fails when the file cannot be read.
pub fn fingerprint_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Derives a record's idempotency key.
///
/// With [`KeySource::Position`], the key is the first 32 hex digits of the
/// file's fingerprint and the record number, such as `3f2a…-42`. With
/// [`KeySource::RecordKey`], it is a digest of the plugin's record key, so
/// every version of an entity shares it; a record without a key falls
/// back to its position.
pub fn idempotency_key(
    source: KeySource,
    fingerprint: &str,
    record_number: u64,
    record_key: &str,
) -> String {
    match source {
        KeySource::RecordKey if !record_key.is_empty() => {
            let digest = Sha256::digest(format!("record-key\0{record_key}").as_bytes());
            hex(&digest[..16])
        }
        _ => {
            let prefix = &fingerprint[..fingerprint.len().min(32)];
            format!("{prefix}-{record_number}")
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_sha256_of_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(fingerprint_file(&path).unwrap(), expected);
    }

    #[test]
    fn position_keys_differ_per_record_and_per_file_version() {
        let a = idempotency_key(KeySource::Position, "aaaa", 1, "K");
        let b = idempotency_key(KeySource::Position, "aaaa", 2, "K");
        let c = idempotency_key(KeySource::Position, "bbbb", 1, "K");
        assert_eq!(a, "aaaa-1");
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn record_keys_ignore_file_and_position() {
        let a = idempotency_key(KeySource::RecordKey, "aaaa", 1, "K");
        let b = idempotency_key(KeySource::RecordKey, "bbbb", 9, "K");
        let c = idempotency_key(KeySource::RecordKey, "aaaa", 1, "L");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn record_key_mode_falls_back_to_position_without_a_key() {
        let key = idempotency_key(KeySource::RecordKey, "aaaa", 3, "");
        assert_eq!(key, "aaaa-3");
    }
}
