//! Media types (OCI and Docker schema2), parsing of manifests, indexes and
//! configs, and platform selection from an index.

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};

use crate::error::{Error, Result};

/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the schema2 index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker uncompressed layer (used by some tools).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker schema1 manifests (unsupported).
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The largest manifest, index or config berth reads into memory.
pub const MAX_JSON: u64 = 8 << 20;

/// What a descriptor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI index or Docker manifest list.
    Index,
    /// An OCI or Docker schema2 manifest.
    Manifest,
    /// An image config.
    Config,
    /// A filesystem layer.
    Layer(Compression),
    /// Anything else (artifacts, signatures, ...).
    Other,
}

/// How a layer is compressed (berth-archive's type, shared with the unpacker).
pub use berth_archive::Compression;

/// The OCI layer media type for a compression.
pub fn oci_layer_type(compression: Compression) -> MediaType {
    match compression {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    }
}

/// Classifies a media type.
pub fn kind(media_type: &MediaType) -> Kind {
    match media_type {
        MediaType::ImageIndex => Kind::Index,
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageConfig => Kind::Config,
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => {
            Kind::Layer(Compression::None)
        }
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Kind::Layer(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Kind::Layer(Compression::Zstd)
        }
        MediaType::Other(s) => match s.as_str() {
            DOCKER_MANIFEST_LIST => Kind::Index,
            DOCKER_MANIFEST => Kind::Manifest,
            DOCKER_CONFIG => Kind::Config,
            DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => Kind::Layer(Compression::Gzip),
            DOCKER_LAYER_TAR => Kind::Layer(Compression::None),
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

fn check_schema1(media_type: Option<&str>, what: &str) -> Result<()> {
    if let Some(mt) = media_type {
        if DOCKER_SCHEMA1.contains(&mt) {
            return Err(Error::invalid(
                what,
                "Docker schema1 manifests are not supported; re-push the image with a current docker or skopeo",
            ));
        }
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str, doc: &str) -> Result<T> {
    let value: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| Error::invalid(what, format!("invalid JSON in {doc}: {e}")))?;
    check_schema1(value.get("mediaType").and_then(|v| v.as_str()), what)?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        check_schema1(Some(DOCKER_SCHEMA1[0]), what)?;
    }
    serde_json::from_value(value)
        .map_err(|e| Error::invalid(what, format!("not a valid {doc}: {e}")))
}

/// Parses an OCI or Docker schema2 manifest; `what` names it in errors.
pub fn parse_manifest(data: &[u8], what: &str) -> Result<ImageManifest> {
    parse_json(data, what, "image manifest")
}

/// Parses an OCI index or Docker manifest list.
pub fn parse_index(data: &[u8], what: &str) -> Result<ImageIndex> {
    parse_json(data, what, "image index")
}

/// Parses an OCI or Docker image config.
pub fn parse_config(data: &[u8], what: &str) -> Result<ImageConfiguration> {
    parse_json(data, what, "image config")
}

/// The platform to pick from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in GOARCH spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Optional variant, e.g. `v7`, `v8`.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The machine berth runs on.
    pub fn host() -> PlatformSpec {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        PlatformSpec {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<PlatformSpec> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid(
                format!("platform {text:?}"),
                "expected os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7",
            ));
        }
        Ok(PlatformSpec {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// True if an index entry's platform runs here.
    pub fn matches(&self, desc: &Descriptor) -> bool {
        let Some(p) = desc.platform() else {
            return false;
        };
        if os_name(p.os()) != self.os || arch_name(p.architecture()) != self.architecture {
            return false;
        }
        let normal = |v: Option<&str>| -> Option<String> {
            // arm64 without variant means v8.
            match (self.architecture.as_str(), v) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(String::from),
            }
        };
        match &self.variant {
            None => true,
            Some(want) => normal(p.variant().as_deref()) == normal(Some(want)),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The GOOS spelling of an [`Os`].
pub fn os_name(os: &Os) -> String {
    serde_json::to_value(os)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The GOARCH spelling of an [`Arch`].
pub fn arch_name(arch: &Arch) -> String {
    serde_json::to_value(arch)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Picks the manifest for `platform` from an index; `what` names the index
/// in the error that lists the platforms on offer.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    platform: &PlatformSpec,
    what: &str,
) -> Result<&'a Descriptor> {
    let manifests = index
        .manifests()
        .iter()
        .filter(|d| kind(d.media_type()) == Kind::Manifest);
    let mut offered = Vec::new();
    for d in manifests {
        if platform.matches(d) {
            return Ok(d);
        }
        if let Some(p) = d.platform() {
            let mut s = format!("{}/{}", os_name(p.os()), arch_name(p.architecture()));
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            offered.push(s);
        }
    }
    Err(Error::invalid(
        what,
        format!(
            "no manifest for platform {platform} (the index offers: {}); choose one with --platform",
            if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;

    #[test]
    fn platform_selection_by_os_arch_variant() {
        let index = parse_index(INDEX.as_bytes(), "test index").unwrap();
        let pick = |p: &str| {
            select_platform(&index, &PlatformSpec::parse(p).unwrap(), "idx")
                .map(|d| d.digest().digest()[..1].to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "3");
        assert_eq!(pick("linux/arm64").unwrap(), "2");
        assert_eq!(pick("linux/arm/v7").unwrap(), "1");
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(err.contains("linux/arm/v7") && err.contains("idx"), "{err}");
        assert_eq!(kind(index.manifests()[0].media_type()), Kind::Manifest);
    }

    #[test]
    fn schema1_and_bad_json_are_refused_clearly() {
        let err = parse_manifest(br#"{"schemaVersion":1,"name":"x"}"#, "blob X").unwrap_err();
        assert!(err.to_string().contains("schema1"), "{err}");
        let err = parse_manifest(b"{oops", "blob Y in a.tar").unwrap_err();
        assert!(
            err.to_string().contains("blob Y in a.tar") && err.to_string().contains("invalid JSON")
        );
    }

    #[test]
    fn docker_media_types_are_classified() {
        assert_eq!(
            kind(&MediaType::from(DOCKER_LAYER_GZIP)),
            Kind::Layer(Compression::Gzip)
        );
        assert_eq!(kind(&MediaType::from(DOCKER_CONFIG)), Kind::Config);
        assert_eq!(
            kind(&MediaType::ImageLayerZstd),
            Kind::Layer(Compression::Zstd)
        );
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
    }
}
