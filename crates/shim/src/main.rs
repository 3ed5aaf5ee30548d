//! `containerd-shim-berth-v2`: the containerd shim v2 for berth. containerd
//! runs it as `io.containerd.berth.v2`; it serves the ttrpc task service and
//! drives every container of its group through berth's runtime library in
//! its own process (no runtime binary is exec'd per step).
//!
//! Actions, as containerd calls them:
//! - `start`: find or start the shim serving this container's group and
//!   print its socket address;
//! - `delete`: clean up after a shim that died (kill and delete the
//!   container, unmount its rootfs) and print the exit status;
//! - no action: serve the task service on the socket passed as fd 3.

mod bootstrap;
mod events;
mod logger;
mod metrics;
mod oom;
mod reaper;
mod service;
mod stdio;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.berth.v2";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flags = match bootstrap::Flags::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            std::process::exit(1);
        }
    };
    if flags.version {
        println!("{}:", args[0]);
        println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
        println!("  Runtime:  berth-runtime (linked in)");
        return;
    }
    let result = match flags.action.as_str() {
        _ if flags.info => bootstrap::info(),
        "start" => bootstrap::start(&flags),
        "delete" => bootstrap::delete(&flags),
        "" => bootstrap::serve(&flags),
        other => Err(anyhow::anyhow!(
            "unknown action {other:?}: containerd calls `start`, `delete`, or no action to serve"
        )),
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_NAME}: {e:#}");
        std::process::exit(1);
    }
}
