//! Pull: resolve a reference to a manifest (choosing the platform from an
//! index), fetch the config and the layers concurrently, each verified
//! while it streams into the content store, and unpack every layer into its
//! snapshot as soon as it and the layers below it have arrived — extraction
//! overlaps the download of later layers. The image record is written
//! last: a failed or interrupted pull leaves no image, no blob under a
//! digest it does not match, and no uncommitted snapshot visible.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use berth_content::{Expected, Store};
use berth_engine::{BlobProvider, Engine};
use berth_image::media::{self, Kind, PlatformSpec};
use berth_image::Reference;
use futures::StreamExt;
use oci_spec::image::{Descriptor, DescriptorBuilder, Digest, MediaType};

use crate::client::{transient, Manifest, Options, Registry};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, State};
use crate::registries::RegistriesConf;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to choose from an index.
    pub platform: PlatformSpec,
    /// Blobs downloaded at once.
    pub max_concurrent: usize,
    /// Times a dropped download is resumed (with backoff) before failing.
    pub retries: u32,
    /// Unpack the layers into snapshots (as `berth run` needs).
    pub unpack: bool,
    /// Also fetch the referrers of the pulled index and manifest
    /// (signatures, SBOMs) and theirs into the store.
    pub referrers: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: PlatformSpec::host(),
            max_concurrent: 3,
            retries: 5,
            unpack: true,
            referrers: false,
        }
    }
}

/// What a pull made.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The record's name.
    pub name: Reference,
    /// The digest of what the name resolved to (the index, if it was one).
    pub digest: Digest,
    /// The chosen manifest's digest.
    pub manifest: Digest,
    /// The image ID (config digest).
    pub id: Digest,
    /// Referrers fetched with it (with [`PullOptions::referrers`]).
    pub referrers: usize,
}

/// Pulls the image `input` names as a user typed it: a short name is
/// resolved by registries.conf's aliases and search registries, and each
/// name is tried at its mirrors, then at its registry. The image is
/// recorded under the resolved name.
pub async fn pull_name(
    engine: &Engine,
    input: &str,
    client: &Options,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let conf = RegistriesConf::load(client.registries_conf.as_deref())?;
    let mut failures: Vec<(String, Error)> = Vec::new();
    for reference in conf.resolve(input)? {
        for source in conf.pull_sources(&reference) {
            let attempt = async {
                let registry = Registry::connect(&source.host, client).await?;
                pull_from(
                    engine,
                    &registry,
                    &source.repo,
                    &reference,
                    options,
                    progress,
                )
                .await
            };
            match attempt.await {
                Ok(pulled) => return Ok(pulled),
                Err(e) => {
                    tracing::debug!(
                        "pulling {reference} from {}/{}: {e}",
                        source.host,
                        source.repo
                    );
                    failures.push((format!("{}/{}", source.host, source.repo), e));
                }
            }
        }
    }
    if failures.len() == 1 {
        return Err(failures.remove(0).1);
    }
    let tried: Vec<String> = failures
        .iter()
        .map(|(at, e)| format!("{at}: {}", berth_core::error_chain(e)))
        .collect();
    Err(Error::invalid(
        format!("image {input:?}"),
        format!("no source had it; tried {}", tried.join("; ")),
    ))
}

/// Pulls `reference` from `registry` into `engine`'s store (and snapshots).
pub async fn pull(
    engine: &Engine,
    registry: &Registry,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    pull_from(
        engine,
        registry,
        reference.path(),
        reference,
        options,
        progress,
    )
    .await
}

