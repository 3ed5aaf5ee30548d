//! `berth artifact attach`, `ls` and `pull`: artifacts (signatures, SBOMs,
//! any files) attached to an image in a registry, the referrers of an
//! image, and an artifact's files — oras's `attach`, `discover` and `pull`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_distribution::referrers::{self, Artifact};
use berth_distribution::{PushOptions, Registry};
use berth_image::Reference;
use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};

use crate::pull::{runtime, Display, RegistryArgs};

/// Artifact subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Push files as an artifact whose subject is IMAGE (in IMAGE's repository).
    Attach(AttachArgs),
    /// List the artifacts attached to IMAGE (its referrers) in a registry,
    /// or with --local in the local store.
    Ls(LsArgs),
    /// Download the files of an artifact (REPO@DIGEST as `ls` lists it) into a directory.
    Pull(PullArgs),
}

/// `berth artifact pull` options.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The directory to write the files into (created if needed).
    #[arg(long, short = 'o', default_value = ".")]
    pub output: PathBuf,
    /// Print nothing but the paths written.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Write the files of an artifact kept in the local store (fetched by
    /// `berth pull --referrers`) instead.
    #[arg(long)]
    pub local: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The artifact, e.g. 127.0.0.1:5000/app@sha256:… (with --local also
    /// its sha256:… alone).
    pub artifact: String,
}

/// `berth artifact attach` options.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The artifact's type, e.g. application/spdx+json.
    #[arg(long)]
    pub artifact_type: String,
    /// A manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Print only the artifact manifest's digest.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image in a registry the artifact refers to, e.g. 127.0.0.1:5000/app:v1.
    pub image: String,
    /// Files to attach, each FILE or FILE:MEDIA_TYPE (default application/octet-stream).
    pub files: Vec<String>,
}

/// `berth artifact ls` options.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only artifacts of this type.
    #[arg(long)]
    pub artifact_type: Option<String>,
    /// Print only the artifacts' digests.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// `table` or `json` (the referrers index).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// List the referrers kept in the local store (fetched by `berth pull
    /// --referrers`) of a local image, or of a manifest digest.
    #[arg(long)]
    pub local: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image in a registry, e.g. 127.0.0.1:5000/app:v1 (with --local:
    /// a local image, or sha256:… of a manifest in the store).
    pub image: String,
}

/// Runs an artifact subcommand.
pub fn run(cmd: Command, global: &crate::Global) -> Result<i32> {
    match cmd {
        Command::Attach(args) => attach(args),
        Command::Ls(args) if args.local => ls_local(args, global),
        Command::Ls(args) => ls(args),
        Command::Pull(args) if args.local => pull_local(args, global),
        Command::Pull(args) => pull(args),
    }
}

/// Writes the files of an artifact in the local store.
fn pull_local(args: PullArgs, global: &crate::Global) -> Result<i32> {
    let text = args
        .artifact
        .rsplit_once('@')
        .map_or(args.artifact.as_str(), |(_, d)| d);
    let digest = berth_core::digest::parse(text).with_context(|| {
        format!(
            "artifact {:?}: give its digest (sha256:…) as `berth artifact ls --local` lists it",
            args.artifact
        )
    })?;
    let images = berth_image::Images::open(&global.root)?;
    let written = referrers::local_files(&images, &digest, &args.output)
        .with_context(|| format!("writing the files of artifact {digest}"))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(0)
}

fn pull(args: PullArgs) -> Result<i32> {
    let reference = Reference::parse(&args.artifact)?;
    let target = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => berth_image::reference::DEFAULT_TAG.to_string(),
    };
    let options = args.registry.options()?;
    let display = Display::new(args.quiet);
    let written = runtime()?.block_on(async {
        let registry = Registry::connect(reference.domain(), &options).await?;
        referrers::fetch_files(&registry, reference.path(), &target, &args.output, &display).await
    });
    display.finish();
    let written = written.with_context(|| format!("pulling artifact {reference}"))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(0)
}

/// `FILE[:MEDIA_TYPE]`: a media type follows the last colon when it has a slash.
fn file_arg(arg: &str) -> (PathBuf, String) {
    match arg.rsplit_once(':') {
        Some((path, mt)) if mt.contains('/') && !path.is_empty() => {
            (PathBuf::from(path), mt.to_string())
        }
        _ => (PathBuf::from(arg), "application/octet-stream".to_string()),
    }
}

