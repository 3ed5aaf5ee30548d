//! `berth load`: OCI image layouts (directories), OCI archives (a tar of a
//! layout) and `docker save` archives into the image store.
//!
//! Every blob goes through a content [`Writer`](berth_content::Writer), so
//! its digest and size are verified while it streams; layer diff_ids are
//! computed in the same pass and checked against the config. Image records
//! are written last, in one atomic index.json update, and only when every
//! image of the input is complete: an error or a kill leaves at most
//! unreferenced, verified blobs (removed by `berth gc`) and abandoned
//! ingests (never visible as blobs).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use berth_content::layout::{CONTAINERD_IMAGE_NAME, REF_NAME};
use berth_content::{Expected, Info};
use berth_core::digest::parse as parse_digest;
use oci_spec::image::{Descriptor, Digest};

use crate::error::{Error, Result};
use crate::media::{self, kind, Compression, Kind, MAX_JSON};
use crate::records::{descriptor, Images};
use berth_core::name::valid_tag;

use crate::reference::Reference;
use crate::sniff::{Sniffed, Sniffer};

/// The most JSON (index.json, manifest.json, configs) an archive may hold.
const MAX_JSON_TOTAL: u64 = 64 << 20;

/// Options for [`load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The repository for entries named only by a tag (skopeo's and
    /// umoci's `dir:tag`), or the full name for an entry with no name.
    pub name: Option<String>,
    /// Only the index.json entry whose `ref.name` is this (skopeo's
    /// `oci:DIR:REF`).
    pub reference: Option<String>,
}

/// Where blobs come from.
enum Source {
    /// An OCI layout directory: blobs are ingested from its files on demand.
    Dir(PathBuf),
    /// A tar already streamed into the store: blobs must be present.
    Streamed,
}

struct Loader<'a> {
    images: &'a Images,
    input: PathBuf,
    source: Source,
    sniffed: HashMap<Digest, Sniffed>,
}

