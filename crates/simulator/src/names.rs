//! Generated names and timestamps in the forms Kubernetes uses.

use rand::Rng;

/// RFC 3339 timestamp with second precision, as metav1.Time serializes.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_suffix(n: usize) -> String {
    let mut r = rand::rng();
    (0..n)
        .map(|_| ALPHANUMS[r.random_range(0..ALPHANUMS.len())] as char)
        .collect()
}

/// Maps a digest onto the same safe alphabet (pod-template-hash style).
pub fn safe_encode(bytes: &[u8], n: usize) -> String {
    bytes
        .iter()
        .take(n)
        .map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char)
        .collect()
}