/// The subject of `reference` as the registry has it: what its tag or
/// digest resolves to.
async fn subject(registry: &Registry, reference: &Reference) -> Result<Descriptor> {
    let target = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => berth_image::reference::DEFAULT_TAG.to_string(),
    };
    let m = registry
        .manifest(reference.path(), &target, reference.digest())
        .await?;
    Ok(DescriptorBuilder::default()
        .media_type(MediaType::from(m.media_type.as_str()))
        .digest(m.digest)
        .size(m.data.len() as u64)
        .build()?)
}

fn attach(args: AttachArgs) -> Result<i32> {
    let reference = Reference::parse(&args.image)?;
    let files: Vec<(PathBuf, String)> = args.files.iter().map(|f| file_arg(f)).collect();
    for (path, _) in &files {
        if !path.is_file() {
            bail!("{}: not a file to attach", path.display());
        }
    }
    let mut annotations = HashMap::new();
    for a in &args.annotations {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                annotations.insert(k.to_string(), v.to_string());
            }
            _ => bail!("annotation {a:?}: give KEY=VALUE"),
        }
    }
    let artifact = Artifact {
        artifact_type: args.artifact_type.clone(),
        files,
        annotations,
    };
    let options = args.registry.options()?;
    let display = Display::new(args.quiet);
    let attached = runtime()?.block_on(async {
        let registry = Registry::connect(reference.domain(), &options).await?;
        let subject = subject(&registry, &reference).await?;
        let attached = referrers::attach(
            &registry,
            reference.path(),
            &subject,
            &artifact,
            &PushOptions::default(),
            &display,
        )
        .await?;
        Ok::<_, anyhow::Error>((subject, attached))
    });
    display.finish();
    let (subject, attached) =
        attached.with_context(|| format!("attaching an artifact to {reference}"))?;
    let digest = attached.manifest.digest();
    if args.quiet {
        println!("{digest}");
    } else {
        let how = if attached.registry_indexed {
            "the registry's referrers API".to_string()
        } else {
            format!(
                "the fallback tag {}",
                referrers::fallback_tag(subject.digest())
            )
        };
        eprintln!(
            "attached {digest} ({}) to {} (listed by {how})",
            args.artifact_type,
            subject.digest()
        );
        println!("{digest}");
    }
    Ok(0)
}

/// The referrers of a local image (or manifest digest) in the store.
fn ls_local(args: LsArgs, global: &crate::Global) -> Result<i32> {
    let images = berth_image::Images::open(&global.root)?;
    let subject = match images.get(&args.image) {
        Ok(record) => record.target.digest().clone(),
        Err(e) => match berth_core::digest::parse(&args.image) {
            Ok(d) if images.content().exists(&d) => d,
            _ => {
                return Err(e).context(
                    "give a local image or the sha256:… digest of a manifest in the store",
                )
            }
        },
    };
    let mut manifests = images.referrers(&subject)?;
    if let Some(t) = &args.artifact_type {
        manifests.retain(|d| d.artifact_type().as_ref().is_some_and(|a| a.as_ref() == t));
    }
    print_referrers(&args, &manifests)
}

fn ls(args: LsArgs) -> Result<i32> {
    let reference = Reference::parse(&args.image)?;
    let options = args.registry.options()?;
    let found = runtime()?.block_on(async {
        let registry = Registry::connect(reference.domain(), &options).await?;
        let subject = subject(&registry, &reference).await?;
        let found = referrers::list(
            &registry,
            reference.path(),
            subject.digest(),
            args.artifact_type.as_deref(),
        )
        .await?;
        Ok::<_, anyhow::Error>(found)
    });
    let found = found.with_context(|| format!("listing the referrers of {reference}"))?;
    print_referrers(&args, &found.manifests)
}

/// Prints referrers as `ls` asks: digests, the index as JSON, or a table.
fn print_referrers(args: &LsArgs, manifests: &[Descriptor]) -> Result<i32> {
    if args.quiet {
        for d in manifests {
            println!("{}", d.digest());
        }
    } else if args.format == "json" {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        println!("{}", serde_json::to_string_pretty(&index)?);
    } else {
        let mut rows = vec![vec![
            "DIGEST".to_string(),
            "ARTIFACT TYPE".to_string(),
            "SIZE".to_string(),
        ]];
        for d in manifests {
            rows.push(vec![
                d.digest().to_string(),
                d.artifact_type()
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                d.size().to_string(),
            ]);
        }
        crate::table::write_table(&mut std::io::stdout().lock(), &rows, 3)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_arguments() {
        assert_eq!(
            file_arg("sbom.json:application/spdx+json"),
            (PathBuf::from("sbom.json"), "application/spdx+json".into())
        );
        assert_eq!(
            file_arg("a:b.txt"),
            (PathBuf::from("a:b.txt"), "application/octet-stream".into())
        );
    }
}
