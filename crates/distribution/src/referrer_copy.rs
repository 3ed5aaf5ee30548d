//! Referrers travelling with an image (`berth pull --referrers`, `berth
//! push --referrers`): the artifacts whose `subject` is a pulled or pushed
//! manifest or index, and the referrers of those in turn.
//!
//! - [`pull_referrers`] lists them (the referrers API, else the fallback
//!   tag), fetches each one's manifest (or index and its manifests) and
//!   blobs, verified, into the content store, and checks that its
//!   `subject` really is the image's; the pull records them as local
//!   referrers ([`Images::put_referrer`]) with the image.
//! - [`push_referrers`] sends the local referrers after their subject:
//!   blobs, then the manifest by digest; a registry that does not answer
//!   `OCI-Subject` gets the referrer added to the fallback tag's index
//!   (once: pushing again adds no second entry).

use std::collections::{HashSet, VecDeque};

use berth_image::media::{self, Kind};
use berth_image::Images;
use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::error::{Error, Result};
use crate::pull::{descriptor_of, put_document, Fetch};
use crate::push::{collect, Document, Upload};
use crate::referrers;

/// The most referrers copied with one image (every subject, every level).
const MAX_REFERRERS: usize = 256;
/// How deep referrers of referrers are followed (a signature of an image's
/// SBOM is at depth 2).
const MAX_DEPTH: usize = 3;

/// Fetches the referrers of `subjects` (and theirs) from the repository
/// `fetch` reads into the store. Returns each with its subject, to be
/// recorded.
pub(crate) async fn pull_referrers(
    fetch: &Fetch<'_>,
    subjects: &[Digest],
) -> Result<Vec<(Digest, Descriptor)>> {
    let mut queue: VecDeque<(Digest, usize)> = subjects.iter().map(|d| (d.clone(), 1)).collect();
    let mut seen: HashSet<Digest> = subjects.iter().cloned().collect();
    let mut found: Vec<(Digest, Descriptor)> = Vec::new();
    while let Some((subject, depth)) = queue.pop_front() {
        let listed = referrers::list(fetch.registry, fetch.repo, &subject, None).await?;
        for desc in listed.manifests {
            if !seen.insert(desc.digest().clone()) {
                continue;
            }
            if found.len() >= MAX_REFERRERS {
                return Err(Error::invalid(
                    format!("the referrers of {}", fetch.reference),
                    format!(
                        "more than {MAX_REFERRERS}, which is as many as berth copies; pull without --referrers"
                    ),
                ));
            }
            let stored = fetch_referrer(fetch, &subject, &desc).await?;
            found.push((subject.clone(), stored));
            if depth < MAX_DEPTH {
                queue.push_back((desc.digest().clone(), depth + 1));
            }
        }
    }
    Ok(found)
}

