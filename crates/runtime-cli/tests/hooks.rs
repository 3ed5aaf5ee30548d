//! End-to-end tests of OCI lifecycle hooks through the runtime binary: each
//! stage runs at its moment with the container state on stdin, failing
//! create-time hooks abort create without leaving state, a failing poststop
//! is only a warning, and a hook's timeout kills it.
//!
//! Expectations were checked against runc 1.1.5
//! (`BERTH_TEST_RUNTIME=/usr/sbin/runc cargo test -p berth-runtime-cli --test hooks`):
//! runc passes all but three, each a known runc 1.1 deviation from the
//! spec these tests follow: `every_stage_runs_at_its_moment_with_the_state`
//! and `failing_poststart_is_only_a_warning` (runc 1.1 runs poststart hooks
//! during `create`, with status "created", and a failure aborts create;
//! fixed in 1.2 — the spec puts poststart after the user process started,
//! status "running", failures only warned about), and
//! `failing_start_container_fails_start_before_the_process_runs` (runc's
//! `start` returns success before its init runs the startContainer hooks;
//! the spec says a failing startContainer hook MUST generate an error).

use std::fs;
use std::path::Path;

use berth_testutil::runtime::*;

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A hook that appends its stage to `dir/order` and saves its stdin to
/// `dir/<stage>.json`.
fn recording_hook(dir: &Path, stage: &str) -> Value {
    json!({
        "path": dir.join("record.sh"),
        "args": ["record.sh", stage],
        "env": [format!("OUT={}", dir.display()), PATH_ENV]
    })
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("hook output {} missing: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "hook got invalid state JSON in {}: {e}: {text}",
            path.display()
        )
    })
}

fn bundle_with(rt: &Rt, args: &[&str], hooks: Value) -> berth_testutil::Bundle {
    let mut spec = berth_testutil::default_spec(args);
    spec["hooks"] = hooks;
    spec["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(same_path_bind(rt.scratch.path()));
    berth_testutil::Bundle::new(&spec)
}

#[test]
fn every_stage_runs_at_its_moment_with_the_state() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    script(
        &dir.join("record.sh"),
        "cat > \"$OUT/$1.json\"\necho \"$1\" >> \"$OUT/order\"",
    );
    let hooks = json!({
        "prestart": [recording_hook(&dir, "prestart")],
        "createRuntime": [recording_hook(&dir, "createRuntime")],
        "createContainer": [recording_hook(&dir, "createContainer")],
        "startContainer": [recording_hook(&dir, "startContainer")],
        "poststart": [recording_hook(&dir, "poststart")],
        "poststop": [recording_hook(&dir, "poststop")],
    });
    // The container's process records which hooks had run before it.
    let saw = dir.join("process_saw");
    let cmd = format!(
        "cat {order} > {saw}.tmp; mv {saw}.tmp {saw}; exec sleep 1000",
        order = dir.join("order").display(),
        saw = saw.display()
    );
    let bundle = bundle_with(&rt, &["sh", "-c", &cmd], hooks);
    let id = berth_testutil::unique_id("hooks-all");

    rt.create_ok(&id, bundle.path());
    let state = rt.try_state(&id).expect("state after create");
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_i64().expect("pid");
    let order = fs::read_to_string(dir.join("order")).expect("create-time hooks ran");
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["prestart", "createRuntime", "createContainer"],
        "create must run prestart, createRuntime, createContainer in order, and nothing else"
    );
    for stage in ["prestart", "createRuntime", "createContainer"] {
        let s = read_json(&dir.join(format!("{stage}.json")));
        assert_eq!(s["id"], id.as_str(), "{stage}: {s}");
        assert_eq!(s["status"], "creating", "{stage}: {s}");
        assert_eq!(s["bundle"], bundle.path().to_str().unwrap(), "{stage}: {s}");
        assert!(s["ociVersion"].is_string(), "{stage}: {s}");
        if stage != "createContainer" {
            // run by the runtime on the host: the host pid of the init
            assert_eq!(s["pid"].as_i64(), Some(pid), "{stage}: {s}");
        }
    }

    rt.ok(&["start", &id]);
    wait_until("the container process to record the hooks it saw", || {
        saw.exists()
    });
    let seen = fs::read_to_string(&saw).unwrap();
    let mut seen: Vec<_> = seen.lines().collect();
    // poststart runs once the process has been started: whether it shows up
    // before the process reads the list is up to the scheduler (as with runc).
    if seen.last() == Some(&"poststart") {
        seen.pop();
    }
    assert_eq!(
        seen,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ],
        "startContainer must run before the user process, poststart after it"
    );
    // poststart has run by the time `start` returns.
    let post = read_json(&dir.join("poststart.json"));
    assert_eq!(post["status"], "running", "{post}");
    assert_eq!(post["pid"].as_i64(), Some(pid), "{post}");
    let start = read_json(&dir.join("startContainer.json"));
    assert_eq!(start["id"], id.as_str(), "{start}");
    assert_eq!(
        start["status"], "created",
        "startContainer runs before the process: {start}"
    );
    assert!(!dir.join("poststop.json").exists());

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_stopped(&id);
    assert!(
        !dir.join("poststop.json").exists(),
        "poststop runs at delete, not at exit"
    );
    rt.ok(&["delete", &id]);
    let stop = read_json(&dir.join("poststop.json"));
    assert_eq!(stop["id"], id.as_str(), "{stop}");
    assert_eq!(stop["status"], "stopped", "{stop}");
    assert!(rt.try_state(&id).is_none());
}

