//! Referrers kept in the local store: artifacts (signatures, SBOMs,
//! attestations) whose manifest's `subject` is a manifest or index of the
//! store, as `berth pull --referrers` fetches them and `berth push
//! --referrers` sends them on.
//!
//! Each is an entry of the store's `index.json` without a name, carrying
//! the annotation [`SUBJECT`] (the subject's digest) beside its
//! `artifactType` and the manifest's annotations — an OCI layout keeps
//! untagged manifests that way (oras's layouts do too). Such entries are
//! not image records: [`Images::list`] skips them. Garbage collection
//! keeps a referrer while its subject is kept, and drops it with it.

use std::collections::HashMap;

use berth_content::layout;
use oci_spec::image::{Descriptor, Digest};

use crate::error::{Error, Result};
use crate::records::Images;

/// The `index.json` annotation naming the subject of a referrer entry.
pub const SUBJECT: &str = "io.berth.referrer.subject";

/// The subject a referrer entry of `index.json` names (`None`: not a
/// referrer entry).
pub(crate) fn subject_of(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()?
        .get(SUBJECT)
        .map(String::as_str)
}

/// `entry` as a referrer descriptor: the [`SUBJECT`] annotation dropped.
fn without_subject(entry: &Descriptor) -> Descriptor {
    let mut desc = entry.clone();
    let annotations = desc.annotations().clone().map(|mut a| {
        a.remove(SUBJECT);
        a
    });
    desc.set_annotations(annotations.filter(|a| !a.is_empty()));
    desc
}

impl Images {
    /// The referrers of `subject` in the local store, in the order they
    /// were stored: descriptors with `artifactType` and the manifest's
    /// annotations, as the referrers API lists them.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let index = layout::read_index(self.content().dir())?;
        let subject = subject.to_string();
        Ok(index
            .manifests()
            .iter()
            .filter(|d| subject_of(d) == Some(subject.as_str()))
            .map(without_subject)
            .collect())
    }

    /// Records `referrer` (a manifest or index already in the content
    /// store) as a referrer of `subject`; storing it again changes nothing.
    pub fn put_referrer(&self, subject: &Digest, referrer: &Descriptor) -> Result<()> {
        if !self.content().exists(referrer.digest()) {
            return Err(Error::invalid(
                format!("referrer {} of {subject}", referrer.digest()),
                "its manifest is not in the content store",
            ));
        }
        let _lock = self.records_lock()?;
        let dir = self.content().dir();
        let mut index = layout::read_index(dir)?;
        let text = subject.to_string();
        let mut manifests = index.manifests().clone();
        if manifests
            .iter()
            .any(|d| d.digest() == referrer.digest() && subject_of(d) == Some(text.as_str()))
        {
            return Ok(());
        }
        let mut entry = referrer.clone();
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.retain(|k, _| k != layout::REF_NAME);
        annotations.insert(SUBJECT.to_string(), text);
        entry.set_annotations(Some(annotations));
        manifests.push(entry);
        index.set_manifests(manifests);
        Ok(layout::write_index(dir, &index)?)
    }

    /// For fsck: adds a problem for each referrer that does not reach
    /// complete, parseable content, naming it and its subject.
    pub(crate) fn check_referrers(&self, problems: &mut Vec<String>) -> Result<()> {
        let index = layout::read_index(self.content().dir())?;
        for entry in index.manifests() {
            let Some(subject) = subject_of(entry) else {
                continue;
            };
            let mut seen = HashMap::new();
            let mut found = Vec::new();
            self.reachable(&without_subject(entry), &mut seen, &mut found);
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("referrer {} of {subject}: {p}", entry.digest())),
            );
        }
        Ok(())
    }

    /// For garbage collection: marks (with all they reach) the referrers
    /// whose subject is in `marked`, and theirs in turn, and removes from
    /// `index.json` the referrer entries whose subject is not kept.
    pub(crate) fn mark_referrers(
        &self,
        marked: &mut HashMap<Digest, Descriptor>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let _lock = self.records_lock()?;
        let dir = self.content().dir();
        let mut index = layout::read_index(dir)?;
        let entries: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| subject_of(d).is_some())
            .cloned()
            .collect();
        // Referrers of referrers: repeat until nothing more is marked.
        loop {
            let before = marked.len();
            for entry in &entries {
                let kept = subject_of(entry)
                    .and_then(|s| berth_core::digest::parse(s).ok())
                    .is_some_and(|s| marked.contains_key(&s));
                if kept && !marked.contains_key(entry.digest()) {
                    self.reachable(&without_subject(entry), marked, problems);
                }
            }
            if marked.len() == before {
                break;
            }
        }
        let mut manifests = index.manifests().clone();
        let count = manifests.len();
        manifests.retain(|d| subject_of(d).is_none() || marked.contains_key(d.digest()));
        if manifests.len() != count {
            index.set_manifests(manifests);
            layout::write_index(dir, &index)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::descriptor;
    use crate::Reference;
    use oci_spec::image::MediaType;

    #[test]
    fn referrers_are_kept_apart_from_records_and_collected_with_their_subject() {
        let root = tempfile::tempdir().unwrap();
        let images = Images::open(root.path()).unwrap();
        let subject = images.content().put_bytes(b"{\"s\":1}", "test").unwrap();
        let subject_desc = descriptor(MediaType::ImageManifest, &subject);
        images
            .put(&[(
                Reference::parse("example.com/app:1").unwrap(),
                subject_desc.clone(),
            )])
            .unwrap();
        let sbom = images.content().put_bytes(b"{\"r\":1}", "test").unwrap();
        let mut sbom_desc = descriptor(MediaType::ImageManifest, &sbom);
        sbom_desc.set_artifact_type(Some(MediaType::from("application/spdx+json")));
        sbom_desc.set_annotations(Some(HashMap::from([("k".into(), "v".into())])));
        images.put_referrer(&subject.digest, &sbom_desc).unwrap();
        images.put_referrer(&subject.digest, &sbom_desc).unwrap();
        // A signature of the SBOM.
        let sig = images.content().put_bytes(b"{\"r\":2}", "test").unwrap();
        let sig_desc = descriptor(MediaType::ImageManifest, &sig);
        images.put_referrer(&sbom.digest, &sig_desc).unwrap();

        assert_eq!(images.referrers(&subject.digest).unwrap(), vec![sbom_desc]);
        assert_eq!(images.referrers(&sbom.digest).unwrap(), vec![sig_desc]);
        assert_eq!(images.list().unwrap().len(), 1, "referrers are not images");
        // fsck follows referrers: the test manifests are not parseable.
        let (_, problems) = crate::gc::fsck(&images).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("referrer {} of {}", sig.digest, sbom.digest))),
            "{problems:?}"
        );

        let report = crate::gc::gc(&images).unwrap();
        assert!(report.removed.is_empty(), "{:?}", report.removed);
        images.remove("example.com/app:1").unwrap();
        let report = crate::gc::gc(&images).unwrap();
        assert_eq!(report.removed.len(), 3, "{:?}", report.removed);
        assert!(images.referrers(&subject.digest).unwrap().is_empty());
        assert!(images.referrers(&sbom.digest).unwrap().is_empty());
        // A referrer whose manifest is not in the store is refused.
        let absent = descriptor(MediaType::ImageManifest, &sbom);
        assert!(images.put_referrer(&subject.digest, &absent).is_err());
    }
}
