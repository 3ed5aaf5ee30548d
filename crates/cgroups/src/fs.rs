//! The cgroupfs manager: the [`Manager`] operations on a [`Cgroup`]
//! (create, join, freeze/thaw, pids, kill, destroy), with `set` handed to
//! `resources` and `stats` to `stats`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroup::{Cgroup, Loc};
use crate::files::{read, write};
use crate::mounts::Hierarchy;
use crate::{Error, Manager, Stats};

/// Creates the cgroup's directories: cpuset filled in v1, controllers
/// enabled down the path in v2.
fn make_dirs(cg: &Cgroup) -> Result<(), Error> {
    for d in &cg.v1 {
        mkdir_all(&d.path)?;
        if d.controllers.iter().any(|c| c == "cpuset") {
            fill_cpuset(&d.mountpoint, &d.path)?;
        }
    }
    if let Some(d) = &cg.v2 {
        mkdir_all(&d.path)?;
        enable_controllers(&d.mountpoint, &d.path);
    }
    Ok(())
}

/// Freezes or thaws and waits until the kernel reports it done (v1
/// passes through FREEZING; the request is repeated while it lingers).
/// A freeze that never completes is undone.
fn set_frozen(cg: &Cgroup, frozen: bool) -> Result<(), Error> {
    let what = if frozen { "freezing" } else { "thawing" };
    match cg.freezer()? {
        Loc::V1(dir) => {
            let file = dir.join("freezer.state");
            let want = if frozen { "FROZEN" } else { "THAWED" };
            let mut state = String::new();
            for attempt in 0..2000u32 {
                if attempt % 50 == 0 {
                    write(&file, want)?;
                }
                state = read(&file)?.trim().to_string();
                if state == want {
                    return Ok(());
                }
                sleep(Duration::from_millis(1 + u64::from(attempt.min(9))));
            }
            if frozen {
                let _ = write(&file, "THAWED");
            }
            Err(Error::Freeze {
                what,
                path: dir.to_path_buf(),
                state,
            })
        }
        Loc::V2(dir) => {
            write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
            wait_v2_frozen(dir, frozen, what)
        }
    }
}

impl Manager for Cgroup {
    fn apply(&self, pid: i32) -> Result<(), Error> {
        make_dirs(self)?;
        self.join(pid)
    }

    fn create(&self) -> Result<(), Error> {
        make_dirs(self)
    }

    fn set(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), Error> {
        if let Some(missing) = self.paths().into_iter().find(|p| !p.is_dir()) {
            return Err(Error::InvalidPath {
                path: missing.display().to_string(),
                reason:
                    "the cgroup does not exist: apply() it first (or the container was deleted)"
                        .into(),
            });
        }
        crate::resources::set(self, resources)
    }

