//! `berth-monitor`: the per-container monitor (see crates/monitor).

fn main() {
    std::process::exit(berth_monitor::main());
}