impl Loader<'_> {
    fn blob_what(&self, digest: &Digest, role: &str) -> String {
        format!("{role} {digest} in {}", self.input.display())
    }

    /// Ingests a blob through the sniffer, remembering what it learned.
    fn ingest(&mut self, expected: Expected, reader: impl Read) -> Result<Info> {
        let store = self.images.content();
        if let Some(d) = &expected.digest {
            if store.exists(d) {
                return Ok(store.info(d)?);
            }
        }
        let what = expected.what.clone();
        let writer = match store.writer(expected) {
            Ok(w) => w,
            Err(berth_content::Error::AlreadyExists(d)) => return Ok(store.info(&d)?),
            Err(e) => return Err(e.into()),
        };
        let mut writer = writer;
        if writer.offset() > 0 {
            writer.restart()?;
        }
        let mut sniffer = Sniffer::new(writer);
        let mut reader = reader;
        let copied = std::io::copy(&mut reader, &mut sniffer);
        let (writer, sniffed) = sniffer.finish();
        if let Err(e) = copied {
            let err = match writer.overflow_error() {
                Some(overflow) => overflow.into(),
                None => Error::invalid(what, e.to_string()),
            };
            writer.abort();
            return Err(err);
        }
        let info = writer.commit()?;
        self.sniffed.insert(info.digest.clone(), sniffed);
        Ok(info)
    }

    /// Makes sure the blob `desc` is in the store (ingesting it from the
    /// directory when loading one).
    fn fetch(&mut self, desc: &Descriptor, role: &str) -> Result<()> {
        let what = self.blob_what(desc.digest(), role);
        match &self.source {
            Source::Dir(dir) => {
                let path = berth_content::layout::blob_path(dir, desc.digest())?;
                let store = self.images.content();
                if store.exists(desc.digest()) {
                    return check_size(desc, &store.info(desc.digest())?, &what);
                }
                let file = File::open(&path).map_err(|e| {
                    Error::invalid(&what, format!("cannot open {}: {e}", path.display()))
                })?;
                let expected =
                    Expected::from_descriptor(desc, format!("{what} ({})", path.display()));
                self.ingest(expected, file)?;
                Ok(())
            }
            Source::Streamed => {
                let info =
                    self.images.content().info(desc.digest()).map_err(|_| {
                        Error::invalid(&what, "the blob is missing from the archive")
                    })?;
                check_size(desc, &info, &what)
            }
        }
    }

    fn present(&self, desc: &Descriptor) -> bool {
        match &self.source {
            Source::Dir(dir) => berth_content::layout::blob_path(dir, desc.digest())
                .map(|p| p.exists())
                .unwrap_or(false),
            Source::Streamed => self.images.content().exists(desc.digest()),
        }
    }

    /// Checks and ingests the tree under an index.json entry.
    fn tree(&mut self, desc: &Descriptor, depth: usize) -> Result<()> {
        if depth > 4 {
            return Err(Error::invalid(
                self.blob_what(desc.digest(), "index"),
                "indexes nested too deeply",
            ));
        }
        match kind(desc.media_type()) {
            Kind::Index => {
                self.fetch(desc, "index")?;
                let what = self.blob_what(desc.digest(), "index");
                let data = self.images.content().read_blob(desc.digest(), MAX_JSON)?;
                let index = media::parse_index(&data, &what)?;
                let mut loaded = 0;
                for child in index.manifests() {
                    if matches!(kind(child.media_type()), Kind::Manifest | Kind::Index)
                        && self.present(child)
                    {
                        self.tree(child, depth + 1)?;
                        loaded += 1;
                    }
                }
                if loaded == 0 {
                    return Err(Error::invalid(
                        what,
                        "none of the index's manifests is in the input",
                    ));
                }
                Ok(())
            }
            Kind::Manifest => {
                self.fetch(desc, "manifest")?;
                let what = self.blob_what(desc.digest(), "manifest");
                let data = self.images.content().read_blob(desc.digest(), MAX_JSON)?;
                let manifest = media::parse_manifest(&data, &what)?;
                self.fetch(manifest.config(), "config")?;
                if kind(manifest.config().media_type()) != Kind::Config {
                    // An artifact (signature, SBOM, ...): its blobs are
                    // verified and kept, but they are not image layers.
                    for (i, blob) in manifest.layers().iter().enumerate() {
                        self.fetch(blob, &format!("artifact blob {}", i + 1))?;
                    }
                    return Ok(());
                }
                let config_what = self.blob_what(manifest.config().digest(), "config");
                let data = self
                    .images
                    .content()
                    .read_blob(manifest.config().digest(), MAX_JSON)?;
                let config = media::parse_config(&data, &config_what)?;
                let diff_ids = config.rootfs().diff_ids();
                let layers: Vec<&Descriptor> = manifest.layers().iter().collect();
                if diff_ids.len() != layers.len() {
                    return Err(Error::invalid(
                        config_what,
                        format!(
                            "rootfs.diff_ids lists {} layers but manifest {} has {}",
                            diff_ids.len(),
                            desc.digest(),
                            layers.len()
                        ),
                    ));
                }
                for (i, layer) in layers.into_iter().enumerate() {
                    let role = format!("layer {} of {}", i + 1, manifest.layers().len());
                    self.fetch(layer, &role)?;
                    self.check_layer(layer, &diff_ids[i], &role)?;
                }
                Ok(())
            }
            _ => Err(Error::invalid(
                self.blob_what(desc.digest(), "entry"),
                format!(
                    "index.json points at media type {} (expected a manifest or index)",
                    desc.media_type()
                ),
            )),
        }
    }

    /// Checks a layer's compression and diff_id against what was seen
    /// while it streamed (blobs already in the store were checked then).
    fn check_layer(&self, layer: &Descriptor, diff_id: &str, role: &str) -> Result<()> {
        let what = self.blob_what(layer.digest(), role);
        let Kind::Layer(declared) = kind(layer.media_type()) else {
            return Ok(());
        };
        let Some(sniffed) = self.sniffed.get(layer.digest()) else {
            return Ok(());
        };
        if declared != sniffed.compression {
            return Err(Error::invalid(
                what,
                format!(
                    "declared as {} but its content is {:?}-compressed",
                    layer.media_type(),
                    sniffed.compression
                ),
            ));
        }
        let actual = match &sniffed.diff_id {
            Ok(Some(d)) => d.clone(),
            Ok(None) => layer.digest().clone(),
            Err(e) => {
                return Err(Error::invalid(
                    what,
                    format!("cannot decompress ({:?}): {e}", sniffed.compression),
                ))
            }
        };
        if actual.to_string() != diff_id {
            return Err(Error::invalid(
                what,
                format!("diff_id mismatch: the config says {diff_id} but the uncompressed layer is {actual}"),
            ));
        }
        Ok(())
    }
}

