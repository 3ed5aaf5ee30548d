//! Digests (sha256 and sha512), streaming hashers, and the name and tag
//! grammars of the distribution spec.

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Code, Error, Result};

/// A validated `algorithm:hex` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256 (64 hex characters).
    Sha256,
    /// SHA-512 (128 hex characters).
    Sha512,
}

impl Algorithm {
    /// The name used in digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses and validates `s`, naming it in the error.
    pub fn parse(s: &str) -> Result<Digest> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| {
            Error::new(
                Code::DigestInvalid,
                format!("digest {s:?} is not of the form algorithm:hex (e.g. sha256:…)"),
            )
        })?;
        let alg = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(Error::new(
                    Code::DigestInvalid,
                    format!(
                        "digest {s:?}: algorithm {other:?} is not supported; use sha256 or sha512"
                    ),
                ))
            }
        };
        if hex.len() != alg.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::new(
                Code::DigestInvalid,
                format!(
                    "digest {s:?}: expected {} lowercase hex characters after {}:",
                    alg.hex_len(),
                    alg.as_str()
                ),
            ));
        }
        Ok(Digest {
            alg,
            hex: hex.to_string(),
        })
    }

    /// The digest of `data` with `alg`.
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finish()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.alg.as_str(), self.hex)
    }
}

/// A running hash of a stream.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Box<Sha512>),
}

impl Hasher {
    /// A fresh hasher for `alg`.
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(Sha512::new())),
        }
    }
    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    /// The digest of everything fed so far (the hasher keeps its state).
    pub fn finish(&self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                alg: Algorithm::Sha256,
                hex: hex::encode(h.clone().finalize()),
            },
            Hasher::Sha512(h) => Digest {
                alg: Algorithm::Sha512,
                hex: hex::encode((**h).clone().finalize()),
            },
        }
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Checks one path component against `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or "-+"
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Validates a repository name (the spec's `<name>` grammar, at most 255 bytes).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || !name.split('/').all(component_ok) {
        return Err(Error::new(
            Code::NameInvalid,
            format!(
                "repository name {name:?} is invalid: use lowercase letters, digits and single \
                 separators (., _, __, -) in /-separated components, at most 255 characters"
            ),
        ));
    }
    Ok(())
}

/// True if `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_hash() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        let d5 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(Digest::parse(&d5.to_string()).unwrap(), d5);
        for bad in [
            "sha256:abc",
            "md5:00",
            "nocolon",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert!(e.to_string().contains("DIGEST_INVALID"), "{e}");
        }
    }

    #[test]
    fn names_and_tags() {
        for ok in ["a", "library/busybox", "a.b_c__d---e/f0", "x/y/z"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "_a",
            "a/_manifests",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(is_tag("latest") && is_tag("_x.Y-1") && !is_tag(".x") && !is_tag(""));
        assert!(!is_tag(&"a".repeat(129)));
    }
}
