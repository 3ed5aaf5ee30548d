//! Image references with docker's normalisation: `busybox` is
//! `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

use berth_core::name::{valid_component, valid_tag};

use crate::error::{Error, Result};

/// The registry a name without a domain belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// A normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn bad(input: &str, reason: impl Into<String>) -> Error {
    Error::Reference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return true; // IPv6 literal
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Reference> {
        if input.is_empty() {
            return Err(bad(input, "empty reference"));
        }
        if input.len() > 4096 {
            let start: String = input.chars().take(64).collect();
            return Err(bad(
                &format!("{start}..."),
                "reference longer than 4096 bytes",
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let digest = berth_core::digest::parse(d).map_err(|e| bad(input, e.to_string()))?;
                (r, Some(digest))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(bad(
                        input,
                        format!(
                            "invalid tag {tag:?} (allowed: letters, digits, _ . -; at most 128)"
                        ),
                    ));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad(input, "missing repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if !valid_domain(&domain) {
            return Err(bad(input, format!("invalid registry host {domain:?}")));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        for component in path.split('/') {
            if component.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(bad(input, "repository names must be lowercase"));
            }
            if !valid_component(component) {
                return Err(bad(
                    input,
                    format!("invalid repository path component {component:?} (lowercase letters, digits and single separators . _ __ -)"),
                ));
            }
        }
        if domain.len() + 1 + path.len() > 255 {
            return Err(bad(input, "repository name longer than 255 characters"));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !valid_tag(tag) {
            return Err(bad(tag, "invalid tag"));
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The record of an image loaded without a name (podman's
    /// `<none>:<none>`), known by its manifest or index `digest`: no
    /// domain, path or tag; it prints as the digest.
    pub fn unnamed(digest: Digest) -> Reference {
        Reference {
            domain: String::new(),
            path: String::new(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// Whether this is an [`unnamed`](Reference::unnamed) record's name.
    pub fn is_unnamed(&self) -> bool {
        self.domain.is_empty()
    }

    /// The short form docker prints: `busybox`, `user/app`,
    /// `localhost:5000/app` (without tag or digest); `<none>` when unnamed.
    pub fn familiar_repository(&self) -> String {
        if self.is_unnamed() {
            return "<none>".to_string();
        }
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (true, Some(d)) = (self.is_unnamed(), &self.digest) {
            // An unnamed image is known by its digest, as podman prints it.
            return write!(f, "{d}");
        }
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
        assert_eq!(norm("quay.io/x/y_z__w-1"), "quay.io/x/y_z__w-1:latest");
        assert_eq!(norm("[::1]:5000/app:v1"), "[::1]:5000/app:v1");
        assert_eq!(norm("127.0.0.1:5000/a"), "127.0.0.1:5000/a:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("reg.io:443/busybox:t@{d}")),
            format!("reg.io:443/busybox:t@{d}")
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        let long = format!("a{}", "é".repeat(3000)); // byte 64 is inside a char
        assert!(Reference::parse(&long).is_err());
        let seeds = [
            "docker.io/library/busybox:latest@sha256:",
            "[::1]:5000/a/b:c",
            "é/ü:ß@x",
        ];
        for seed in seeds {
            for cut in 0..=seed.len() {
                if let Some(prefix) = seed.get(..cut) {
                    for extra in ["", ":", "/", "@", "é", "..", "__", "-"] {
                        let _ = Reference::parse(&format!("{prefix}{extra}"));
                    }
                }
            }
        }
    }

    #[test]
    fn familiar_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.familiar_repository(), "busybox");
        assert_eq!(r.tag(), Some("latest"));
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.familiar_repository(), "localhost:5000/app");
    }

    #[test]
    fn bad_references_are_named() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:bad/tag",
            "a//b",
            "busybox@sha256:123",
            "-lead",
            "host:port/x",
            "busybox:",
        ] {
            let err = Reference::parse(bad);
            assert!(err.is_err(), "{bad:?} should be refused");
            assert!(err.unwrap_err().to_string().contains(&format!("{bad:?}")));
        }
    }
}