/// Fetches the referrer `listed` of `subject` (its manifest, or index and
/// manifests, and their blobs) into the store; returns its descriptor.
async fn fetch_referrer(
    fetch: &Fetch<'_>,
    subject: &Digest,
    listed: &Descriptor,
) -> Result<Descriptor> {
    let what = format!("referrer {} of {subject}", listed.digest());
    berth_core::digest::check_supported(listed.digest())
        .map_err(|e| Error::invalid(&what, e.to_string()))?;
    let doc = fetch
        .registry
        .manifest(fetch.repo, listed.digest().as_ref(), Some(listed.digest()))
        .await?;
    let mut documents = Vec::new();
    let (claimed, artifact_type) = match media::kind(&MediaType::from(doc.media_type.as_str())) {
        Kind::Manifest => {
            let m = media::parse_manifest(&doc.data, &what)?;
            fetch_blobs(fetch, &m, &what).await?;
            let artifact_type = m
                .artifact_type()
                .clone()
                .unwrap_or_else(|| m.config().media_type().clone());
            (m.subject().clone(), Some(artifact_type))
        }
        Kind::Index => {
            let index = media::parse_index(&doc.data, &what)?;
            if index.manifests().len() > MAX_REFERRERS {
                return Err(Error::invalid(
                    what,
                    format!("an index of more than {MAX_REFERRERS} manifests; refused"),
                ));
            }
            for child in index.manifests() {
                let child_what = format!("manifest {} of {what}", child.digest());
                if media::kind(child.media_type()) != Kind::Manifest {
                    return Err(Error::invalid(
                        child_what,
                        format!("media type {} is not an image manifest", child.media_type()),
                    ));
                }
                let c = fetch
                    .registry
                    .manifest(fetch.repo, child.digest().as_ref(), Some(child.digest()))
                    .await?;
                fetch_blobs(
                    fetch,
                    &media::parse_manifest(&c.data, &child_what)?,
                    &child_what,
                )
                .await?;
                documents.push(c);
            }
            (index.subject().clone(), index.artifact_type().clone())
        }
        _ => {
            return Err(Error::invalid(
                what,
                format!("media type {} is not a manifest or index", doc.media_type),
            ))
        }
    };
    if claimed.as_ref().map(|s| s.digest()) != Some(subject) {
        let claimed = claimed.map_or("none".to_string(), |s| s.digest().to_string());
        return Err(Error::invalid(
            what,
            format!("the registry lists it, but its subject is {claimed}; refused"),
        ));
    }
    documents.push(doc.clone());
    for d in &documents {
        put_document(fetch.store, d, fetch.reference)?;
    }
    let mut desc = descriptor_of(&doc);
    desc.set_artifact_type(listed.artifact_type().clone().or(artifact_type));
    desc.set_annotations(listed.annotations().clone());
    Ok(desc)
}

/// Fetches the config and layers of the referrer manifest `m`.
async fn fetch_blobs(
    fetch: &Fetch<'_>,
    m: &oci_spec::image::ImageManifest,
    what: &str,
) -> Result<()> {
    fetch.blob(m.config(), &format!("config of {what}")).await?;
    for (i, layer) in m.layers().iter().enumerate() {
        fetch.blob(layer, &format!("blob {i} of {what}")).await?;
    }
    Ok(())
}

/// Pushes the local referrers of `subjects` (and theirs) with `up`, each
/// after its subject. Returns how many were pushed.
pub(crate) async fn push_referrers(
    images: &Images,
    up: &Upload<'_>,
    subjects: &[Digest],
) -> Result<usize> {
    let mut queue: VecDeque<(Digest, usize)> = subjects.iter().map(|d| (d.clone(), 1)).collect();
    let mut seen: HashSet<Digest> = subjects.iter().cloned().collect();
    let mut pushed = 0;
    while let Some((subject, depth)) = queue.pop_front() {
        for desc in images.referrers(&subject)? {
            if !seen.insert(desc.digest().clone()) {
                continue;
            }
            push_one(images, up, &subject, &desc).await?;
            pushed += 1;
            if depth < MAX_DEPTH {
                queue.push_back((desc.digest().clone(), depth + 1));
            }
        }
    }
    Ok(pushed)
}

/// Pushes one referrer: its blobs, its manifests, and the fallback index
/// entry when the registry does not index subjects itself.
async fn push_one(
    images: &Images,
    up: &Upload<'_>,
    subject: &Digest,
    desc: &Descriptor,
) -> Result<()> {
    let mut documents: Vec<Document> = Vec::new();
    let mut blobs = Vec::new();
    collect(images, desc, &mut documents, &mut blobs, 0)?;
    for b in &blobs {
        up.blob(b, &images.content().blob_path(b.digest())?).await?;
    }
    let mut headers = None;
    for d in &documents {
        headers = Some(
            up.registry
                .put_manifest(
                    up.repo,
                    d.desc.digest().as_ref(),
                    d.desc.media_type().as_ref(),
                    &d.data,
                )
                .await?,
        );
    }
    let indexed = headers.is_some_and(|h| h.contains_key("oci-subject"));
    if !indexed {
        referrers::add_to_fallback(up.registry, up.repo, subject, desc).await?;
    }
    Ok(())
}