/// Fails if a stored blob's size differs from its descriptor's.
fn check_size(desc: &Descriptor, info: &Info, what: &str) -> Result<()> {
    if info.size != desc.size() {
        return Err(Error::invalid(
            what,
            format!(
                "descriptor says {} bytes but the blob has {}",
                desc.size(),
                info.size
            ),
        ));
    }
    Ok(())
}

/// The name(s) an index.json entry is recorded under.
fn entry_names(
    desc: &Descriptor,
    position: usize,
    opts: &LoadOptions,
    input: &Path,
) -> Result<Vec<Reference>> {
    let annotations = desc.annotations().clone().unwrap_or_default();
    let what = format!("{}: index.json entry {position}", input.display());
    if let Some(full) = annotations.get(CONTAINERD_IMAGE_NAME) {
        return Ok(vec![Reference::parse(full)?]);
    }
    match (annotations.get(REF_NAME), &opts.name) {
        (Some(tag), Some(repo)) if valid_tag(tag) => {
            let base = Reference::parse(repo)?;
            Ok(vec![base.with_tag(tag)?])
        }
        (Some(tag), None) if valid_tag(tag) => Err(Error::invalid(
            what,
            format!("the image is named only by the tag {tag:?}; pass --name REPOSITORY (e.g. --name busybox) to load it as REPOSITORY:{tag}"),
        )),
        (Some(full), _) => Ok(vec![Reference::parse(full)?]),
        (None, Some(name)) => Ok(vec![Reference::parse(name)?]),
        // Loaded unnamed, listed by digest as podman lists `<none>`.
        (None, None) => Ok(vec![Reference::unnamed(desc.digest().clone())]),
    }
}

/// Loads an OCI layout directory, an OCI archive or a `docker save`
/// archive (optionally gzip- or zstd-compressed; `-` reads the archive
/// from stdin). Returns the names recorded.
pub fn load(images: &Images, input: &Path, opts: &LoadOptions) -> Result<Vec<Reference>> {
    let _lease = images.content().lease()?;
    if input.is_dir() {
        let index = berth_content::layout::read_index(input)?;
        let mut loader = Loader {
            images,
            input: input.to_path_buf(),
            source: Source::Dir(input.to_path_buf()),
            sniffed: HashMap::new(),
        };
        return load_index(&mut loader, &index, opts);
    }
    let raw: Box<dyn Read> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(input).map_err(|e| Error::io(input, e))?)
    };
    let mut reader = BufReader::with_capacity(1 << 16, raw);
    let head = reader.fill_buf().map_err(|e| Error::io(input, e))?.to_vec();
    let reader: Box<dyn Read> = match Compression::detect(&head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| Error::io(input, e))?,
        ),
        Compression::None => Box::new(reader),
    };
    let mut loader = Loader {
        images,
        input: input.to_path_buf(),
        source: Source::Streamed,
        sniffed: HashMap::new(),
    };
    let streamed = stream_tar(&mut loader, reader)?;
    let has = |name: &str| streamed.json.contains_key(name);
    if has("oci-layout") && has("index.json") {
        let what = format!("{}: index.json", input.display());
        let index = media::parse_index(&streamed.json["index.json"], &what)?;
        load_index(&mut loader, &index, opts)
    } else if has("manifest.json") {
        load_docker(&mut loader, &streamed, opts)
    } else {
        Err(Error::invalid(
            input.display().to_string(),
            "neither an OCI archive (no oci-layout and index.json) nor a docker save archive (no manifest.json)",
        ))
    }
}

