//! Image commands: images, tag, rmi, inspect, load, save, import, fsck, gc.
//! Argument parsing and output only; the work is in berth-image.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_image::import::ImportOptions;
use berth_image::load::LoadOptions;
use berth_image::{Images, PlatformSpec};

use crate::Global;

/// The image subcommands (flattened into berth's top level).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List images.
    Images {
        /// Output format: `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Print only image IDs.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Give an image another name.
    Tag {
        /// Existing image (name or ID).
        source: String,
        /// New name.
        target: String,
    },
    /// Remove image names (content is freed by `berth gc`).
    Rmi {
        /// Images to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show images' manifest, config and metadata as JSON.
    Inspect {
        /// Images to inspect.
        #[arg(required = true)]
        names: Vec<String>,
        /// Platform to resolve an index to (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Load images from an OCI archive, an OCI layout directory or a `docker save` archive (`-` for stdin).
    Load {
        /// The archive or directory (or use -i); skopeo's `oci:DIR[:REF]`
        /// and `oci-archive:FILE[:REF]` load only the image REF names.
        path: Option<PathBuf>,
        /// The archive or directory.
        #[arg(long, short = 'i')]
        input: Option<PathBuf>,
        /// Repository for images named only by a tag in the layout, or the
        /// name for an unnamed image.
        #[arg(long)]
        name: Option<String>,
    },
    /// Save images to an OCI archive (file or stdout) or an OCI layout directory.
    Save {
        /// Images to save.
        #[arg(required = true)]
        names: Vec<String>,
        /// The archive to write (stdout when omitted or `-`), or the
        /// directory for `--format oci-dir`; skopeo's `oci:DIR[:REF]` and
        /// `oci-archive:FILE[:REF]` name the format and the image's ref.name.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `oci-archive` (a tar of an OCI layout) or `oci-dir` (an OCI layout
        /// directory, added to if it exists).
        #[arg(long, default_value = "oci-archive")]
        format: String,
    },
    /// Create a one-layer image from a root filesystem tarball (`-` for stdin).
    Import {
        /// The tarball (plain, gzip or zstd).
        tarball: PathBuf,
        /// The new image's name.
        name: String,
        /// Dockerfile-style config changes: CMD, ENTRYPOINT, ENV, WORKDIR, USER, VOLUME.
        #[arg(long, short)]
        change: Vec<String>,
    },
    /// Verify every blob and image record in the store.
    Fsck,
    /// Remove blobs and layer snapshots no image needs, and abandoned partial writes.
    Gc,
}

/// Runs one image subcommand.
pub fn run(command: Command, global: &Global) -> Result<i32> {
    let images = Images::open(&global.root)
        .with_context(|| format!("opening the image store in {}", global.root.display()))?;
    match command {
        Command::Images { format, quiet } => list(&images, &format, quiet),
        Command::Tag { source, target } => {
            let name = images.tag(&source, &target)?;
            println!("{name}");
            Ok(0)
        }
        Command::Rmi { names } => {
            let mut code = 0;
            for name in names {
                match images.remove(&name) {
                    Ok(r) => println!("Untagged: {}", r.name),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Command::Inspect { names, platform } => inspect(&images, &names, platform.as_deref()),
        Command::Load { path, input, name } => {
            let path = match (path, input) {
                (Some(p), None) | (None, Some(p)) => p,
                (Some(_), Some(_)) => {
                    bail!("give the input either as an argument or with -i, not both")
                }
                (None, None) => bail!("name the archive or directory to load (berth load FILE)"),
            };
            let (path, reference) = match transport(&path)? {
                Some((kind, p, reference)) => {
                    if (kind == "oci") != p.is_dir() {
                        let want = if kind == "oci" {
                            "an OCI layout directory"
                        } else {
                            "an OCI archive file"
                        };
                        bail!("{kind}:{}: not {want}", p.display());
                    }
                    (p, reference)
                }
                None => (path, None),
            };
            let opts = LoadOptions { name, reference };
            let names = berth_image::load::load(&images, &path, &opts)
                .with_context(|| format!("loading {}", path.display()))?;
            for n in names {
                println!("Loaded image: {n}");
            }
            Ok(0)
        }
        Command::Save {
            names,
            output,
            format,
        } => {
            let (format, output, ref_name) = match output.as_deref().map(transport).transpose()? {
                Some(Some(("oci", dir, r))) => ("oci-dir".to_string(), Some(dir), r),
                Some(Some((_, file, r))) => ("oci-archive".to_string(), Some(file), r),
                _ => (format, output, None),
            };
            let ref_name = ref_name.as_deref();
            match format.as_str() {
                "oci-archive" => {}
                "oci-dir" => {
                    let dir = output.context("--format oci-dir needs -o DIRECTORY")?;
                    berth_image::save::save_layout(&images, &names, ref_name, &dir)
                        .with_context(|| format!("saving to {}", dir.display()))?;
                    return Ok(0);
                }
                other => bail!("unknown --format {other:?} (use oci-archive or oci-dir)"),
            }
            match output.filter(|o| o != std::path::Path::new("-")) {
                Some(output) => berth_image::save::save(&images, &names, ref_name, &output)
                    .with_context(|| format!("saving to {}", output.display()))?,
                None => {
                    use std::io::{IsTerminal, Write};
                    let stdout = std::io::stdout();
                    if stdout.is_terminal() {
                        bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
                    }
                    let out = std::path::Path::new("<stdout>");
                    let mut lock =
                        berth_image::save::save_to(&images, &names, None, stdout.lock(), out)?;
                    lock.flush().context("writing the archive to stdout")?;
                }
            }
            Ok(0)
        }
        Command::Import {
            tarball,
            name,
            change,
        } => {
            let opts = parse_changes(&change)?;
            let (name, desc) = berth_image::import::import(&images, &tarball, &name, &opts)
                .with_context(|| format!("importing {}", tarball.display()))?;
            println!("{}", desc.digest());
            eprintln!("Imported image: {name}");
            Ok(0)
        }
        Command::Fsck => fsck(&images),
        Command::Gc => {
            let engine = berth_engine::Engine::open(images.root())?;
            let report = engine.gc()?;
            for name in &report.reaped {
                println!("reaped abandoned container: {name}");
            }
            for w in &report.warnings {
                eprintln!("berth: warning: {w}");
            }
            for d in &report.blobs.removed {
                println!("deleted: {d}");
            }
            for id in &report.networks {
                println!("detached the network of a removed container: {id}");
            }
            for id in &report.bundles {
                println!("unmounted the rootfs of a stopped container: {id}");
            }
            for s in &report.orphans {
                println!("deleted snapshot of a removed container: {s}");
            }
            for v in &report.volumes {
                println!("deleted anonymous volume of a removed container: {v}");
            }
            for s in &report.snapshots {
                println!("deleted snapshot: {s}");
            }
            println!(
                "removed {} blobs ({} bytes), {} abandoned ingests and {} snapshots",
                report.blobs.removed.len(),
                report.blobs.freed,
                report.blobs.ingests,
                report.snapshots.len() + report.orphans.len()
            );
            Ok(0)
        }
    }
}

fn shell_or_json(value: &str) -> Result<Vec<String>> {
    let value = value.trim();
    if value.starts_with('[') {
        serde_json::from_str(value).with_context(|| format!("invalid JSON array {value:?}"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), value.into()])
    }
}

/// Parses `--change` lines the way `docker import --change` does.
fn parse_changes(changes: &[String]) -> Result<ImportOptions> {
    let mut opts = ImportOptions::default();
    for change in changes {
        let (instruction, value) = change
            .trim()
            .split_once(char::is_whitespace)
            .with_context(|| format!("--change {change:?}: expected `INSTRUCTION value`"))?;
        match instruction.to_ascii_uppercase().as_str() {
            "CMD" => opts.cmd = shell_or_json(value)?,
            "ENTRYPOINT" => opts.entrypoint = shell_or_json(value)?,
            "ENV" => {
                let value = value.trim();
                let kv = match value.split_once('=') {
                    Some(_) => value.to_string(),
                    None => match value.split_once(char::is_whitespace) {
                        Some((k, v)) => format!("{k}={}", v.trim()),
                        None => bail!("--change {change:?}: ENV needs KEY=value"),
                    },
                };
                opts.env.push(kv);
            }
            "WORKDIR" => opts.working_dir = Some(value.trim().to_string()),
            "USER" => opts.user = Some(value.trim().to_string()),
            "VOLUME" => match value.trim() {
                v if v.starts_with('[') => opts.volumes.extend(
                    serde_json::from_str::<Vec<String>>(v)
                        .with_context(|| format!("--change {change:?}: invalid JSON array"))?,
                ),
                v => opts.volumes.extend(v.split_whitespace().map(String::from)),
            },
            other => bail!("--change {change:?}: unsupported instruction {other} (supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER, VOLUME)"),
        }
    }
    Ok(opts)
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}", value = value)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[unit]
    }
}

fn short_id(digest: &oci_spec::image::Digest) -> String {
    digest.digest().chars().take(12).collect()
}

fn list(images: &Images, format: &str, quiet: bool) -> Result<i32> {
    let host = PlatformSpec::host();
    let mut rows = Vec::new();
    for record in images.list()? {
        let resolved = images.resolve(&record, &host);
        rows.push((record, resolved));
    }
    match format {
        "json" => {
            let mut out = Vec::new();
            for (record, resolved) in &rows {
                let mut entry = serde_json::json!({
                    "name": record.name.to_string(),
                    "repository": record.name.familiar_repository(),
                    "tag": record.name.tag(),
                    "digest": record.target.digest().to_string(),
                    "mediaType": record.target.media_type().to_string(),
                });
                match resolved {
                    Ok(image) => {
                        entry["id"] = image.id().to_string().into();
                        entry["created"] = image.config.created().clone().into();
                        entry["size"] = image.size().into();
                    }
                    Err(e) => entry["error"] = e.to_string().into(),
                }
                out.push(entry);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        "table" => {
            if quiet {
                for (_, resolved) in &rows {
                    if let Ok(image) = resolved {
                        println!("{}", short_id(image.id()));
                    }
                }
                return Ok(0);
            }
            let mut table = vec![[
                "REPOSITORY".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
            ]];
            for (record, resolved) in &rows {
                let (id, created, size) = match resolved {
                    Ok(image) => (
                        short_id(image.id()),
                        crate::table::since(image.config.created().as_deref())
                            .map_or_else(|| "N/A".to_string(), |t| format!("{t} ago")),
                        human_size(image.size()),
                    ),
                    Err(_) => ("<broken>".into(), "N/A".into(), "N/A".into()),
                };
                table.push([
                    record.name.familiar_repository(),
                    record.name.tag().unwrap_or("<none>").to_string(),
                    id,
                    created,
                    size,
                ]);
            }
            crate::table::write_table(&mut std::io::stdout().lock(), &table, 3)?;
        }
        other => bail!("unknown --format {other:?} (use table or json)"),
    }
    Ok(0)
}

/// skopeo's transport names: `oci:PATH[:REF]` (an OCI layout directory)
/// and `oci-archive:PATH[:REF]` (its tar); the path ends at the first
/// colon, as skopeo splits it. `None` for a plain path.
#[allow(clippy::type_complexity)]
fn transport(arg: &std::path::Path) -> Result<Option<(&'static str, PathBuf, Option<String>)>> {
    let Some(text) = arg.to_str() else {
        return Ok(None);
    };
    let (kind, rest) = match text.split_once(':') {
        Some(("oci", rest)) => ("oci", rest),
        Some(("oci-archive", rest)) => ("oci-archive", rest),
        _ => return Ok(None),
    };
    let (path, reference) = match rest.split_once(':') {
        Some((p, r)) => (p, Some(r.to_string())),
        None => (rest, None),
    };
    if path.is_empty() || reference.as_deref() == Some("") {
        bail!("{text:?}: give {kind}:PATH or {kind}:PATH:REFERENCE");
    }
    Ok(Some((kind, PathBuf::from(path), reference)))
}

fn inspect(images: &Images, names: &[String], platform: Option<&str>) -> Result<i32> {
    let platform = match platform {
        Some(p) => PlatformSpec::parse(p)?,
        None => PlatformSpec::host(),
    };
    let mut out = Vec::new();
    let mut code = 0;
    for name in names {
        // Containers first, as podman's inspect looks them up.
        if let Some(c) = crate::containers::inspect_json(images.root(), name)? {
            out.push(c);
            continue;
        }
        let image = match images.image(name, &platform) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("berth: {e}");
                code = 1;
                continue;
            }
        };
        let repo_tags: Vec<String> = images
            .list()?
            .into_iter()
            .filter(|r| r.target.digest() == image.record.target.digest())
            .map(|r| r.name.to_string())
            .collect();
        out.push(serde_json::json!({
            "Id": image.id().to_string(),
            "Name": image.record.name.to_string(),
            "RepoTags": repo_tags,
            "Digest": image.record.target.digest().to_string(),
            "MediaType": image.record.target.media_type().to_string(),
            "ManifestDigest": image.manifest_descriptor.digest().to_string(),
            "Created": image.config.created(),
            "Architecture": berth_image::media::arch_name(image.config.architecture()),
            "Os": berth_image::media::os_name(image.config.os()),
            "Variant": image.config.variant(),
            "Size": image.size(),
            "Config": image.config.config(),
            "RootFS": image.config.rootfs(),
            "History": image.config.history(),
            "Manifest": image.manifest,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

fn fsck(images: &Images) -> Result<i32> {
    let (report, problems) = berth_image::gc::fsck(images)?;
    for (digest, path, actual) in &report.corrupt {
        println!(
            "corrupt blob {digest} at {}: content hashes to {actual}; remove the image(s) using it and load or pull them again",
            path.display()
        );
    }
    for path in &report.stray {
        println!("stray file {} (not named like a digest)", path.display());
    }
    for p in &problems {
        println!("{p}");
    }
    if !report.abandoned_ingests.is_empty() {
        println!(
            "{} abandoned partial ingest(s) (invisible; `berth gc` removes them)",
            report.abandoned_ingests.len()
        );
    }
    let clean = report.is_clean() && problems.is_empty();
    println!(
        "checked {} blobs: {}",
        report.checked,
        if clean { "ok" } else { "PROBLEMS FOUND" }
    );
    Ok(if clean { 0 } else { 1 })
}
