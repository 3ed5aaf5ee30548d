//! What `berth` prints when it fails: the input named, each cause once.

mod common;

use common::Env;

/// Counts the occurrences of `needle` in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn a_taken_address_is_named_once() {
    let env = Env::new();
    // Hold a port so the registry cannot listen on it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = held.local_addr().unwrap().to_string();
    let storage = env.path("registry");
    let out = env.berth(&[
        "registry",
        "serve",
        "--addr",
        &addr,
        "--storage",
        storage.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert_eq!(count(&err, "Address already in use"), 1, "{err}");
}

#[test]
fn a_missing_image_is_named_once() {
    let env = Env::new();
    let out = env.berth(&["run", "--rm", "--pull", "never", "keep", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "\"keep\""), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
}
