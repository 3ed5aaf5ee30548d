//! The Runtime Spec's remaining process and Linux fields, each seen from
//! inside the container, for the init and for an exec'd process, and each
//! refused with a clear message when out of range: `process.ioPriority`
//! (busybox `ionice`), `process.scheduler` (/proc/self/stat),
//! `process.execCPUAffinity` (/proc/self/status Cpus_allowed_list),
//! `linux.personality` (`uname -m`), `linux.timeOffsets` (/proc/uptime),
//! `linux.memoryPolicy` (get_mempolicy from a small static probe),
//! `linux.netDevices` (a veth pair the test makes) and the LSM labels
//! (refused where the kernel lacks the LSM); `features` is checked against
//! what works here.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testutil::runtime::*;
use berth_testutil::{require_peer, run_ok};

/// `create` of `spec` under a fresh id, which must fail; returns stderr.
fn refused(rt: &Rt, spec: &Value) -> String {
    let bundle = Bundle::new(spec);
    let out = rt.create(&unique_id("bad"), bundle.path(), &[]);
    assert!(
        !out.status.success(),
        "create should have failed for {}",
        spec
    );
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `spec` running `sleep 1000`, returns its id.
fn started(rt: &Rt, spec: &Value, bundle_holder: &mut Vec<Bundle>) -> String {
    let mut spec = spec.clone();
    spec["process"]["args"] = json!(["sleep", "1000"]);
    let bundle = Bundle::new(&spec);
    let id = unique_id("fld");
    rt.start_new(&id, bundle.path());
    bundle_holder.push(bundle);
    id
}

/// `exec <id> sh -c script` output, asserting success.
fn exec_sh(rt: &Rt, id: &str, script: &str) -> String {
    rt.ok(&["exec", id, "sh", "-c", script])
}

#[test]
fn io_priority_reaches_the_init_and_exec_processes() {
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    assert_eq!(rt.sh(spec.clone(), "ionice"), "best-effort: prio 6\n");
    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_RT", "priority": 3});
    let mut held = Vec::new();
    let id = started(&rt, &spec, &mut held);
    assert_eq!(exec_sh(&rt, &id, "ionice -p 1"), "realtime: prio 3\n");
    assert_eq!(exec_sh(&rt, &id, "ionice"), "realtime: prio 3\n");
    rt.ok(&["delete", "--force", &id]);
    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    assert_eq!(rt.sh(spec.clone(), "ionice"), "idle\n");

    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 8});
    let err = refused(&rt, &spec);
    assert!(
        err.contains("field `process.ioPriority.priority`: 8 is out of range"),
        "{err}"
    );
    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_NONE", "priority": 0});
    let err = refused(&rt, &spec);
    assert!(err.contains("process.ioPriority.class"), "{err}");
}

