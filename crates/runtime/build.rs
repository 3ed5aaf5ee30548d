//! Builds the exec trampoline (trampoline/main.rs) into OUT_DIR with rustc
//! and sets `cfg(berth_trampoline)` when it exists for the target. Other
//! architectures build without it: the runtime then re-executes itself from
//! a read-only mount instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(berth_trampoline)");
    println!("cargo::rerun-if-changed=trampoline/main.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        return;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("trampoline");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--target",
            &target,
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .arg("-o")
        .arg(&out)
        .arg("trampoline/main.rs")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} to build the exec trampoline: {e}"));
    assert!(
        status.success(),
        "building the exec trampoline (crates/runtime/trampoline/main.rs) failed"
    );
    println!("cargo::rustc-cfg=berth_trampoline");
}
