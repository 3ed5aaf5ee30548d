//! The digest, repository name and tag grammars as the registry applies
//! them to request parameters: berth-core's checks (shared with image
//! references), refused with the distribution spec's error codes.
//!
//! Digests are oci-spec's [`Digest`], limited to what the registry can
//! verify (sha256 and sha512); hashing is [`berth_core::digest::Hasher`].

use berth_core::digest::DigestError;
use berth_core::name;
use oci_spec::image::Digest;

use crate::error::{Code, Error, Result};

/// Parses a `sha256:<hex>` or `sha512:<hex>` digest; anything else is
/// DIGEST_INVALID naming the text and what is wrong with it.
pub fn parse(text: &str) -> Result<Digest> {
    Ok(berth_core::digest::parse(text)?)
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Error {
        Error::new(
            Code::DigestInvalid,
            format!("digest {:?}: {}", e.digest, e.reason),
        )
    }
}

/// Validates a repository name (the spec's `<name>` grammar, at most
/// [`name::MAX_REPOSITORY_LEN`] bytes), or NAME_INVALID.
pub fn validate_name(repo: &str) -> Result<()> {
    if !name::valid_repository(repo) {
        return Err(Error::new(
            Code::NameInvalid,
            format!(
                "repository name {repo:?} is invalid: use lowercase letters, digits and single \
                 separators (., _, __, -) in /-separated components, at most {} characters",
                name::MAX_REPOSITORY_LEN
            ),
        ));
    }
    Ok(())
}

/// True if `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    name::valid_tag(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_digests_and_names_get_the_spec_codes() {
        let d = parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap();
        assert_eq!(d, berth_core::digest::sha256_of(b""));
        for bad in ["sha256:abc", "md5:00", "nocolon"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("DIGEST_INVALID: digest"), "{e}");
            assert!(e.contains(bad), "{e}");
        }
        validate_name("library/busybox").unwrap();
        let e = validate_name("a//b").unwrap_err().to_string();
        assert!(
            e.starts_with("NAME_INVALID: repository name \"a//b\""),
            "{e}"
        );
        assert!(is_tag("latest") && !is_tag(".x"));
    }
}