#[test]
fn scheduler_policy_nice_and_priority_reach_the_process() {
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    // /proc/<pid>/stat fields 19 (nice), 40 (rt_priority), 41 (policy).
    let fields = "cut -d' ' -f19,40,41 /proc/self/stat";
    spec["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    assert_eq!(rt.sh(spec.clone(), fields), "7 0 3\n");
    spec["process"]["scheduler"] = json!({"policy": "SCHED_IDLE"});
    assert_eq!(rt.sh(spec.clone(), fields), "0 0 5\n");
    spec["process"]["scheduler"] = json!({
        "policy": "SCHED_DEADLINE",
        "runtime": 10_000_000,
        "deadline": 30_000_000,
        "period": 30_000_000
    });
    assert_eq!(rt.sh(spec.clone(), fields), "0 0 6\n");
    // A real-time policy needs a realtime budget in the container's cgroup
    // where the kernel has RT group scheduling (cgroup v1 cpu controller).
    spec["process"]["scheduler"] = json!({"policy": "SCHED_RR", "priority": 10});
    spec["linux"]["resources"]["cpu"] =
        json!({"realtimeRuntime": 10000, "realtimePeriod": 1000000});
    let mut held = Vec::new();
    let id = started(&rt, &spec, &mut held);
    assert_eq!(
        exec_sh(&rt, &id, "cut -d' ' -f40,41 /proc/1/stat"),
        "10 2\n"
    );
    assert_eq!(
        exec_sh(&rt, &id, "cut -d' ' -f40,41 /proc/self/stat"),
        "10 2\n"
    );
    rt.ok(&["delete", "--force", &id]);

    for (sched, want) in [
        (
            json!({"policy": "SCHED_FIFO"}),
            "field `process.scheduler.priority`: 0 is out of range for SCHED_FIFO (1 to 99)",
        ),
        (
            json!({"policy": "SCHED_OTHER", "nice": -21}),
            "field `process.scheduler.nice`: -21 is out of range",
        ),
        (
            json!({"policy": "SCHED_BATCH", "priority": 5}),
            "only SCHED_FIFO and SCHED_RR take a priority",
        ),
        (
            json!({"policy": "SCHED_OTHER", "runtime": 1000}),
            "SCHED_DEADLINE's",
        ),
        (
            json!({"policy": "SCHED_DEADLINE", "runtime": 100, "deadline": 1000000}),
            "runtime of at least 1024",
        ),
        (
            json!({"policy": "SCHED_ISO"}),
            "SCHED_ISO is not implemented by Linux",
        ),
        (json!({"policy": "SCHED_NOPE"}), "process.scheduler.policy"),
    ] {
        spec["process"]["scheduler"] = sched;
        let err = refused(&rt, &spec);
        assert!(err.contains(want), "want {want:?}: {err}");
    }
}

#[test]
fn personality_linux32_makes_uname_say_i686() {
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    assert_eq!(rt.sh(spec.clone(), "uname -m"), "i686\n");
    let mut held = Vec::new();
    let id = started(&rt, &spec, &mut held);
    assert_eq!(exec_sh(&rt, &id, "uname -m"), "i686\n");
    rt.ok(&["delete", "--force", &id]);
    spec["linux"]["personality"] = json!({"domain": "LINUX"});
    assert_eq!(rt.sh(spec.clone(), "uname -m"), "x86_64\n");

    spec["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]});
    let err = refused(&rt, &spec);
    assert!(err.contains("field `linux.personality.flags`"), "{err}");
    spec["linux"]["personality"] = json!({"domain": "LINUX64"});
    let err = refused(&rt, &spec);
    assert!(err.contains("linux.personality.domain"), "{err}");
}

#[test]
fn time_offsets_shift_the_clocks_of_a_new_time_namespace() {
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    let ten_years = 10 * 365 * 86400;
    spec["linux"]["timeOffsets"] = json!({
        "boottime": {"secs": ten_years, "nanosecs": 0},
        "monotonic": {"secs": ten_years * 2, "nanosecs": 5}
    });
    let out = rt.sh(
        spec.clone(),
        "cut -d. -f1 /proc/uptime; cat /proc/self/timens_offsets",
    );
    let mut lines = out.lines();
    let uptime: u64 = lines.next().unwrap().parse().unwrap();
    assert!(uptime >= ten_years, "uptime {uptime} in {out}");
    let offsets: Vec<String> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        offsets.contains(&format!("monotonic {} 5", ten_years * 2)),
        "{out}"
    );
    // On the host, the boot time is what it was.
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((host as u64) < ten_years);

    let mut no_ns = default_spec(&["true"]);
    no_ns["linux"]["timeOffsets"] = json!({"boottime": {"secs": 5}});
    let err = refused(&rt, &no_ns);
    assert!(
        err.contains("field `linux.timeOffsets`: offsets need a new time namespace"),
        "{err}"
    );
    spec["linux"]["timeOffsets"] = json!({"realtime": {"secs": 5}});
    let err = refused(&rt, &spec);
    assert!(err.contains("use monotonic or boottime"), "{err}");
    spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1, "nanosecs": 1_000_000_000u32}});
    let err = refused(&rt, &spec);
    assert!(
        err.contains("field `linux.timeOffsets.boottime.nanosecs`"),
        "{err}"
    );
}

