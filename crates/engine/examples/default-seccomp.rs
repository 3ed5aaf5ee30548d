//! Prints berth's default seccomp profile as the `linux.seccomp` JSON a
//! runtime gets, resolved for a bounding set given as arguments
//! (`CAP_KILL CAP_NET_BIND_SERVICE ...`; none: the profile of a container
//! without capabilities). bench/runtime.sh uses it to give runc and
//! berth-runtime the same filter.
//!
//! ```text
//! cargo run -p berth-engine --example default-seccomp -- CAP_KILL CAP_AUDIT_WRITE
//! ```

fn main() {
    let bounding: Vec<String> = std::env::args().skip(1).collect();
    let profile = berth_engine::seccomp::default_profile(&bounding);
    match serde_json::to_string_pretty(&profile) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("default-seccomp: cannot print the profile: {e}");
            std::process::exit(1);
        }
    }
}
