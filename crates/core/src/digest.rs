//! The digests berth can verify — sha256 and sha512 — parsed strictly into
//! oci-spec's `Digest`, and a streaming hasher that never needs a second
//! read of the data.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha512};

/// A digest that is not `sha256:<64 hex>` or `sha512:<128 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {digest:?}: {reason}")]
pub struct DigestError {
    /// The text given.
    pub digest: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The number of hex characters of an `algorithm` digest, for the two
/// algorithms berth computes.
fn hex_len(algorithm: &DigestAlgorithm) -> Option<usize> {
    match algorithm {
        DigestAlgorithm::Sha256 => Some(64),
        DigestAlgorithm::Sha512 => Some(128),
        _ => None,
    }
}

/// Parses `sha256:<hex>` or `sha512:<hex>` (lowercase hex of the exact
/// length); any other algorithm is refused, as nothing here can verify it.
pub fn parse(text: &str) -> Result<Digest, DigestError> {
    let bad = |reason: String| DigestError {
        digest: text.to_string(),
        reason,
    };
    let (alg, hex) = text
        .split_once(':')
        .ok_or_else(|| bad("not of the form algorithm:hex (e.g. sha256:…)".into()))?;
    let algorithm = match alg {
        "sha256" => DigestAlgorithm::Sha256,
        "sha512" => DigestAlgorithm::Sha512,
        other => {
            return Err(bad(format!(
                "algorithm {other:?} is not supported; use sha256 or sha512"
            )))
        }
    };
    let len = hex_len(&algorithm).unwrap_or(0);
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad(format!(
            "expected {len} lowercase hex characters after {alg}:"
        )));
    }
    text.parse().map_err(|e| bad(format!("{e}")))
}

/// Refuses a parsed digest whose algorithm berth cannot compute.
pub fn check_supported(digest: &Digest) -> Result<(), DigestError> {
    match hex_len(digest.algorithm()) {
        Some(_) => Ok(()),
        None => Err(DigestError {
            digest: digest.to_string(),
            reason: format!(
                "algorithm {} is not supported; use sha256 or sha512",
                digest.algorithm()
            ),
        }),
    }
}

/// A running hash in sha256 or sha512.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state (boxed: it is twice the size).
    Sha512(Box<Sha512>),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: &DigestAlgorithm) -> Result<Hasher, DigestError> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Hasher::sha256()),
            DigestAlgorithm::Sha512 => Ok(Hasher::Sha512(Box::default())),
            other => Err(DigestError {
                digest: format!("{other}:…"),
                reason: format!("algorithm {other} is not supported; use sha256 or sha512"),
            }),
        }
    }

    /// A fresh sha256 hasher.
    pub fn sha256() -> Hasher {
        Hasher::Sha256(Sha256::new())
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far (the hasher keeps running).
    pub fn digest(&self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => ("sha256", hex::encode(h.clone().finalize())),
            Hasher::Sha512(h) => ("sha512", hex::encode((**h).clone().finalize())),
        };
        format!("{alg}:{hex}")
            .parse()
            .expect("a freshly computed hex digest is always valid")
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sha256 digest of an in-memory buffer.
pub fn sha256_of(data: &[u8]) -> Digest {
    let mut h = Hasher::sha256();
    h.update(data);
    h.digest()
}

/// The digest of an in-memory buffer with `algorithm` (sha256 or sha512).
pub fn digest_of(algorithm: &DigestAlgorithm, data: &[u8]) -> Result<Digest, DigestError> {
    let mut h = Hasher::new(algorithm)?;
    h.update(data);
    Ok(h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_stream_and_parse_back() {
        let d = digest_of(&DigestAlgorithm::Sha256, b"").unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(parse(EMPTY).unwrap(), d);
        let mut h = Hasher::new(&DigestAlgorithm::Sha512).unwrap();
        h.update(b"a");
        h.update(b"bc");
        let d5 = h.digest();
        assert_eq!(d5, digest_of(&DigestAlgorithm::Sha512, b"abc").unwrap());
        assert_eq!(parse(d5.as_ref()).unwrap(), d5);
    }

    #[test]
    fn only_verifiable_digests_parse() {
        for bad in [
            "sha256:abc",
            "md5:00",
            "nocolon",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "blake3:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.digest, bad);
        }
    }
}