/// A static program printing the calling process's memory policy as
/// `mode=<n> nodes=<mask in hex>` (get_mempolicy, which no shell tool has).
const MEMPOLICY_C: &str = r#"
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    int mode = -1;
    unsigned long mask[16] = {0};
    if (syscall(SYS_get_mempolicy, &mode, mask, 16 * 8 * sizeof(long), 0, 0) != 0) {
        perror("get_mempolicy");
        return 1;
    }
    printf("mode=%d nodes=%lx\n", mode, mask[0]);
    return 0;
}
"#;

/// Builds the memory policy probe into `dir` (bind it into the container).
fn mempolicy_probe(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("mempolicy.c"), MEMPOLICY_C).unwrap();
    let bin = dir.join("mempolicy");
    run_ok(
        Command::new(require_peer("gcc"))
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(dir.join("mempolicy.c")),
    );
    bin
}

#[test]
fn memory_policy_reaches_the_init_and_exec_processes() {
    let rt = Rt::new();
    let dir = rt.path("probe");
    std::fs::create_dir_all(&dir).unwrap();
    mempolicy_probe(&dir);
    let mut spec = default_spec(&["true"]);
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(same_path_bind(&dir));
    let probe = format!("{}/mempolicy", dir.display());
    // Node 0 exists on every machine (mode numbers: <linux/mempolicy.h>).
    spec["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
    assert_eq!(rt.sh(spec.clone(), &probe), "mode=2 nodes=1\n");
    spec["linux"]["memoryPolicy"] =
        json!({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]});
    let mut held = Vec::new();
    let id = started(&rt, &spec, &mut held);
    // The flag comes back in the mode (MPOL_F_STATIC_NODES is 1 << 15).
    assert_eq!(
        exec_sh(&rt, &id, &probe),
        format!("mode={} nodes=1\n", 3 | 1 << 15)
    );
    rt.ok(&["delete", "--force", &id]);
    spec["linux"]["memoryPolicy"] = json!({"mode": "MPOL_LOCAL"});
    assert_eq!(rt.sh(spec.clone(), &probe), "mode=4 nodes=0\n");
    spec["linux"]["memoryPolicy"] = json!({"mode": "MPOL_DEFAULT"});
    assert_eq!(rt.sh(spec.clone(), &probe), "mode=0 nodes=0\n");

    for (policy, want) in [
        (
            json!({"mode": "MPOL_BIND"}),
            "field `linux.memoryPolicy.nodes`: MPOL_BIND needs at least one node",
        ),
        (
            json!({"mode": "MPOL_LOCAL", "nodes": "0"}),
            "MPOL_LOCAL takes no nodes",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0-x"}),
            "is not a number or a range like 0-3",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
            "exclude each other",
        ),
        (json!({"mode": "MPOL_NONE"}), "linux.memoryPolicy.mode"),
    ] {
        spec["linux"]["memoryPolicy"] = policy;
        let err = refused(&rt, &spec);
        assert!(err.contains(want), "want {want:?}: {err}");
    }
    // A node this machine does not have: the kernel refuses, the message
    // names the field and the nodes there are.
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap();
    assert_eq!(online.trim(), "0", "this test assumes one NUMA node");
    spec["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "5"});
    let err = refused(&rt, &spec);
    assert!(
        err.contains("cannot set linux.memoryPolicy") && err.contains("online NUMA nodes: 0"),
        "{err}"
    );
}

/// The `Cpus_allowed_list` a shell command prints from /proc/self/status.
const CPUS: &str = "grep Cpus_allowed_list /proc/self/status | cut -f2";

#[test]
fn exec_cpu_affinity_pins_exec_processes_and_the_init_gets_every_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs at least 2 CPUs to tell affinities apart (this machine has {cpus})"
    );
    let rt = Rt::new();
    let all = format!("0-{}\n", cpus - 1);
    let taskset = require_peer("taskset");
    // The runtime itself pinned to CPU 1 by its caller.
    // stdout in a file, not a pipe: a container `create` starts inherits it.
    let pinned = |args: &[&str]| {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = Command::new(&taskset)
            .args(["-c", "1"])
            .arg(rt.bin())
            .arg("--root")
            .arg(rt.root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut s = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut s).unwrap();
            s
        };
        assert!(status.success(), "{args:?}: {}", read(err));
        read(out)
    };
    let mut spec = sleeper();
    spec["process"]["execCPUAffinity"] = json!({"final": "0"});
    let bundle = Bundle::new(&spec);
    let id = unique_id("aff");
    pinned(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    pinned(&["start", &id]);
    // The init: not the runtime's mask, but every CPU (the spec's
    // execCPUAffinity is not for the init).
    assert_eq!(
        exec_sh(&rt, &id, "grep Cpus_allowed_list /proc/1/status | cut -f2"),
        all
    );
    // An exec'd process: the container's execCPUAffinity.final.
    assert_eq!(pinned(&["exec", &id, "sh", "-c", CPUS]), "0\n");
    // A process.json of its own: only initial, which the process keeps
    // (final is then left to the kernel).
    let mut process = spec["process"].clone();
    process["args"] = json!(["sh", "-c", CPUS]);
    process["execCPUAffinity"] = json!({"initial": "1"});
    let pj = rt.path("process.json");
    std::fs::write(&pj, serde_json::to_vec(&process).unwrap()).unwrap();
    assert_eq!(
        rt.ok(&["exec", "--process", pj.to_str().unwrap(), &id]),
        "1\n"
    );
    // A process.json without the field takes the container's.
    process.as_object_mut().unwrap().remove("execCPUAffinity");
    std::fs::write(&pj, serde_json::to_vec(&process).unwrap()).unwrap();
    let out = pinned(&["exec", "--process", pj.to_str().unwrap(), &id]);
    assert_eq!(out, "0\n");
    rt.ok(&["delete", "--force", &id]);
    // No affinity anywhere: every CPU again, not the pinned runtime's.
    let mut plain = spec.clone();
    plain["process"]
        .as_object_mut()
        .unwrap()
        .remove("execCPUAffinity");
    let bundle = Bundle::new(&plain);
    let id = unique_id("aff");
    pinned(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    pinned(&["start", &id]);
    assert_eq!(pinned(&["exec", &id, "sh", "-c", CPUS]), all);
    rt.ok(&["delete", "--force", &id]);

    let mut bad = sleeper();
    bad["process"]["execCPUAffinity"] = json!({"initial": "3-1"});
    let err = refused(&rt, &bad);
    assert!(
        err.contains("field `process.execCPUAffinity.initial`:") && err.contains("runs backwards"),
        "{err}"
    );
    bad["process"]["execCPUAffinity"] = json!({"final": "0-x"});
    let err = refused(&rt, &bad);
    assert!(err.contains("process.execCPUAffinity"), "{err}");
}

/// A veth pair on the host (one end to move, its peer staying), with an
/// address on the first end; deleted on drop if still there.
struct Veth {
    name: String,
    peer: String,
}

impl Veth {
    fn new(addr: &str) -> Veth {
        let ip = require_peer("ip");
        // "bd<pid>x<n>": unique, within the 15 bytes of an interface name.
        let name = unique_id("bd").replacen('-', "", 1).replace('-', "x");
        let peer = name.replacen("bd", "bp", 1);
        run_ok(
            Command::new(&ip).args(["link", "add", &name, "type", "veth", "peer", "name", &peer]),
        );
        run_ok(Command::new(&ip).args(["addr", "add", addr, "dev", &name]));
        Veth { name, peer }
    }
}

/// Whether the host has an interface named `name`.
fn on_host(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Drop for Veth {
    fn drop(&mut self) {
        if on_host(&self.name) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.name])
                .status();
        }
    }
}