fn load_index(
    loader: &mut Loader<'_>,
    index: &oci_spec::image::ImageIndex,
    opts: &LoadOptions,
) -> Result<Vec<Reference>> {
    let mut records = Vec::new();
    let ref_name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    if let Some(wanted) = &opts.reference {
        if !index
            .manifests()
            .iter()
            .any(|d| ref_name(d).as_ref() == Some(wanted))
        {
            let present: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
            return Err(Error::invalid(
                format!("{}: index.json", loader.input.display()),
                format!(
                    "no image named {wanted:?} (ref.name); it has {}",
                    if present.is_empty() {
                        "no named images".to_string()
                    } else {
                        present.join(", ")
                    }
                ),
            ));
        }
    }
    for (position, desc) in index.manifests().iter().enumerate() {
        if opts.reference.is_some() && ref_name(desc) != opts.reference {
            continue;
        }
        let names = entry_names(desc, position, opts, &loader.input)?;
        loader.tree(desc, 0)?;
        let mut target = desc.clone();
        target.set_annotations(None);
        for name in names {
            records.push((name, target.clone()));
        }
    }
    if records.is_empty() {
        return Err(Error::invalid(
            format!("{}: index.json", loader.input.display()),
            "the layout holds no images",
        ));
    }
    loader.images.put(&records)?;
    Ok(records.into_iter().map(|(n, _)| n).collect())
}

/// What streaming a tar left: small JSON files in memory, and the legacy
/// docker layer files ingested under their computed digests.
struct Streamed {
    json: HashMap<String, Vec<u8>>,
    files: HashMap<String, Info>,
    links: HashMap<String, String>,
}

fn entry_name(raw: &Path, input: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => {
                return Err(Error::invalid(
                    input.display().to_string(),
                    format!(
                        "archive entry {:?} escapes the archive (absolute or ..)",
                        raw
                    ),
                ))
            }
        }
    }
    Ok(parts.join("/"))
}