/// Pulls repository `repo` of `registry` (a mirror's, or `reference`'s
/// own) at `reference`'s tag or digest, recorded as `reference`.
pub async fn pull_from(
    engine: &Engine,
    registry: &Registry,
    repo: &str,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let images = engine.images();
    let _lease = images.content().lease()?;
    let tag_or_digest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => berth_image::reference::DEFAULT_TAG.to_string(),
    };
    let top = registry
        .manifest(repo, &tag_or_digest, reference.digest())
        .await?;
    let mut documents = vec![top.clone()];
    let mut current = top.clone();
    for _ in 0..4 {
        match media::kind(&MediaType::from(current.media_type.as_str())) {
            Kind::Manifest => break,
            Kind::Index => {
                let what = format!("index {} of {reference}", current.digest);
                let index = media::parse_index(&current.data, &what)?;
                let desc = media::select_platform(&index, &options.platform, &what)?;
                let next = registry
                    .manifest(repo, desc.digest().as_ref(), Some(desc.digest()))
                    .await?;
                documents.push(next.clone());
                current = next;
            }
            _ => {
                return Err(Error::invalid(
                    format!("{reference}"),
                    format!(
                        "resolves to {} of type {}, which is not an image manifest or index",
                        current.digest, current.media_type
                    ),
                ))
            }
        }
    }
    let what = format!("manifest {} of {reference}", current.digest);
    let manifest = media::parse_manifest(&current.data, &what)?;
    if media::kind(&MediaType::from(current.media_type.as_str())) != Kind::Manifest {
        return Err(Error::invalid(what, "indexes nested too deeply"));
    }
    for layer in manifest.layers() {
        if !matches!(media::kind(layer.media_type()), Kind::Layer(_)) {
            return Err(Error::invalid(
                &what,
                format!(
                    "layer {} has media type {}, which is not a filesystem layer berth can unpack",
                    layer.digest(),
                    layer.media_type()
                ),
            ));
        }
    }

    let config_desc = manifest.config().clone();
    // Refused before a byte is fetched: a config is read whole into memory.
    if config_desc.size() > media::MAX_JSON {
        return Err(Error::invalid(
            &what,
            format!(
                "its config {} claims {} bytes, more than the {} a config may have",
                config_desc.digest(),
                config_desc.size(),
                media::MAX_JSON
            ),
        ));
    }
    let store = images.content().clone();
    let arrivals = Arc::new(Arrivals::new(store.clone()));
    let fetch = Fetch {
        registry,
        store: &store,
        repo,
        reference,
        retries: options.retries,
        progress,
        arrivals: &arrivals,
    };
    // The config first among equals: the unpacker needs its diff_ids.
    let config_and_unpack = async {
        fetch.blob(&config_desc, "config").await?;
        let data = store.read_blob(config_desc.digest(), media::MAX_JSON)?;
        let config = media::parse_config(
            &data,
            &format!("config {} of {reference}", config_desc.digest()),
        )?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if !options.unpack {
            return Ok::<_, Error>(None);
        }
        let provider: Arc<dyn BlobProvider + Send + Sync> = arrivals.clone();
        Ok(Some((
            unpack_task(engine, provider, manifest.layers(), &diff_ids)?,
            diff_ids,
        )))
    };
    let layers = manifest.layers().clone();
    let downloads = async {
        let results: Vec<Result<()>> = futures::stream::iter(layers.iter().enumerate())
            .map(|(i, layer)| {
                let fetch = &fetch;
                let arrivals = &arrivals;
                async move {
                    let r = fetch.blob(layer, &format!("layer {i}")).await;
                    arrivals.arrived(layer.digest(), r.as_ref().err().map(|e| e.to_string()));
                    r
                }
            })
            .buffered(options.max_concurrent.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()
    };
    for layer in manifest.layers() {
        if store.exists(layer.digest()) {
            progress.event(Event::Blob {
                digest: layer.digest().clone(),
                size: layer.size(),
                state: State::Exists,
            });
        } else {
            progress.event(Event::Blob {
                digest: layer.digest().clone(),
                size: layer.size(),
                state: State::Waiting,
            });
        }
    }
    let (unpacker, downloaded) = futures::join!(config_and_unpack, downloads);
    if let Err(e) = &downloaded {
        arrivals.fail_all(&e.to_string());
    }
    let unpacked = match unpacker {
        Ok(Some((task, diff_ids))) => Some((task.await, diff_ids)),
        Ok(None) => None,
        Err(e) => {
            arrivals.fail_all(&e.to_string());
            return Err(e);
        }
    };
    downloaded?;
    if let Some((result, diff_ids)) = unpacked {
        let result = result.map_err(|e| Error::invalid("unpacking", e.to_string()))?;
        if result.is_err() && arrivals.restarted() {
            // A download started over under the unpacker (the server
            // ignored Range): every blob is in the store now, read it there.
            let provider: Arc<dyn BlobProvider + Send + Sync> = Arc::new(store.clone());
            unpack_task(engine, provider, manifest.layers(), &diff_ids)?
                .await
                .map_err(|e| Error::invalid("unpacking", e.to_string()))??;
        } else {
            result?;
        }
    }
    // Every blob is in; the documents last, then the record.
    for doc in documents.iter().rev() {
        put_document(&store, doc, reference)?;
    }
    let name = match (reference.tag(), reference.digest()) {
        (Some(_), Some(_)) => {
            Reference::parse(&format!("{}@{}", reference.repository(), top.digest))?
        }
        _ => reference.clone(),
    };
    // The referrers asked for, fetched before the record is written.
    let referrers = match options.referrers {
        true => {
            let subjects: Vec<Digest> = documents.iter().map(|d| d.digest.clone()).collect();
            crate::referrer_copy::pull_referrers(&fetch, &subjects).await?
        }
        false => Vec::new(),
    };
    images.put(&[(name.clone(), descriptor_of(&top))])?;
    for (subject, referrer) in &referrers {
        images.put_referrer(subject, referrer)?;
    }
    Ok(Pulled {
        name,
        digest: top.digest.clone(),
        manifest: current.digest.clone(),
        id: config_desc.digest().clone(),
        referrers: referrers.len(),
    })
}

