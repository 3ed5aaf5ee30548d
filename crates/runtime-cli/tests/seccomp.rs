//! linux.seccomp through berth-runtime: filtering of the process and of
//! `exec`, and the cache of compiled programs under the state root.

use std::path::PathBuf;

use berth_testutil::runtime::*;

#[test]
fn seccomp_filters_the_process_and_exec() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_name"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let bundle = Bundle::new(&spec);
    let id = unique_id("seccomp");
    rt.up(&bundle, &id, true);
    let out = rt.ok(&[
        "exec", &id, "sh", "-c",
        "grep Seccomp: /proc/1/status /proc/self/status | awk '{print $2}'; \
         mkdir /dev/shm/d 2>&1 | grep -c 'not permitted'; \
         touch /dev/shm/f; chmod 777 /dev/shm/f 2>&1 | grep -c 'denied'; chmod 700 /dev/shm/f && echo chmod-700-ok",
    ]);
    assert_eq!(out, "2\n2\n1\n1\nchmod-700-ok\n");
    rt.ok(&["delete", "--force", &id]);

    let mut spec = sleeper();
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    let bundle = Bundle::new(&spec);
    let err = rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &unique_id("seccomp"),
    ]);
    assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    assert!(rt.leftovers().is_empty());
}

/// A profile allowing everything but mkdir, which fails with `errno`.
fn mkdir_fails_with(errno: u32) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
    })
}

/// What `mkdir` says in a container run with `profile`.
fn mkdir_under(rt: &Rt, profile: &Value) -> String {
    let mut spec = default_spec(&["true"]);
    spec["linux"]["seccomp"] = profile.clone();
    rt.sh(spec, "mkdir /tmp/d 2>&1 || true").trim().to_string()
}

/// The cache entries under the runtime's root.
fn cache_entries(rt: &Rt) -> Vec<PathBuf> {
    let dir = rt.root().join(berth_runtime::CACHE_DIR).join("seccomp");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seccomp cache at {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

const EPERM: &str = "mkdir: can't create directory '/tmp/d': Operation not permitted";
const EACCES: &str = "mkdir: can't create directory '/tmp/d': Permission denied";

/// The program compiled for a profile is cached and the next container
/// with that profile loads it from there; a cache entry is used only whole
/// and under its own key, so a corrupt or mislabelled one costs a compile,
/// never a wrong filter.
#[test]
fn compiled_filters_are_cached_and_a_bad_entry_never_loads() {
    let rt = Rt::new();
    let eperm = mkdir_fails_with(1);
    let eacces = mkdir_fails_with(13);
    assert_eq!(mkdir_under(&rt, &eperm), EPERM);
    let entries = cache_entries(&rt);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let eperm_entry = entries[0].clone();
    let eperm_bytes = std::fs::read(&eperm_entry).unwrap();
    assert_eq!(mkdir_under(&rt, &eacces), EACCES);
    let eacces_entry = cache_entries(&rt)
        .into_iter()
        .find(|p| *p != eperm_entry)
        .expect("a second entry");
    let eacces_bytes = std::fs::read(&eacces_entry).unwrap();

    // A hit is used: EPERM's entry rewritten (by its owner, validly) with
    // EACCES's program makes the EPERM profile deny with EACCES.
    let header = |b: &[u8]| {
        b.iter()
            .enumerate()
            .filter(|(_, c)| **c == b'\n')
            .nth(2)
            .unwrap()
            .0
            + 1
    };
    let (h1, h2) = (header(&eperm_bytes), header(&eacces_bytes));
    let mut forged = eperm_bytes[..h1].to_vec();
    let digest_at = h1 - 65;
    let program = &eacces_bytes[h2..];
    forged[digest_at..h1 - 1]
        .copy_from_slice(berth_core::digest::sha256_of(program).digest().as_bytes());
    forged.extend_from_slice(program);
    std::fs::write(&eperm_entry, &forged).unwrap();
    assert_eq!(
        mkdir_under(&rt, &eperm),
        EACCES,
        "the cached program was not used"
    );

    // Another profile's entry under this profile's name: the key differs.
    std::fs::write(&eperm_entry, &eacces_bytes).unwrap();
    assert_eq!(mkdir_under(&rt, &eperm), EPERM);
    assert_eq!(
        std::fs::read(&eperm_entry).unwrap(),
        eperm_bytes,
        "entry not rewritten"
    );

    // A flipped bit in the program, or a torn file: compiled again.
    let mut corrupt = eperm_bytes.clone();
    *corrupt.last_mut().unwrap() ^= 0x10;
    for bad in [corrupt, eperm_bytes[..eperm_bytes.len() - 3].to_vec()] {
        std::fs::write(&eperm_entry, &bad).unwrap();
        assert_eq!(mkdir_under(&rt, &eperm), EPERM);
        assert_eq!(std::fs::read(&eperm_entry).unwrap(), eperm_bytes);
    }
}