fn stream_tar(loader: &mut Loader<'_>, reader: Box<dyn Read>) -> Result<Streamed> {
    let input = loader.input.clone();
    let mut archive = tar::Archive::new(reader);
    let mut out = Streamed {
        json: HashMap::new(),
        files: HashMap::new(),
        links: HashMap::new(),
    };
    let mut json_total = 0u64;
    let tar_err = |e: std::io::Error| {
        Error::invalid(
            input.display().to_string(),
            format!("not a readable tar archive: {e}"),
        )
    };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let name = entry_name(&raw, &input)?;
        let size = entry.header().size().map_err(tar_err)?;
        let etype = entry.header().entry_type();
        if etype.is_symlink() || etype.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = if etype.is_symlink() {
                    // Relative to the entry's directory.
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    normalize(&base.join(target))
                } else {
                    entry_name(&target, &input)?
                };
                out.links.insert(name, target);
            }
            continue;
        }
        if !etype.is_file() {
            continue;
        }
        let at = format!("{}:{name}", input.display());
        if let Some(rest) = name.strip_prefix("blobs/") {
            let digest = parse_digest(&rest.replacen('/', ":", 1)).map_err(|e| {
                Error::invalid(at.clone(), format!("blob file name is not a digest: {e}"))
            })?;
            let expected = Expected {
                digest: Some(digest.clone()),
                size: Some(size),
                what: format!("blob {digest} ({at})"),
            };
            loader.ingest(expected, &mut entry)?;
        } else if (name.ends_with(".json") && !name.contains('/')) || name == "oci-layout" {
            // Top-level documents only (index.json, manifest.json, docker's
            // <id>.json configs), with a cap on their total size.
            json_total += size;
            if size > MAX_JSON || json_total > MAX_JSON_TOTAL {
                return Err(Error::invalid(
                    at,
                    format!("{size} bytes is too large for a JSON document (at most {MAX_JSON} each, {MAX_JSON_TOTAL} in all)"),
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(tar_err)?;
            out.json.insert(name, data);
        } else if name.ends_with(".tar") || name.ends_with(".tar.gz") {
            let info = loader.ingest(Expected::unknown(format!("layer {at}")), &mut entry)?;
            out.files.insert(name, info);
        }
    }
    Ok(out)
}

fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(
    loader: &mut Loader<'_>,
    streamed: &Streamed,
    opts: &LoadOptions,
) -> Result<Vec<Reference>> {
    let input = loader.input.display().to_string();
    let manifest_what = format!("{input}:manifest.json");
    let entries: Vec<DockerEntry> = serde_json::from_slice(&streamed.json["manifest.json"])
        .map_err(|e| {
            Error::invalid(&manifest_what, format!("invalid docker save manifest: {e}"))
        })?;
    let store = loader.images.content().clone();
    let resolve = |path: &str| -> String {
        let mut p = path.to_string();
        for _ in 0..8 {
            match streamed.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    };
    let mut records = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        // The config: a <hex>.json file or a blobs/ entry.
        let config_path = resolve(&entry.config);
        let config_at = format!("{input}:{config_path}");
        let config_bytes = if let Some(data) = streamed.json.get(&config_path) {
            let computed = berth_core::digest::sha256_of(data);
            let stem = config_path
                .trim_end_matches(".json")
                .rsplit('/')
                .next()
                .unwrap_or("");
            if stem.len() == 64
                && stem.bytes().all(|b| b.is_ascii_hexdigit())
                && stem != computed.digest()
            {
                return Err(Error::invalid(
                    format!("config {config_at}"),
                    format!("digest mismatch: the file is named sha256:{stem} but its content is {computed}"),
                ));
            }
            data.clone()
        } else if let Some(rest) = config_path.strip_prefix("blobs/") {
            let digest = parse_digest(&rest.replacen('/', ":", 1))?;
            store.read_blob(&digest, MAX_JSON)?
        } else {
            return Err(Error::invalid(
                &manifest_what,
                format!("entry {i}: config {:?} is not in the archive", entry.config),
            ));
        };
        let config = media::parse_config(&config_bytes, &format!("config {config_at}"))?;
        let config_info = store.put_bytes(&config_bytes, &format!("config {config_at}"))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != entry.layers.len() {
            return Err(Error::invalid(
                format!("config {config_at}"),
                format!(
                    "rootfs.diff_ids lists {} layers but manifest.json entry {i} has {}",
                    diff_ids.len(),
                    entry.layers.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (n, layer_path) in entry.layers.iter().enumerate() {
            let path = resolve(layer_path);
            let role = format!("layer {} of {}", n + 1, entry.layers.len());
            let info = if let Some(info) = streamed.files.get(&path) {
                info.clone()
            } else if let Some(rest) = path.strip_prefix("blobs/") {
                let digest = parse_digest(&rest.replacen('/', ":", 1))?;
                store.info(&digest).map_err(|_| {
                    Error::invalid(
                        format!("{role} {input}:{path}"),
                        "the layer is missing from the archive",
                    )
                })?
            } else {
                return Err(Error::invalid(
                    format!("{role} {input}:{layer_path}"),
                    "the layer is missing from the archive",
                ));
            };
            let compression = loader
                .sniffed
                .get(&info.digest)
                .map(|s| s.compression)
                .unwrap_or(Compression::None);
            let desc = descriptor(media::oci_layer_type(compression), &info);
            loader.check_layer(&desc, &diff_ids[n], &format!("{role} ({path})"))?;
            layers.push(desc);
        }
        let target = loader.images.put_manifest(&config_info, layers)?;
        let names: Vec<Reference> = match (&entry.repo_tags, &opts.name) {
            (Some(tags), _) if !tags.is_empty() => tags
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<_>>()?,
            (_, Some(name)) => vec![Reference::parse(name)?],
            _ => {
                return Err(Error::invalid(
                    &manifest_what,
                    format!("entry {i} has no RepoTags; pass --name NAME"),
                ))
            }
        };
        for name in names {
            records.push((name, target.clone()));
        }
    }
    loader.images.put(&records)?;
    Ok(records.into_iter().map(|(n, _)| n).collect())
}