    fn pids(&self) -> Result<Vec<i32>, Error> {
        let Some(dir) = self.procs_dir() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        collect_pids(dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn freeze(&self) -> Result<(), Error> {
        set_frozen(self, true)
    }

    fn thaw(&self) -> Result<(), Error> {
        set_frozen(self, false)
    }

    fn stats(&self) -> Result<Stats, Error> {
        crate::stats::collect(self)
    }

    fn oom_kills(&self) -> Result<u64, Error> {
        crate::stats::oom_kills(self)
    }

    fn destroy(&self) -> Result<(), Error> {
        for p in self.paths() {
            remove_tree(&p)?;
        }
        Ok(())
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.v1.iter().map(|d| d.path.clone()).collect();
        out.extend(self.v2.iter().map(|d| d.path.clone()));
        out
    }

    fn join(&self, pid: i32) -> Result<(), Error> {
        if pid <= 0 {
            return Err(Error::InvalidPath {
                path: self
                    .paths()
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                reason: format!("cannot move pid {pid} into it: give a real process id"),
            });
        }
        for p in self.paths() {
            write(&p.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn kill_all(&self, signal: i32) -> Result<(), Error> {
        let sig = Signal::try_from(signal).map_err(|err| Error::Kill {
            pid: 0,
            signal,
            err,
        })?;
        let frozen = self.procs_dir().is_some_and(Path::exists) && self.freeze().is_ok();
        let mut result = Ok(());
        for pid in self.pids()? {
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(err) => result = Err(Error::Kill { pid, signal, err }),
            }
        }
        if frozen {
            match self.thaw() {
                // Its processes exited and their owner removed it meanwhile.
                Err(_) if !matches!(self.freezer(), Ok(Loc::V1(d) | Loc::V2(d)) if d.exists()) => {}
                thawed => thawed?,
            }
        }
        result
    }

    fn is_frozen(&self) -> Result<bool, Error> {
        match self.freezer()? {
            Loc::V1(dir) => Ok(read(&dir.join("freezer.state"))?.trim() == "FROZEN"),
            Loc::V2(dir) => Ok(read(&dir.join("cgroup.freeze"))?.trim() == "1"),
        }
    }

    fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }
}

fn mkdir_all(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|err| Error::Create {
        path: path.to_path_buf(),
        err,
    })
}

/// In v1 cpuset a new cgroup starts with empty cpus/mems and refuses tasks:
/// copy them from the parent at every level below the mount point.
fn fill_cpuset(mountpoint: &Path, path: &Path) -> Result<(), Error> {
    let Ok(rel) = path.strip_prefix(mountpoint) else {
        return Ok(());
    };
    let mut cur = mountpoint.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&cur.join(file))?.trim().is_empty() {
                let value = read(&parent.join(file))?;
                write(&cur.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

/// Enables, best effort (like runc), every available controller in
/// cgroup.subtree_control from the mount point down to `path`'s parent.
/// A controller that cannot be enabled shows up later as a missing file
/// when a resource needs it.
fn enable_controllers(mountpoint: &Path, path: &Path) {
    let Ok(rel) = path.strip_prefix(mountpoint) else {
        return;
    };
    let mut cur = mountpoint.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for comp in comps {
        let Ok(available) = read(&cur.join("cgroup.controllers")) else {
            return;
        };
        let enabled = read(&cur.join("cgroup.subtree_control")).unwrap_or_default();
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            let ctl = cur.join("cgroup.subtree_control");
            if write(&ctl, &wanted.join(" ")).is_err() {
                for w in &wanted {
                    let _ = write(&ctl, w);
                }
            }
        }
        cur.push(comp);
    }
}

fn wait_v2_frozen(dir: &Path, frozen: bool, what: &'static str) -> Result<(), Error> {
    let events = dir.join("cgroup.events");
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let mut state = String::new();
    for attempt in 0..2000u32 {
        let text = read(&events)?;
        if text.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        state = text
            .lines()
            .find(|l| l.starts_with("frozen"))
            .unwrap_or_default()
            .to_string();
        sleep(Duration::from_millis(1 + u64::from(attempt.min(9))));
    }
    Err(Error::Freeze {
        what,
        path: dir.to_path_buf(),
        state,
    })
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<(), Error> {
    let file = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::Read { path: file, err }),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let pid = line.trim().parse().map_err(|_| Error::Parse {
            path: file.clone(),
            content: line.to_string(),
        })?;
        out.push(pid);
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                err,
            })
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// Removes `dir` and its child cgroups, deepest first, retrying on EBUSY
/// (the kernel keeps a cgroup busy briefly after its last process exits).
fn remove_tree(dir: &Path) -> Result<(), Error> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let mut delay = Duration::from_millis(2);
    for attempt in 0.. {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 30 => {
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(err) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    err,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The cgroup2 code paths on the real cgroup2 mount: on a hybrid machine
    //! that is the unified mount with v1 hidden, on a pure v2 machine the
    //! normal layout. Needs root.

    use super::*;
    use crate::mounts::Mounts;
    use std::process::{Command, Stdio};

    fn v2_only(test: &str) -> Cgroup {
        let mut mounts = Mounts::detect().expect("mountinfo");
        assert!(
            mounts.v2.is_some(),
            "this test needs a cgroup2 mount (hybrid or pure v2 machine)"
        );
        mounts.v1.clear();
        let path = format!("/berth-unit-v2-{test}-{}", std::process::id());
        Cgroup::with_mounts(mounts, &path, test).expect("manager")
    }

    #[test]
    fn cgroup2_apply_freeze_thaw_kill_destroy() {
        let m = v2_only("freeze");
        assert_eq!(m.hierarchy(), Hierarchy::V2);
        let mut child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let result = (|| -> Result<(), Error> {
            m.apply(pid as i32)?;
            assert_eq!(m.pids()?, vec![pid as i32]);
            m.freeze()?;
            assert!(m.is_frozen()?);
            let events = read(&m.paths()[0].join("cgroup.events"))?;
            assert!(events.contains("frozen 1"), "{events}");
            m.thaw()?;
            assert!(!m.is_frozen()?);
            let stats = m.stats()?;
            assert_eq!(
                stats.pids.current, 0,
                "no v2 pids controller here: {stats:?}"
            );
            m.kill_all(libc::SIGKILL)?;
            Ok(())
        })();
        let _ = child.kill();
        let _ = child.wait();
        let destroyed = m.destroy();
        result.expect("cgroup2 operations");
        destroyed.expect("destroy");
        assert!(!m.paths()[0].exists());
    }

    #[test]
    fn cgroup2_unified_keys_are_written_and_bad_keys_refused() {
        let m = v2_only("unified");
        m.create().expect("create");
        let m = Cgroup::from_paths(&m.paths()).expect("reopen");
        let result = (|| {
            let r: oci_spec::runtime::LinuxResources =
                serde_json_like(r#"{"unified":{"cgroup.max.descendants":"3"}}"#);
            m.set(&r)?;
            let v = read(&m.paths()[0].join("cgroup.max.descendants"))?;
            assert_eq!(v.trim(), "3");
            let r: oci_spec::runtime::LinuxResources =
                serde_json_like(r#"{"unified":{"../escape":"1"}}"#);
            let err = m.set(&r).expect_err("path-like key refused");
            assert!(err.to_string().contains("../escape"), "{err}");
            Ok::<(), Error>(())
        })();
        let destroyed = m.destroy();
        result.expect("unified");
        destroyed.expect("destroy");
    }

    /// Runs `sh -c 'read go; SCRIPT'` inside `m` and returns its output.
    fn sh_in(m: &Cgroup, script: &str) -> String {
        use std::io::Write as _;
        let busybox = berth_testutil::require_peer(berth_testutil::BUSYBOX);
        let mut child = Command::new(busybox)
            .args(["sh", "-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn busybox sh");
        let joined = m.apply(child.id() as i32);
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let out = child.wait_with_output().expect("wait for sh");
        joined.expect("apply");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn cgroup2_device_rules_are_enforced_by_an_ebpf_program() {
        let m = v2_only("devices");
        m.create().expect("create");
        let probe =
            "if (exec 3</dev/kmsg) 2>/dev/null; then echo kmsg-open; else echo kmsg-denied; fi; \
                     echo x >/dev/null && echo null-ok";
        let result = (|| {
            assert_eq!(sh_in(&m, probe), "kmsg-open\nnull-ok\n", "before any rule");
            let deny_all: oci_spec::runtime::LinuxResources =
                serde_json_like(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#);
            m.set(&deny_all)?;
            assert_eq!(crate::bpf::attached_count(&m.paths()[0]).unwrap(), 1);
            assert_eq!(
                sh_in(&m, probe),
                "kmsg-denied\nnull-ok\n",
                "deny-all + defaults"
            );
            let allow_kmsg: oci_spec::runtime::LinuxResources = serde_json_like(
                r#"{"devices":[{"allow":false,"access":"rwm"},
                    {"allow":true,"type":"c","major":1,"minor":11,"access":"r"}]}"#,
            );
            m.set(&allow_kmsg)?;
            assert_eq!(
                crate::bpf::attached_count(&m.paths()[0]).unwrap(),
                1,
                "the new program replaces the old one"
            );
            assert_eq!(sh_in(&m, probe), "kmsg-open\nnull-ok\n", "explicit allow");
            Ok::<(), Error>(())
        })();
        let _ = m.kill_all(libc::SIGKILL);
        let destroyed = m.destroy();
        result.expect("device rules");
        destroyed.expect("destroy");
    }

    fn serde_json_like(json: &str) -> oci_spec::runtime::LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }
}
