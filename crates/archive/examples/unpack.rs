//! Applies one layer blob to a directory: the tool bench/unpack.sh times.
//!
//! usage: unpack BLOB TARGET_DIR [--threads N] [--pool-above-ns NS] [--diff-id sha256:...]
//! The compression is detected from the blob's first bytes. Prints the
//! diff_id, the tar stream's size and how many writer threads the pool
//! started (`--threads 0`: none, the parsing thread writes every file;
//! `--pool-above-ns 0`: the pool takes every small file).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_archive::{apply_layer, ApplyOptions, Compression};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut opts = ApplyOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                opts.threads = args
                    .next()
                    .context("--threads needs a number")?
                    .parse()
                    .context("--threads needs a number")?
            }
            "--pool-above-ns" => {
                opts.pool_above_create_ns = args
                    .next()
                    .context("--pool-above-ns needs a number")?
                    .parse()
                    .context("--pool-above-ns needs a number")?
            }
            "--diff-id" => {
                opts.expected_diff_id = Some(args.next().context("--diff-id needs a digest")?)
            }
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [blob, target] = pos.as_slice() else {
        bail!("usage: unpack BLOB TARGET_DIR [--threads N] [--pool-above-ns NS] [--diff-id sha256:...]");
    };
    let mut f =
        BufReader::new(File::open(blob).with_context(|| format!("open {}", blob.display()))?);
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("read {}", blob.display()))?;
    let compression = Compression::detect(&magic[..n]);
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    let reader = (&magic[..n]).chain(f);
    let applied = apply_layer(reader, compression, target, &opts)
        .with_context(|| format!("apply {} to {}", blob.display(), target.display()))?;
    println!(
        "{} {} writers={}",
        applied.diff_id, applied.size, applied.writers
    );
    Ok(())
}