/// Unpacks `layers` from `blobs` on the blocking pool.
fn unpack_task(
    engine: &Engine,
    blobs: Arc<dyn BlobProvider + Send + Sync>,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<tokio::task::JoinHandle<berth_engine::Result<Option<String>>>> {
    let snapshotter = engine.snapshotter()?;
    let (layers, diff_ids) = (layers.to_vec(), diff_ids.to_vec());
    Ok(tokio::task::spawn_blocking(move || {
        berth_engine::unpack(
            &snapshotter,
            &*blobs,
            &layers,
            &diff_ids,
            &berth_archive::ApplyOptions::default(),
        )
    }))
}

/// The descriptor of a fetched manifest or index.
pub(crate) fn descriptor_of(doc: &Manifest) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(doc.media_type.as_str()))
        .digest(doc.digest.clone())
        .size(doc.data.len() as u64)
        .build()
        .expect("a descriptor with media type, digest and size always builds")
}

pub(crate) fn put_document(store: &Store, doc: &Manifest, reference: &Reference) -> Result<()> {
    let expected = Expected {
        digest: Some(doc.digest.clone()),
        size: Some(doc.data.len() as u64),
        what: format!("manifest {} of {reference}", doc.digest),
    };
    store.ingest(expected, &doc.data[..])?;
    Ok(())
}

/// Downloads of one pull.
pub(crate) struct Fetch<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) store: &'a Store,
    pub(crate) repo: &'a str,
    pub(crate) reference: &'a Reference,
    retries: u32,
    progress: &'a dyn Progress,
    arrivals: &'a Arrivals,
}

