//! `berth push IMAGE [DEST]`: a local image to a registry.

use anyhow::{Context, Result};
use berth_distribution::{PushOptions, Registry};
use berth_image::{Images, PlatformSpec, Reference};

use crate::pull::{runtime, Display, RegistryArgs};
use crate::Global;

/// `berth push` options.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Print only the pushed manifest's (or index's) digest.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also put the image under this tag (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Upload blobs larger than this many bytes in PATCH chunks of this size.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_size: Option<u64>,
    /// Platform pushed when the image is an index only partly present locally.
    #[arg(long)]
    pub platform: Option<String>,
    /// Also push the local referrers (signatures, SBOMs fetched by `berth
    /// pull --referrers`) of what is pushed, after it: through the
    /// registry's referrers API, or the `sha256-<hex>` fallback tag's index
    /// where the registry has none. Off by default.
    #[arg(long)]
    pub referrers: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The local image (name, ID or digest prefix).
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub dest: Option<String>,
}

/// Runs `berth push`.
pub fn run(args: PushArgs, global: &Global) -> Result<i32> {
    let images = Images::open(&global.root)?;
    let dest = match &args.dest {
        Some(d) => Reference::parse(d)?,
        None => {
            let name = images.get(&args.image)?.name;
            if name.is_unnamed() {
                anyhow::bail!(
                    "image {} has no name: give where to push it (berth push {} REGISTRY/REPO:TAG)",
                    args.image,
                    args.image
                );
            }
            name
        }
    };
    let options = PushOptions {
        extra_tags: args.tags.clone(),
        chunk_size: args.chunk_size,
        referrers: args.referrers,
        platform: match &args.platform {
            Some(p) => PlatformSpec::parse(p)?,
            None => PlatformSpec::host(),
        },
        ..Default::default()
    };
    let client_options = args.registry.options()?;
    let display = Display::new(args.quiet);
    let pushed = runtime()?.block_on(async {
        let registry = Registry::connect(dest.domain(), &client_options).await?;
        berth_distribution::push(&images, &registry, &args.image, &dest, &options, &display).await
    });
    display.finish();
    let digest = pushed.with_context(|| format!("pushing {} to {dest}", args.image))?;
    if args.quiet {
        println!("{digest}");
    } else {
        eprintln!("pushed {dest} (digest {digest})");
        let local = images.referrers(&digest)?.len();
        if local > 0 && !args.referrers {
            eprintln!(
                "{local} local referrers of {digest} not pushed (give --referrers to push them)"
            );
        }
    }
    Ok(0)
}