#[test]
fn net_devices_move_into_the_container_renamed_up_and_addressed() {
    let rt = Rt::new();
    let veth = Veth::new("10.231.7.2/24");
    let numbered = Veth::new("10.231.6.2/24");
    let mut spec = sleeper();
    // A fixed name, and a template the kernel numbers.
    spec["linux"]["netDevices"] = json!({
        veth.name.clone(): {"name": "ctr0"},
        numbered.name.clone(): {"name": "eth%d"}
    });
    let bundle = Bundle::new(&spec);
    let id = unique_id("netdev");
    rt.start_new(&id, bundle.path());
    assert!(!on_host(&veth.name), "{} is still on the host", veth.name);
    assert!(on_host(&veth.peer));
    let inside = exec_sh(&rt, &id, "ip addr show ctr0");
    assert!(inside.contains("inet 10.231.7.2/24"), "{inside}");
    assert!(inside.contains(",UP"), "{inside}");
    let names = exec_sh(&rt, &id, "ls /sys/class/net");
    assert_eq!(names, "ctr0\neth0\nlo\n");
    let eth0 = exec_sh(&rt, &id, "ip addr show eth0");
    assert!(eth0.contains("inet 10.231.6.2/24"), "{eth0}");
    // Deleting the container frees its network namespace: the kernel
    // destroys a virtual device there, and a veth with its peer (a physical
    // one would go back to the host); the runtime moves nothing out itself,
    // as the spec requires.
    rt.ok(&["delete", "--force", &id]);
    wait_until("the veth pair to go with the namespace", || {
        [&veth, &numbered]
            .iter()
            .all(|v| !on_host(&v.name) && !on_host(&v.peer))
    });

    // A device that is not there, and no network namespace to move to.
    let mut missing = sleeper();
    missing["linux"]["netDevices"] = json!({"bdnosuchdev": {}});
    let err = refused(&rt, &missing);
    assert!(
        err.contains("no network interface") && err.contains("bdnosuchdev"),
        "{err}"
    );
    let other = Veth::new("10.231.8.2/24");
    let mut host_ns = sleeper();
    host_ns["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    host_ns["linux"]["netDevices"] = json!({ other.name.clone(): {} });
    let err = refused(&rt, &host_ns);
    assert!(
        err.contains("field `linux.netDevices`: devices can only move into a network namespace of the container's own"),
        "{err}"
    );
    let mut bad_name = sleeper();
    bad_name["linux"]["netDevices"] = json!({ other.name.clone(): {"name": "a/b"} });
    let err = refused(&rt, &bad_name);
    assert!(err.contains("is not a network interface name"), "{err}");
    assert!(on_host(&other.name));
}

/// The LSMs the kernel runs, from securityfs (mounted on a scratch
/// directory when /sys/kernel/security is not).
fn kernel_lsms(rt: &Rt) -> Vec<String> {
    let read = |p: &Path| std::fs::read_to_string(p.join("lsm")).ok();
    let list = read(Path::new("/sys/kernel/security")).unwrap_or_else(|| {
        let dir = rt.path("securityfs");
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "securityfs", "none"])
                .arg(&dir),
        );
        let list = read(&dir);
        run_ok(Command::new("umount").arg(&dir));
        list.expect("securityfs has an lsm file")
    });
    list.trim().split(',').map(str::to_string).collect()
}

