//! `berth-runtime`: an OCI runtime with runc's command line.

fn main() {
    eprintln!("berth-runtime: no subcommands yet");
    std::process::exit(1);
}
