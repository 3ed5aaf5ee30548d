//! Targets for berth-image: layer compression sniffing, manifest / index /
//! config JSON, `berth load` and `berth import` archives, references.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_engine::{spec_from_config, Overrides};
use berth_image::fuzzing::Sniffer;
use berth_image::import::{import, ImportOptions};
use berth_image::load::{load, LoadOptions};
use berth_image::media::{self, Compression, PlatformSpec};
use berth_image::{Images, Reference};
use sha2::{Digest as _, Sha256};

use crate::scratch;

/// The hex sha256 of what `reader` yields, or `None` if it fails or yields
/// more than `limit` bytes.
fn sha256_of(mut reader: impl Read, limit: u64) -> Option<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            return Some(hex(&hasher.finalize()));
        }
        total += n as u64;
        if total > limit {
            return None;
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A blob streamed through the loader's sniffer (gzip/zstd detection and
/// diff_id hashing on a second thread), written in three uneven chunks.
/// When the sniffer reports a diff_id, the decoders `apply_layer` uses
/// (flate2's bufread `MultiGzDecoder`, zstd's read `Decoder`) must inflate
/// the blob to the same bytes: otherwise `berth load` would accept a layer
/// whose recorded diff_id the unpacker cannot reproduce.
pub fn layer_sniff(data: &[u8]) {
    let mut sniffer = Sniffer::new(std::io::sink());
    let cut1 = data.len() / 3;
    let cut2 = cut1 + data.len() / 2;
    for chunk in [&data[..cut1], &data[cut1..cut2], &data[cut2..]] {
        sniffer
            .write_all(chunk)
            .expect("writing to a sink never fails");
    }
    let (_, sniffed) = sniffer.finish();
    assert_eq!(sniffed.compression, Compression::detect(data));
    let Ok(Some(diff_id)) = sniffed.diff_id else {
        if sniffed.compression == Compression::None {
            assert!(
                matches!(sniffed.diff_id, Ok(None)),
                "a plain blob gets a diff_id or an error: {:?}",
                sniffed.diff_id
            );
        }
        return;
    };
    const LIMIT: u64 = 256 << 20;
    let reference = match sniffed.compression {
        Compression::Gzip => sha256_of(flate2::bufread::MultiGzDecoder::new(data), LIMIT),
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(data) {
            Ok(d) => sha256_of(d, LIMIT),
            Err(_) => None,
        },
        Compression::None => unreachable!("plain blobs have no separate diff_id"),
    };
    assert_eq!(
        reference.as_deref(),
        Some(diff_id.digest()),
        "the sniffer's diff_id differs from what the layer unpacker inflates"
    );
}

/// A root filesystem with /etc/passwd and /etc/group, for
/// `spec_from_config`'s user lookup.
fn rootfs() -> PathBuf {
    scratch::shared_dir("berth-fuzz-rootfs", |dir| {
        scratch::write(
            &dir.join("etc/passwd"),
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        );
        scratch::write(
            &dir.join("etc/group"),
            b"root:x:0:\nusers:x:100:user\nuser:x:1000:\n",
        );
    })
}

/// One JSON document parsed as an OCI/Docker manifest, index and image
/// config (schema1 detection, oci-spec deserialisation), then used as
/// berth uses them: media type classification, platform selection, and
/// the image config → runtime spec conversion (Env, Entrypoint/Cmd,
/// WorkingDir, User against a fixed /etc/passwd, Volumes, Labels,
/// StopSignal).
pub fn image_json(data: &[u8]) {
    if let Ok(index) = media::parse_index(data, "fuzzed index") {
        for d in index.manifests() {
            let _ = media::kind(d.media_type());
        }
        for p in [
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "windows/amd64/v8",
        ] {
            let platform = PlatformSpec::parse(p).expect("a valid platform");
            let _ = media::select_platform(&index, &platform, "fuzzed index");
        }
        let _ = media::select_platform(&index, &PlatformSpec::host(), "fuzzed index");
    }
    if let Ok(manifest) = media::parse_manifest(data, "fuzzed manifest") {
        let _ = media::kind(manifest.config().media_type());
        for layer in manifest.layers() {
            if let media::Kind::Layer(c) = media::kind(layer.media_type()) {
                let _ = media::oci_layer_type(c);
            }
            let _ = Compression::from_media_type(layer.media_type().as_ref());
        }
    }
    if let Ok(config) = media::parse_config(data, "fuzzed config") {
        let _ = media::os_name(config.os());
        let _ = media::arch_name(config.architecture());
        let _ = spec_from_config(&config, &Overrides::default(), &rootfs());
        let _ = berth_engine::volumes::image_volumes(&config);
    }
}

/// Writes `data` as the input file and opens an empty image store beside it.
fn store_and_input(dir: &Path, data: &[u8]) -> (Images, PathBuf) {
    let input = dir.join("input");
    scratch::write(&input, data);
    let images = Images::open(&dir.join("root")).expect("open an empty image store");
    (images, input)
}

/// Checks that the store holds no corrupt or stray blob.
fn assert_store_clean(images: &Images) {
    let report = images.content().fsck().expect("fsck the image store");
    assert!(
        report.is_clean(),
        "the store is not clean after a load: {report:?}"
    );
}

/// `berth load` of an archive (OCI archive or `docker save`, plain, gzip
/// or zstd): tar streaming, blob names, index.json / manifest.json,
/// manifests, configs, diff_id checks, symlinked legacy layers, names.
/// Asserts that every name it reports is recorded and that the store stays
/// clean (every blob verified).
pub fn image_load(data: &[u8]) {
    let dir = scratch::dir();
    let (images, input) = store_and_input(dir.path(), data);
    let opts = LoadOptions {
        name: Some("fuzz/loaded".into()),
        ..Default::default()
    };
    if let Ok(names) = load(&images, &input, &opts) {
        for name in names {
            images
                .get(&name.to_string())
                .unwrap_or_else(|e| panic!("load reported {name} but it is not recorded: {e}"));
        }
    }
    assert_store_clean(&images);
}

/// `berth import` of a root filesystem tarball (plain, gzip or zstd; the
/// first tar header is checked). Asserts that an imported image resolves
/// for the host platform.
pub fn image_import(data: &[u8]) {
    let dir = scratch::dir();
    let (images, input) = store_and_input(dir.path(), data);
    if import(&images, &input, "fuzz/imported", &ImportOptions::default()).is_ok() {
        images
            .image("fuzz/imported", &PlatformSpec::host())
            .unwrap_or_else(|e| panic!("an imported image does not resolve: {e}"));
    }
    assert_store_clean(&images);
}

/// An image reference (`name[:tag][@digest]` with docker's
/// normalisation). Asserts that a parsed reference prints as a string that
/// parses back to it, that its familiar form names the same repository,
/// and that its path, tag and digest are ones berth's registry accepts
/// (so `berth push` of a valid name never fails on the name).
pub fn image_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PlatformSpec::parse(text);
    let Ok(r) = Reference::parse(text) else {
        return;
    };
    let printed = r.to_string();
    let again = Reference::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} parses as {printed:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{text:?} → {printed:?} parses differently");
    // Like docker's FamiliarName, `docker.io/us.r/app` shortens to
    // `us.r/app`, which names the registry us.r (or nothing, when us.r is
    // not a valid host; `docker.io/docker.io/x` gives `docker.io/x`): a
    // docker.io familiar name must name the same repository only when its
    // first component cannot be a host.
    let familiar = r.familiar_repository();
    let first = familiar.split('/').next().unwrap_or_default();
    let looks_like_host = first.contains(['.', ':']) || first == "localhost";
    let ambiguous = r.domain() == "docker.io" && familiar.contains('/') && looks_like_host;
    if !ambiguous {
        let short = Reference::parse(&familiar).unwrap_or_else(|e| {
            panic!("familiar name {familiar:?} of {text:?} does not parse: {e}")
        });
        assert_eq!(
            short.repository(),
            r.repository(),
            "familiar name {familiar:?}"
        );
    }
    berth_registry::digest::validate_name(r.path()).unwrap_or_else(|e| {
        panic!(
            "{text:?}: path {:?} is refused by the registry: {e}",
            r.path()
        )
    });
    if let Some(tag) = r.tag() {
        assert!(
            berth_registry::digest::is_tag(tag),
            "{text:?}: tag {tag:?} is refused by the registry"
        );
        assert_eq!(
            r.with_tag(tag).ok().as_ref().map(|t| t.tag()),
            Some(Some(tag))
        );
    }
    if let Some(d) = r.digest() {
        berth_registry::digest::parse(d.as_ref())
            .unwrap_or_else(|e| panic!("{text:?}: digest {d} is refused by the registry: {e}"));
    }
}
