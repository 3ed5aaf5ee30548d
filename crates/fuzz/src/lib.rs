//! Fuzz entry points for every parser of untrusted input in berth.
//!
//! Each target is a `pub fn <target>(data: &[u8])` that feeds the bytes to
//! the real parser (through the crate's public API, or the `#[doc(hidden)]
//! fuzzing` modules of berth-archive, berth-image and berth-registry where
//! the parser is private). Errors are expected and ignored; a panic is a
//! bug. Some targets also assert properties that must hold for any input
//! (nothing written outside a layer's target directory, normalised
//! references re-parse to themselves, issued tokens never grant more than
//! the rules allow, ...): a failed assertion is a bug too.
//!
//! [`TARGETS`] lists them; `fuzz/fuzz_targets/<target>.rs` (the cargo-fuzz
//! project, nightly) calls each one, `fuzz/corpus/<target>/` holds its
//! corpus, and `tests/replay.rs` replays every corpus and regression file
//! on stable in `cargo test`.

mod archive;
mod client;
mod image;
mod registry;
mod runtime;
mod scratch;

pub use archive::{layer_apply, layer_apply_overlay, tar_stream};
pub use client::client_challenge;
pub use image::{image_import, image_json, image_load, image_reference, layer_sniff};
pub use registry::{
    hmac_sha256, registry_auth_header, registry_htpasswd, registry_jwt_claims, registry_manifest,
    registry_names, registry_range, registry_route, registry_token_request,
};
pub use runtime::runtime_config;

/// A fuzz target: feeds `data` to one parser; panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name: `fuzz/fuzz_targets/<name>.rs` calls it and
/// `fuzz/corpus/<name>/` (plus `fuzz/regressions/<name>/`) feeds it.
pub const TARGETS: &[(&str, Target)] = &[
    ("tar_stream", tar_stream),
    ("layer_apply", layer_apply),
    ("layer_apply_overlay", layer_apply_overlay),
    ("layer_sniff", layer_sniff),
    ("image_json", image_json),
    ("image_load", image_load),
    ("image_import", image_import),
    ("image_reference", image_reference),
    ("registry_names", registry_names),
    ("registry_route", registry_route),
    ("registry_range", registry_range),
    ("registry_auth_header", registry_auth_header),
    ("registry_jwt_claims", registry_jwt_claims),
    ("registry_token_request", registry_token_request),
    ("registry_htpasswd", registry_htpasswd),
    ("registry_manifest", registry_manifest),
    ("runtime_config", runtime_config),
    ("client_challenge", client_challenge),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
