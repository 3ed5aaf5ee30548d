//! `berth save`: images to an OCI archive (a tar of an OCI image layout)
//! that skopeo's `oci-archive:` transport, umoci (after untar) and
//! `berth load` read.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;

use berth_content::layout::{empty_index, CONTAINERD_IMAGE_NAME, LAYOUT_VERSION, REF_NAME};
use berth_core::fs::{write_atomically, Durability};
use oci_spec::image::{Descriptor, Digest};

use crate::error::{Error, Result};
use crate::records::Images;

fn append(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    size: u64,
    data: impl std::io::Read,
    out: &Path,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| Error::io(out, e))
}

fn append_dir(builder: &mut tar::Builder<impl Write>, path: &str, out: &Path) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Directory);
    builder
        .append_data(&mut header, path, std::io::empty())
        .map_err(|e| Error::io(out, e))
}

/// Every blob the images `names` reach, and their index.json entries
/// (`ref.name` = `ref_name` when given, for one image, else each tag).
fn collect(
    images: &Images,
    names: &[String],
    ref_name: Option<&str>,
) -> Result<(HashMap<Digest, Descriptor>, Vec<Descriptor>)> {
    if names.is_empty() {
        return Err(Error::invalid(
            "berth save",
            "name at least one image to save",
        ));
    }
    if let Some(r) = ref_name {
        if names.len() > 1 {
            return Err(Error::invalid(
                format!("reference {r:?}"),
                "one reference names one image: save the others separately",
            ));
        }
        if r.is_empty() || r.len() > 255 || r.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::invalid(
                format!("reference {r:?}"),
                "a ref.name is a tag or name without spaces, at most 255 characters",
            ));
        }
    }
    let mut blobs: HashMap<Digest, Descriptor> = HashMap::new();
    let mut entries = Vec::new();
    for name in names {
        let record = images.get(name)?;
        let mut problems = Vec::new();
        images.reachable(&record.target, &mut blobs, &mut problems);
        if let Some(p) = problems.first() {
            return Err(Error::invalid(
                format!("image {}", record.name),
                format!("{p}; run `berth fsck`"),
            ));
        }
        let mut desc = record.target.clone();
        let mut annotations = std::collections::HashMap::new();
        if !record.name.is_unnamed() {
            annotations.insert(CONTAINERD_IMAGE_NAME.to_string(), record.name.to_string());
        }
        if let Some(tag) = ref_name.or(record.name.tag()) {
            annotations.insert(REF_NAME.to_string(), tag.to_string());
        }
        desc.set_annotations(Some(annotations));
        entries.push(desc);
    }
    Ok((blobs, entries))
}

/// Writes the images `names` into the OCI layout directory `dir` (created
/// if needed; an existing layout keeps its other images, and entries with
/// the same tag are replaced). Each blob is copied in with a durable
/// atomic write; index.json is replaced atomically last. `ref_name`
/// (skopeo's `oci:DIR:REF`) names the one image instead of its tag.
pub fn save_layout(
    images: &Images,
    names: &[String],
    ref_name: Option<&str>,
    dir: &Path,
) -> Result<()> {
    let (blobs, entries) = collect(images, names, ref_name)?;
    berth_content::layout::init(dir)?;
    for digest in blobs.keys() {
        let path = berth_content::layout::blob_path(dir, digest)?;
        if path.exists() {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        write_atomically(&path, Durability::Durable, |file| {
            let mut reader = images
                .content()
                .reader(digest)
                .map_err(std::io::Error::other)?;
            std::io::copy(&mut reader, file).map(drop)
        })
        .map_err(|e| Error::io(&path, e))?;
    }
    let mut index = berth_content::layout::read_index(dir)?;
    let mut manifests = index.manifests().clone();
    for entry in entries {
        let tag = entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned();
        manifests.retain(|d| {
            tag.is_none() || d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != tag.as_ref()
        });
        manifests.push(entry);
    }
    index.set_manifests(manifests);
    Ok(berth_content::layout::write_index(dir, &index)?)
}

/// Writes the images `names` to the OCI archive `out` (atomically: a
/// temporary file beside it, renamed when complete). Each image gets an
/// index.json entry with `org.opencontainers.image.ref.name` = its tag and
/// `io.containerd.image.name` = its full name, as containerd and docker
/// write them (`ref_name` instead of the tag, for one image).
pub fn save(images: &Images, names: &[String], ref_name: Option<&str>, out: &Path) -> Result<()> {
    // save_to's own error (naming the image or blob) is kept aside; the
    // atomic write only needs to know that the archive is incomplete.
    let mut failed = None;
    let written = write_atomically(out, Durability::Durable, |file| {
        let writer = BufWriter::with_capacity(1 << 20, file);
        match save_to(images, names, ref_name, writer, out) {
            Ok(w) => w.into_inner().map(drop).map_err(|e| e.into_error()),
            Err(e) => {
                failed = Some(e);
                Err(std::io::Error::other("the archive is incomplete"))
            }
        }
    });
    match (failed, written) {
        (Some(e), _) => Err(e),
        (None, r) => r.map_err(|e| Error::io(out, e)),
    }
}

/// Streams the OCI archive of `names` into `writer` (e.g. stdout); `out`
/// names the destination in errors. Returns the writer.
pub fn save_to<W: Write>(
    images: &Images,
    names: &[String],
    ref_name: Option<&str>,
    writer: W,
    out: &Path,
) -> Result<W> {
    let (blobs, entries) = collect(images, names, ref_name)?;
    let mut index = empty_index();
    index.set_manifests(entries);
    let index_json =
        serde_json::to_vec(&index).map_err(|e| Error::invalid("index.json", e.to_string()))?;
    let layout_json = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION }).to_string();

    let mut builder = tar::Builder::new(writer);
    append(
        &mut builder,
        "oci-layout",
        layout_json.len() as u64,
        layout_json.as_bytes(),
        out,
    )?;
    append(
        &mut builder,
        "index.json",
        index_json.len() as u64,
        &index_json[..],
        out,
    )?;
    append_dir(&mut builder, "blobs/", out)?;
    let mut by_alg: BTreeMap<String, Vec<&Digest>> = BTreeMap::new();
    for digest in blobs.keys() {
        by_alg
            .entry(digest.algorithm().to_string())
            .or_default()
            .push(digest);
    }
    for (alg, mut digests) in by_alg {
        append_dir(&mut builder, &format!("blobs/{alg}/"), out)?;
        digests.sort_by_key(|d| d.to_string());
        for digest in digests {
            let info = images.content().info(digest)?;
            let reader = images.content().reader(digest)?;
            append(
                &mut builder,
                &format!("blobs/{alg}/{}", digest.digest()),
                info.size,
                reader,
                out,
            )?;
        }
    }
    builder.into_inner().map_err(|e| Error::io(out, e))
}
