//! Replays every committed fuzz input on stable: each file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through
//! the matching `berth_fuzz` function, and the test fails naming every file
//! that panics (also in a thread the parser spawned and joined). A target
//! without a corpus, a corpus or regressions directory without a target,
//! and a target missing from the cargo-fuzz project are failures too.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The sorted files of `dir` (which must exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// The names of the subdirectories of `dir` (none if it is missing).
fn subdirs(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.expect("a directory entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_target() {
    let fuzz = fuzz_dir();
    let names: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names.len(), TARGETS.len(), "duplicate target names");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("fuzz/Cargo.toml: {e}"));
    let mut problems = Vec::new();
    for name in &names {
        let corpus = fuzz.join("corpus").join(name);
        if !corpus.is_dir() {
            problems.push(format!("{}: missing corpus directory", corpus.display()));
        } else if files(&corpus).is_empty() {
            problems.push(format!("{}: empty corpus directory", corpus.display()));
        }
        let source = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        match std::fs::read_to_string(&source) {
            Ok(text) if text.contains(&format!("berth_fuzz::{name}(")) => {}
            Ok(_) => problems.push(format!(
                "{}: does not call berth_fuzz::{name}",
                source.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", source.display())),
        }
        if !manifest.contains(&format!("name = \"{name}\"")) {
            problems.push(format!("fuzz/Cargo.toml: no [[bin]] named {name:?}"));
        }
    }
    for sub in ["corpus", "regressions"] {
        for dir in subdirs(&fuzz.join(sub)) {
            if !names.contains(&dir) {
                problems.push(format!("fuzz/{sub}/{dir}: no target of that name"));
            }
        }
    }
    let sources: BTreeSet<String> = files(&fuzz.join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for extra in sources.difference(&names) {
        problems.push(format!(
            "fuzz/fuzz_targets/{extra}.rs: not in berth_fuzz::TARGETS"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_corpus_and_regression_file_replays_without_panic() {
    // Count panics in every thread: the layer applier and the sniffer turn
    // a panic in their worker threads into an error, which must still fail.
    let panics = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(String::new()));
    let previous = panic::take_hook();
    {
        let (panics, last) = (panics.clone(), last.clone());
        panic::set_hook(Box::new(move |info| {
            panics.fetch_add(1, Ordering::SeqCst);
            *last.lock().unwrap_or_else(|p| p.into_inner()) = info.to_string();
            previous(info);
        }));
    }
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for sub in ["corpus", "regressions"] {
            let dir = fuzz.join(sub).join(name);
            if sub == "regressions" && !dir.exists() {
                continue;
            }
            for file in files(&dir) {
                let data = std::fs::read(&file)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
                let before = panics.load(Ordering::SeqCst);
                let result = panic::catch_unwind(AssertUnwindSafe(|| target(&data)));
                replayed += 1;
                if result.is_err() || panics.load(Ordering::SeqCst) != before {
                    let message = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    failures.push(format!("fuzz/{sub}/{name}/{}: {message}", file_name(&file)));
                }
            }
        }
    }
    let _ = panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} of {replayed} fuzz inputs panic (reproduce with `cargo +nightly fuzz run <target> <file>` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(replayed > 0, "no fuzz input replayed");
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