#[test]
fn lsm_labels_apply_where_the_kernel_has_the_lsm_and_are_refused_where_not() {
    let rt = Rt::new();
    let lsms = kernel_lsms(&rt);
    let features: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    let has = |name: &str| lsms.iter().any(|l| l == name);
    assert_eq!(
        features["linux"]["apparmor"]["enabled"],
        json!(has("apparmor")),
        "{lsms:?}"
    );
    assert_eq!(
        features["linux"]["selinux"]["enabled"],
        json!(has("selinux")),
        "{lsms:?}"
    );
    let mut spec = default_spec(&["true"]);
    spec["process"]["apparmorProfile"] = json!("unconfined");
    if has("apparmor") {
        assert_eq!(
            rt.sh(spec.clone(), "cat /proc/self/attr/apparmor/current"),
            "unconfined\n"
        );
    } else {
        let err = refused(&rt, &spec);
        assert!(
            err.contains("field `process.apparmorProfile`: AppArmor profile")
                && err.contains("asked for, but AppArmor is not enabled in this kernel"),
            "{err}"
        );
    }
    let mut spec = default_spec(&["true"]);
    if has("selinux") {
        // The host's own context: a transition every policy allows.
        let label = std::fs::read_to_string("/proc/self/attr/current").unwrap();
        let label = label.trim_end_matches(['\0', '\n']);
        spec["process"]["selinuxLabel"] = json!(label);
        assert_eq!(
            rt.sh(spec.clone(), "cat /proc/self/attr/current")
                .trim_end_matches(['\0', '\n']),
            label
        );
    } else {
        spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
        let err = refused(&rt, &spec);
        assert!(
            err.contains("field `process.selinuxLabel`: SELinux label")
                && err.contains("SELinux is not enabled in this kernel"),
            "{err}"
        );
        let mut spec = default_spec(&["true"]);
        spec["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0:c1,c2");
        let err = refused(&rt, &spec);
        assert!(err.contains("field `linux.mountLabel`"), "{err}");
    }
    let mut spec = default_spec(&["true"]);
    spec["process"]["apparmorProfile"] = json!("two\nlines");
    let err = refused(&rt, &spec);
    assert!(err.contains("field `process.apparmorProfile`"), "{err}");
}