impl Fetch<'_> {
    /// Makes sure the blob `desc` is in the store: downloads it (resuming
    /// a dropped connection by Range, with backoff) verified while it
    /// streams; `role` names it in errors ("layer 2").
    pub(crate) async fn blob(&self, desc: &Descriptor, role: &str) -> Result<()> {
        let digest = desc.digest();
        if self.store.exists(digest) {
            return Ok(());
        }
        let what = format!("{role} {digest} of {}", self.reference);
        let mut writer = match self
            .store
            .writer(Expected::from_descriptor(desc, what.clone()))
        {
            Ok(w) => w,
            Err(berth_content::Error::AlreadyExists(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let event = |state| {
            self.progress.event(Event::Blob {
                digest: digest.clone(),
                size: desc.size(),
                state,
            })
        };
        event(State::Transferring);
        self.arrivals.streaming(digest, &writer)?;
        let mut failures = 0;
        loop {
            let offset = writer.offset();
            if offset > 0 {
                event(State::Resumed(offset));
            }
            match self.stream(digest, &mut writer, offset).await {
                Ok(()) => break,
                Err(e) if transient(&e) && failures < self.retries => {
                    failures += 1;
                    tracing::debug!("{what}: {e}; resuming (attempt {failures})");
                    tokio::time::sleep(Duration::from_millis(100 << failures.min(6))).await;
                }
                Err(e) => {
                    // A wrong size (more than the descriptor says) is the
                    // writer's own error, naming the blob.
                    let err = writer.overflow_error().map(Error::from).unwrap_or(e);
                    if writer.overflow_error().is_some() {
                        writer.abort();
                    }
                    return Err(err);
                }
            }
        }
        writer.commit()?;
        event(State::Done);
        Ok(())
    }

    /// Streams the blob from `offset` into `writer`.
    async fn stream(
        &self,
        digest: &Digest,
        writer: &mut berth_content::Writer,
        offset: u64,
    ) -> Result<()> {
        let (mut resp, partial) = self.registry.blob(self.repo, digest, offset).await?;
        if offset > 0 && !partial {
            writer.restart()?;
            self.arrivals.streaming(digest, writer)?;
        }
        let url = resp.url().to_string();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::network(&url, &e))? {
            writer.write_all(&chunk).map_err(|e| {
                writer
                    .overflow_error()
                    .map(Error::from)
                    .unwrap_or_else(|| Error::io(self.store.dir(), e))
            })?;
            self.arrivals.grown(digest, writer.offset());
            self.progress.event(Event::Bytes {
                digest: digest.clone(),
                done: writer.offset(),
            });
        }
        Ok(())
    }
}

/// The blobs of one pull as they arrive: the unpacker reads each layer in
/// turn while it downloads (from the ingest file, as far as it has been
/// written), or from the store once it is in.
struct Arrivals {
    store: Store,
    state: Mutex<HashMap<Digest, Slot>>,
    changed: Condvar,
    failed: Mutex<Option<String>>,
    /// A download started over from byte 0 under its readers.
    restarted: std::sync::atomic::AtomicBool,
}

/// Where one blob of the pull stands.
enum Slot {
    /// Downloading into `data`, which holds `written` bytes; `generation`
    /// counts restarts from byte 0 (a reader of an earlier one must stop).
    Streaming {
        data: std::fs::File,
        written: u64,
        generation: u32,
    },
    /// In the store, or failed, after `generation` restarts.
    Done {
        result: std::result::Result<(), String>,
        generation: u32,
    },
}

impl Arrivals {
    fn new(store: Store) -> Arrivals {
        Arrivals {
            store,
            state: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            failed: Mutex::new(None),
            restarted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `writer` starts (or starts over) downloading `digest`.
    fn streaming(&self, digest: &Digest, writer: &berth_content::Writer) -> Result<()> {
        let data = writer.data_reader()?;
        let mut s = self.state.lock().expect("arrivals");
        let generation = match s.get(digest) {
            Some(Slot::Streaming { generation, .. }) => {
                self.restarted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                generation + 1
            }
            _ => 0,
        };
        let written = writer.offset();
        s.insert(
            digest.clone(),
            Slot::Streaming {
                data,
                written,
                generation,
            },
        );
        self.changed.notify_all();
        Ok(())
    }

    /// `digest`'s download holds `written` bytes now.
    fn grown(&self, digest: &Digest, written: u64) {
        let mut s = self.state.lock().expect("arrivals");
        if let Some(Slot::Streaming { written: w, .. }) = s.get_mut(digest) {
            *w = written;
            self.changed.notify_all();
        }
    }

    fn arrived(&self, digest: &Digest, error: Option<String>) {
        let mut s = self.state.lock().expect("arrivals");
        let generation = match s.get(digest) {
            Some(Slot::Streaming { generation, .. }) => *generation,
            _ => 0,
        };
        let result = error.map_or(Ok(()), Err);
        s.insert(digest.clone(), Slot::Done { result, generation });
        self.changed.notify_all();
    }

    fn fail_all(&self, why: &str) {
        *self.failed.lock().expect("arrivals") = Some(why.to_string());
        let _s = self.state.lock().expect("arrivals");
        self.changed.notify_all();
    }

    /// Whether a download started over from byte 0 during the pull.
    fn restarted(&self) -> bool {
        self.restarted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn failure(&self) -> Option<std::io::Error> {
        let why = self.failed.lock().expect("arrivals").clone()?;
        Some(std::io::Error::other(format!("the pull failed: {why}")))
    }
}

impl BlobProvider for Arrivals {
    fn open_blob(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let mut s = self.state.lock().expect("arrivals");
        loop {
            match s.get(desc.digest()) {
                Some(Slot::Done { result, .. }) => {
                    result.clone().map_err(std::io::Error::other)?;
                    break;
                }
                Some(Slot::Streaming {
                    data, generation, ..
                }) => {
                    let growing = Growing {
                        arrivals: self,
                        digest: desc.digest().clone(),
                        size: desc.size(),
                        data: data.try_clone()?,
                        generation: *generation,
                        read: 0,
                    };
                    return Ok(Box::new(std::io::BufReader::with_capacity(
                        256 << 10,
                        growing,
                    )));
                }
                None if self.store.exists(desc.digest()) => break,
                None => {}
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            s = self.changed.wait(s).expect("arrivals");
        }
        drop(s);
        self.store.open_blob(desc)
    }
}

/// A blob read while it downloads: each read waits until the download has
/// written past what was read, and ends at the descriptor's size (without
/// waiting for the download's commit and fsync) or where the finished blob
/// ends. The bytes are unverified until the download commits; the unpacker
/// checks what it applies against the layer's diff_id either way.
struct Growing<'a> {
    arrivals: &'a Arrivals,
    digest: Digest,
    size: u64,
    data: std::fs::File,
    generation: u32,
    read: u64,
}

impl Read for Growing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.size {
            return Ok(0);
        }
        let mut s = self.arrivals.state.lock().expect("arrivals");
        let available = loop {
            match s.get(&self.digest) {
                Some(Slot::Streaming {
                    written,
                    generation,
                    ..
                }) if *generation == self.generation => {
                    if *written > self.read {
                        break *written - self.read;
                    }
                }
                Some(Slot::Done {
                    result: Ok(()),
                    generation,
                }) if *generation == self.generation => break u64::MAX,
                Some(Slot::Done { result: Err(e), .. }) => {
                    return Err(std::io::Error::other(e.clone()))
                }
                _ => {
                    return Err(std::io::Error::other(format!(
                        "the download of {} started over",
                        self.digest
                    )))
                }
            }
            if let Some(e) = self.arrivals.failure() {
                return Err(e);
            }
            s = self.arrivals.changed.wait(s).expect("arrivals");
        };
        drop(s);
        let available = available.min(self.size - self.read);
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.data.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}
