//! `berth import ROOTFS.tar NAME`: a one-layer image from a root
//! filesystem tarball, like `docker import`. The tarball is gzipped into
//! the content store while both the uncompressed (diff_id) and compressed
//! (blob) digests are computed, in one pass and without extraction.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use berth_content::Expected;
use berth_core::digest::Hasher;
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, MediaType, Os, RootFsBuilder,
};

use crate::error::{Error, Result};
use crate::media::{Compression, PlatformSpec};
use crate::records::{descriptor, Images};
use crate::reference::Reference;

/// What `berth import` puts in the new image's config.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Config.Cmd (docker import leaves it empty unless `--change CMD`).
    pub cmd: Vec<String>,
    /// Config.Entrypoint.
    pub entrypoint: Vec<String>,
    /// Config.Env (`KEY=value`).
    pub env: Vec<String>,
    /// Config.WorkingDir.
    pub working_dir: Option<String>,
    /// Config.User.
    pub user: Option<String>,
    /// Config.Volumes: paths in the container.
    pub volumes: Vec<String>,
}

/// Checks the 512-byte header at the start of a tar stream.
fn check_tar_header(block: &[u8], input: &Path) -> Result<()> {
    if block.len() < 512 {
        return Err(Error::invalid(
            input.display().to_string(),
            format!("only {} bytes: not a tar archive", block.len()),
        ));
    }
    let block = &block[..512];
    if block.iter().all(|&b| b == 0) {
        return Ok(()); // an empty archive
    }
    let header = tar::Header::from_byte_slice(block);
    let stored = header.cksum().map_err(|e| {
        Error::invalid(
            input.display().to_string(),
            format!("not a tar archive: {e}"),
        )
    })?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    if stored != computed {
        return Err(Error::invalid(
            input.display().to_string(),
            "not a tar archive (the first header's checksum is wrong); pass a tarball of a root filesystem",
        ));
    }
    Ok(())
}

/// Reads up to `len` bytes (fewer only at the end of the stream).
fn read_full(reader: &mut dyn Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// One complete gzip member.
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// Reads the whole tar stream, checks its first header, hashes it (the
/// diff_id) and writes it gzip-compressed to `out`: one gzip member per
/// 4 MiB chunk, the chunks of a batch compressed on all cores at once while
/// this thread hashes them. Gzip readers (flate2's MultiGzDecoder, Go's
/// gzip.Reader used by containerd, skopeo and umoci) read such
/// multi-member streams as one.
fn compress_layer(
    reader: &mut dyn Read,
    out: &mut impl Write,
    diff: &mut Hasher,
    input: &Path,
) -> Result<()> {
    const CHUNK: usize = 4 << 20;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let mut first = true;
    loop {
        let mut batch = Vec::with_capacity(threads);
        let mut at_end = false;
        while batch.len() < threads {
            let chunk = read_full(reader, CHUNK).map_err(|e| Error::io(input, e))?;
            if first {
                check_tar_header(&chunk, input)?;
                first = false;
            }
            at_end = chunk.len() < CHUNK;
            if !chunk.is_empty() {
                batch.push(chunk);
            }
            if at_end {
                break;
            }
        }
        let compressed: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = batch
                .iter()
                .map(|chunk| scope.spawn(move || gzip(chunk)))
                .collect();
            for chunk in &batch {
                diff.update(chunk);
            }
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a gzip worker panicked")))
                })
                .collect()
        });
        for member in compressed {
            let member = member.map_err(|e| Error::io(input, e))?;
            out.write_all(&member).map_err(|e| Error::io(input, e))?;
        }
        if at_end {
            return Ok(());
        }
    }
}

fn spec_err(e: impl std::fmt::Display) -> Error {
    Error::invalid("import", e.to_string())
}

/// Imports the tarball `input` (plain, gzip or zstd; `-` reads stdin) as
/// the image `name`. Returns the recorded name and the image's manifest
/// descriptor.
pub fn import(
    images: &Images,
    input: &Path,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Reference, oci_spec::image::Descriptor)> {
    let reference = Reference::parse(name)?;
    let store = images.content();
    let _lease = store.lease()?;
    let raw: Box<dyn Read> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(input).map_err(|e| Error::io(input, e))?)
    };
    let mut buffered = BufReader::with_capacity(1 << 16, raw);
    let head = buffered
        .fill_buf()
        .map_err(|e| Error::io(input, e))?
        .to_vec();
    let mut reader: Box<dyn Read> = match Compression::detect(&head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| Error::io(input, e))?,
        ),
        Compression::None => Box::new(buffered),
    };

    let mut writer = store.writer(Expected::unknown(format!("layer from {}", input.display())))?;
    let mut diff = Hasher::sha256();
    if let Err(e) = compress_layer(&mut reader, &mut writer, &mut diff, input) {
        writer.abort();
        return Err(e);
    }
    let layer = writer.commit()?;
    let diff_id = diff.digest();

    let host = PlatformSpec::host();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut config = ConfigBuilder::default();
    if !opts.cmd.is_empty() {
        config = config.cmd(opts.cmd.clone());
    }
    if !opts.entrypoint.is_empty() {
        config = config.entrypoint(opts.entrypoint.clone());
    }
    if !opts.env.is_empty() {
        config = config.env(opts.env.clone());
    }
    if let Some(w) = &opts.working_dir {
        config = config.working_dir(w.clone());
    }
    if let Some(u) = &opts.user {
        config = config.user(u.clone());
    }
    if !opts.volumes.is_empty() {
        config = config.volumes(opts.volumes.clone());
    }
    let image_config = ImageConfigurationBuilder::default()
        .created(now.clone())
        .architecture(Arch::from(host.architecture.as_str()))
        .os(Os::from(host.os.as_str()))
        .config(config.build().map_err(spec_err)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(spec_err)?,
        )
        .history(vec![HistoryBuilder::default()
            .created(now)
            .created_by(format!("berth import {}", input.display()))
            .build()
            .map_err(spec_err)?])
        .build()
        .map_err(spec_err)?;
    let mut image_config = image_config;
    if let Some(v) = &host.variant {
        image_config.set_variant(Some(v.clone()));
    }
    let config_bytes = serde_json::to_vec(&image_config).map_err(spec_err)?;
    let config_info = store.put_bytes(&config_bytes, "imported image config")?;
    let target = images.put_manifest(
        &config_info,
        vec![descriptor(MediaType::ImageLayerGzip, &layer)],
    )?;
    images.put(&[(reference.clone(), target.clone())])?;
    Ok((reference, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_members_decompress_to_the_input() {
        // A tar stream spanning several batches of chunks.
        let mut builder = tar::Builder::new(Vec::new());
        let data: Vec<u8> = (0..(19u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "big", &data[..]).unwrap();
        let stream = builder.into_inner().unwrap();

        let mut out = Vec::new();
        let mut diff = Hasher::sha256();
        compress_layer(&mut &stream[..], &mut out, &mut diff, Path::new("test.tar")).unwrap();
        assert_eq!(diff.digest(), berth_core::digest::sha256_of(&stream));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == stream, "the members concatenate to the input");

        let err = compress_layer(
            &mut &b"not a tarball"[..],
            &mut Vec::new(),
            &mut Hasher::sha256(),
            Path::new("x.tar"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("x.tar"), "{err}");
    }
}