/// A failing create-time hook must fail `create`, name the hook, and leave
/// nothing behind: no state under --root, no init process.
fn failing_create_hook_aborts(stage: &str) {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("fail.sh");
    script(&hook, "echo 'nvidia: no devices found' >&2\nexit 7");
    let bundle = bundle_with(&rt, &["sleep", "1000"], json!({ stage: [{"path": hook}] }));
    let id = berth_testutil::unique_id("hooks-fail");
    let pid_file = dir.join("pid");
    let out = rt.create(
        &id,
        bundle.path(),
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "create must fail when a {stage} hook fails"
    );
    assert!(
        stderr.contains("fail.sh") || stderr.contains("exit status 7"),
        "{stderr}"
    );
    assert!(
        rt.try_state(&id).is_none(),
        "state of {id} left behind after a failed {stage} hook"
    );
    assert!(
        !rt.leftovers().iter().any(|p| p.ends_with(&id)),
        "{id} left under --root: {:?}",
        rt.leftovers()
    );
    if let Ok(pid) = fs::read_to_string(&pid_file) {
        let pid: i64 = pid.trim().parse().expect("pid file holds a pid");
        assert!(
            !alive(pid),
            "init {pid} still alive after a failed {stage} hook"
        );
    }
}

#[test]
fn failing_prestart_aborts_create() {
    failing_create_hook_aborts("prestart");
}

#[test]
fn failing_create_runtime_aborts_create() {
    failing_create_hook_aborts("createRuntime");
}

#[test]
fn failing_create_container_aborts_create() {
    failing_create_hook_aborts("createContainer");
}

#[test]
fn failing_start_container_fails_start_before_the_process_runs() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("start-fail.sh");
    script(&hook, "echo 'refusing to start' >&2\nexit 5");
    let ran = dir.join("process-ran");
    let cmd = format!("touch {}; exec sleep 1000", ran.display());
    let bundle = bundle_with(
        &rt,
        &["sh", "-c", &cmd],
        json!({ "startContainer": [{"path": hook}] }),
    );
    let id = berth_testutil::unique_id("hooks-startfail");
    rt.create_ok(&id, bundle.path());
    let pid = rt.try_state(&id).expect("state")["pid"]
        .as_i64()
        .expect("pid");
    let out = rt.output(&["start", &id]);
    assert!(
        !out.status.success(),
        "start must fail when a startContainer hook fails"
    );
    // The container is stopped and its process never ran.
    rt.wait_stopped(&id);
    assert!(
        !alive(pid),
        "init {pid} still alive after a failed startContainer hook"
    );
    assert!(
        !ran.exists(),
        "the user process ran although startContainer failed"
    );
}

