//! Target for berth-runtime: a bundle's config.json and the other JSON
//! documents the runtime CLI reads.

use std::path::Path;

use berth_runtime::spec;

use crate::scratch;

/// One JSON document as a bundle's `config.json` (`spec::load`: parsing
/// with field paths in errors, then `validate` against a temporary bundle
/// with a `rootfs/` directory), as an `exec --process` process.json
/// (`spec::load_process`) and as `update --resources` JSON
/// (`spec::parse_resources`).
pub fn runtime_config(data: &[u8]) {
    let bundle = scratch::dir();
    std::fs::create_dir(bundle.path().join("rootfs")).expect("create the bundle's rootfs");
    let config = bundle.path().join("config.json");
    scratch::write(&config, data);
    let _ = spec::load(bundle.path());
    let _ = spec::load_process(&config);
    let _ = spec::parse_resources(Path::new("resources.json"), data);
}
