//! Streaming digests (sha256, sha512) and digest parsing.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};

/// Parses `sha256:<hex>` or `sha512:<hex>`; other algorithms are refused
/// because the store cannot verify them.
pub fn parse_digest(text: &str) -> Result<Digest> {
    let digest: Digest = text.parse().map_err(|e| Error::InvalidDigest {
        digest: text.to_string(),
        reason: format!("{e}"),
    })?;
    check_algorithm(&digest)?;
    Ok(digest)
}

/// Refuses digests whose algorithm the store cannot compute.
pub(crate) fn check_algorithm(digest: &Digest) -> Result<()> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha512 => Ok(()),
        other => Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: format!("unsupported algorithm {other}"),
        }),
    }
}

/// A running hash in one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm` (sha256 or sha512).
    pub fn new(algorithm: &DigestAlgorithm) -> Result<Hasher> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Hasher::Sha256(Sha256::new())),
            DigestAlgorithm::Sha512 => Ok(Hasher::Sha512(Sha512::new())),
            other => Err(Error::InvalidDigest {
                digest: format!("{other}:..."),
                reason: format!("unsupported algorithm {other}"),
            }),
        }
    }

    /// A fresh sha256 hasher.
    pub fn sha256() -> Hasher {
        Hasher::Sha256(Sha256::new())
    }

    /// Feeds bytes.
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
            Hasher::Sha512(h) => ("sha512", hex::encode(h.clone().finalize())),
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
pub fn digest_of(data: &[u8]) -> Digest {
    let mut h = Hasher::sha256();
    h.update(data);
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_json() {
        assert_eq!(
            digest_of(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn sha512_digest_matches_known_value() {
        let mut h = Hasher::new(&DigestAlgorithm::Sha512).unwrap();
        h.update(b"abc");
        assert!(h
            .digest()
            .to_string()
            .starts_with("sha512:ddaf35a193617aba"));
    }

    #[test]
    fn parse_rejects_bad_digests_with_the_input_named() {
        for bad in ["sha256:abc", "md5:0123", "nocolon", "sha256:ZZ"] {
            let err = parse_digest(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