/// Whether the JSON log at `path` has a warning (runc 1.1.5: error) line
/// carrying `needle`.
fn logged_failure(path: &Path, needle: &str) -> bool {
    let log = fs::read_to_string(path).unwrap_or_default();
    log.lines().any(|l| {
        serde_json::from_str::<Value>(l)
            .map(|v| {
                (v["level"] == "warning" || v["level"] == "error")
                    && v["msg"].as_str().unwrap_or("").contains(needle)
            })
            .unwrap_or(false)
    })
}

/// `runtime --log <log> --log-format json <args>`.
fn run_logged(rt: &Rt, log: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--log", log.to_str().unwrap(), "--log-format", "json"];
    all.extend_from_slice(args);
    rt.output(&all)
}

#[test]
fn failing_poststop_is_only_a_warning() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("poststop-fail.sh");
    script(&hook, "echo 'cleanup went wrong' >&2\nexit 3");
    let bundle = bundle_with(&rt, &["true"], json!({ "poststop": [{"path": hook}] }));
    let id = berth_testutil::unique_id("hooks-poststop");
    rt.start_new(&id, bundle.path());
    rt.wait_stopped(&id);
    let log = dir.join("log.json");
    let out = run_logged(&rt, &log, &["delete", &id]);
    assert!(
        out.status.success(),
        "delete must succeed despite a failing poststop hook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rt.try_state(&id).is_none());
    assert!(
        logged_failure(&log, "cleanup went wrong"),
        "expected the poststop failure in the log, got: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

/// runc 1.1.5 fails this one: it runs poststart at create and kills the
/// container when it fails; the spec says poststart failures only warn.
#[test]
fn failing_poststart_is_only_a_warning() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("poststart-fail.sh");
    script(&hook, "echo 'could not register' >&2\nexit 4");
    let bundle = bundle_with(
        &rt,
        &["sleep", "1000"],
        json!({ "poststart": [{"path": hook}] }),
    );
    let id = berth_testutil::unique_id("hooks-poststart");
    rt.create_ok(&id, bundle.path());
    let log = dir.join("log.json");
    let out = run_logged(&rt, &log, &["start", &id]);
    assert!(
        out.status.success(),
        "start must succeed despite a failing poststart hook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = rt.try_state(&id).expect("container still exists");
    assert_eq!(state["status"], "running", "{state}");
    assert!(
        logged_failure(&log, "could not register"),
        "expected the poststart failure in the log, got: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn hook_timeout_kills_the_hook_and_fails_create() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("slow.sh");
    script(
        &hook,
        &format!(
            "echo $$ > {}\nexec sleep 1000",
            dir.join("hook.pid").display()
        ),
    );
    let bundle = bundle_with(
        &rt,
        &["sleep", "1000"],
        json!({ "createRuntime": [{"path": hook, "timeout": 1}] }),
    );
    let id = berth_testutil::unique_id("hooks-timeout");
    let out = rt.create(&id, bundle.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "create must fail when a hook times out"
    );
    assert!(stderr.to_lowercase().contains("timeout"), "{stderr}");
    let pid: i64 = fs::read_to_string(dir.join("hook.pid"))
        .expect("the hook ran")
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "hook {pid} still running after its timeout");
    assert!(rt.try_state(&id).is_none());
}

#[test]
fn a_hook_timeout_past_what_a_clock_holds_means_no_deadline() {
    let rt = Rt::new();
    let dir = rt.scratch.path().to_path_buf();
    let hook = dir.join("quick.sh");
    script(&hook, &format!("touch {}", dir.join("ran").display()));
    let bundle = bundle_with(
        &rt,
        &["true"],
        json!({ "createRuntime": [{"path": hook, "timeout": i64::MAX}] }),
    );
    let id = berth_testutil::unique_id("hooks-long");
    let out = rt.create(&id, bundle.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("ran").exists(), "the hook did not run");
    rt.ok(&["delete", "-f", &id]);
}
