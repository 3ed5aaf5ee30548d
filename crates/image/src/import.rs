//! `berth import ROOTFS.tar NAME`: a one-layer image from a root
//! filesystem tarball, like `docker import`. The tarball is gzipped into
//! the content store while both the uncompressed (diff_id) and compressed
//! (blob) digests are computed, in one pass and without extraction.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use berth_content::{Expected, Hasher};
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

    let writer = store.writer(Expected::unknown(format!("layer from {}", input.display())))?;
    let mut gz = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
    let mut diff = Hasher::sha256();
    let mut buf = vec![0u8; 1 << 17];
    let mut first = true;
    let copy = (|| -> Result<()> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| Error::io(input, e))?;
            if first {
                // Fill the first header block before checking it.
                let mut filled = n;
                while filled < 512 && n > 0 {
                    let m = reader
                        .read(&mut buf[filled..])
                        .map_err(|e| Error::io(input, e))?;
                    if m == 0 {
                        break;
                    }
                    filled += m;
                }
                check_tar_header(&buf[..filled], input)?;
                first = false;
                diff.update(&buf[..filled]);
                gz.write_all(&buf[..filled])
                    .map_err(|e| Error::io(input, e))?;
                if n == 0 {
                    break;
                }
                continue;
            }
            if n == 0 {
                break;
            }
            diff.update(&buf[..n]);
            gz.write_all(&buf[..n]).map_err(|e| Error::io(input, e))?;
        }
        Ok(())
    })();
    let writer = match gz.finish() {
        Ok(w) => w,
        Err(e) => return Err(Error::io(input, e)),
    };
    if let Err(e) = copy {
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