#[test]
fn features_lists_only_what_works_here() {
    let rt = Rt::new();
    let features: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    let linux = &features["linux"];
    assert_eq!(linux["netDevices"]["enabled"], json!(true));
    // Every listed memory policy mode is accepted by the runtime (node 0
    // for the modes that need nodes); the kernel may still refuse a mode it
    // is too old for, which `create` then names.
    let modes = linux["memoryPolicy"]["modes"].as_array().unwrap();
    assert!(modes.contains(&json!("MPOL_BIND")), "{linux}");
    for mode in modes {
        let mut spec = default_spec(&["true"]);
        let nodes = match mode.as_str().unwrap() {
            "MPOL_DEFAULT" | "MPOL_LOCAL" => json!(null),
            _ => json!("0"),
        };
        spec["linux"]["memoryPolicy"] = json!({"mode": mode, "nodes": nodes});
        if nodes.is_null() {
            spec["linux"]["memoryPolicy"]
                .as_object_mut()
                .unwrap()
                .remove("nodes");
        }
        let (code, _, err) = rt.run_bundle(&Bundle::new(&spec));
        assert!(
            code == 0 || err.contains("cannot set linux.memoryPolicy"),
            "{mode}: {err}"
        );
    }
    // Every listed namespace can be created (a user namespace with its
    // maps), the time namespace included.
    let listed: Vec<String> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let mut spec = default_spec(&["true"]);
    spec["linux"]["namespaces"] = json!(listed
        .iter()
        .map(|t| json!({"type": t}))
        .collect::<Vec<_>>());
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = rt.sh(
        spec,
        "for f in /proc/self/ns/*; do echo $(basename $f) $(readlink $f); done",
    );
    for ns in &listed {
        let file = match ns.as_str() {
            "mount" => "mnt",
            "network" => "net",
            other => other,
        };
        let host = std::fs::read_link(format!("/proc/self/ns/{file}")).unwrap();
        let inside = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{file} ")))
            .unwrap_or_else(|| panic!("{ns}: no /proc/self/ns/{file} in {out}"));
        assert_ne!(Path::new(inside), host, "{ns} is the host's: {out}");
    }
    for ns in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(
            listed.iter().any(|l| l == ns),
            "{ns} missing from {listed:?}"
        );
    }
}
