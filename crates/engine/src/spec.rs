//! Image config → OCI runtime spec: containerd's default Linux spec, the
//! image's config (User, Env, Entrypoint/Cmd, WorkingDir, Labels,
//! StopSignal) and the user's overrides (the mounts resolved by
//! [`crate::volumes`], the image's Volumes among them), in containerd's order; then the
//! container's security settings ([`Security`]: capabilities, seccomp,
//! `--privileged`) and limits ([`Limits`]).

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Mount, Spec};
use serde_json::json;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::security::Security;
use crate::user::resolve_user;

/// The PATH a container gets when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The annotation carrying the image's StopSignal (OCI image-spec key).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";

/// containerd's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `path` (a path inside the container, from an image or a flag) made
/// absolute-canonical without touching any file system: `.` and empty
/// components dropped, `..` taking one back. A `..` above `/` is refused,
/// naming `what`: an image asking for it is hostile or broken, and a
/// caller joining the result onto a host directory must never leave it.
pub fn clean_path(what: &str, path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::invalid(
            format!("{what} {path:?}"),
            "must be an absolute path",
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::invalid(
                        format!("{what} {path:?}"),
                        "leads out of the container's root with `..`",
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// What the user overrides on top of the image config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces the image's Entrypoint (and drops its Cmd, as docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries added to (or replacing) the image's Env.
    pub env: Vec<String>,
    /// Replaces the image's User.
    pub user: Option<String>,
    /// Replaces the image's WorkingDir.
    pub workdir: Option<String>,
    /// The container's hostname.
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// Mounts added after the defaults, each replacing a default at the
    /// same destination: the volumes, binds and tmpfs mounts the engine
    /// resolved (`crate::volumes`), the image's Volumes among them.
    pub mounts: Vec<Mount>,
    /// Allocate a terminal.
    pub terminal: bool,
    /// Supplementary groups added to the user's (`--group-add`): group
    /// names resolved in the image's /etc/group, or numeric gids.
    pub group_add: Vec<String>,
    /// Labels (`--label`), added to the image's Labels (replacing those of
    /// the same key); both become the spec's annotations.
    pub labels: Vec<(String, String)>,
    /// Capabilities, seccomp, no_new_privs, `--privileged`.
    pub security: Security,
    /// cgroup limits, rlimits, sysctls, OOM score, /dev/shm size.
    pub limits: Limits,
    /// `--init`: this static binary is bind-mounted read-only at
    /// [`INIT_PATH`] and runs as pid 1 as `INIT_PATH INIT_ARG -- ARGS...`
    /// (berth itself answers [`INIT_ARG`] with
    /// `berth_runtime::mini_init`), the container's command its child.
    pub init: Option<PathBuf>,
}

/// Where `--init`'s binary appears in the container (docker's place).
pub const INIT_PATH: &str = "/dev/init";
/// The first argument that makes berth's binary the container's init.
pub const INIT_ARG: &str = "container-init";

/// `--label KEY[=VALUE]` (a missing value is empty, as podman).
pub fn parse_label(text: &str) -> Result<(String, String)> {
    let (k, v) = text.split_once('=').unwrap_or((text, ""));
    if k.trim().is_empty() {
        return Err(Error::invalid(
            format!("--label {text:?}"),
            "expected KEY=VALUE",
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Reads an `--env-file`: one `KEY=value` per line (the value taken as it
/// is, quotes included), `KEY` alone for this process's value of KEY
/// (skipped when unset), blank lines and lines starting with `#` ignored.
/// The entries come in file order, for [`Overrides::env`].
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut env = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::invalid(
                format!("--env-file {} line {}", path.display(), n + 1),
                format!("{key:?} is not a variable name: expected KEY=value or KEY"),
            ));
        }
        match value {
            Some(v) => env.push(format!("{key}={v}")),
            None => {
                if let Some(v) = std::env::var_os(key) {
                    env.push(format!("{key}={}", v.to_string_lossy()));
                }
            }
        }
    }
    Ok(env)
}

/// The gids of `--group-add` entries: numbers as they are, names looked
/// up in the image's /etc/group.
fn resolve_groups(rootfs: &Path, groups: &[String]) -> Result<Vec<u32>> {
    groups
        .iter()
        .map(|g| match g.trim().parse::<u32>() {
            Ok(gid) if gid <= berth_runtime::spec::MAX_ID => Ok(gid),
            Ok(gid) => Err(Error::invalid(
                format!("--group-add {gid}"),
                format!(
                    "out of range: gids run from 0 to {}",
                    berth_runtime::spec::MAX_ID
                ),
            )),
            Err(_) if g.trim() == "keep-groups" => Err(Error::invalid(
                "--group-add keep-groups",
                "not supported: berth does not pass the caller's supplementary groups into a container; give the groups by name or number",
            )),
            // "0:NAME" resolves NAME through the image's /etc/group.
            Err(_) => Ok(resolve_user(rootfs, &format!("0:{}", g.trim()))?.gid),
        })
        .collect()
}

fn merge_env(env: &mut Vec<String>, entries: &[String]) {
    for entry in entries {
        let key = entry.split('=').next().unwrap_or(entry);
        match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
}

/// containerd's default Linux spec (`oci.populateDefaultUnixSpec`) as JSON.
fn default_spec(rootfs: &Path) -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": false},
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "args": [],
            "env": [DEFAULT_PATH],
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": false
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Builds the runtime spec for running `config` from `rootfs`: containerd's
/// defaults, then the image config, then `overrides`. The user is resolved
/// through the rootfs's /etc/passwd and /etc/group.
pub fn spec_from_config(
    config: &ImageConfiguration,
    overrides: &Overrides,
    rootfs: &Path,
) -> Result<Spec> {
    let mut spec = default_spec(rootfs);
    let image = config.config().clone().unwrap_or_default();

    // Env: defaults, replaced/extended by the image's, then the user's.
    let mut env = vec![DEFAULT_PATH.to_string()];
    merge_env(&mut env, image.env().as_deref().unwrap_or_default());
    merge_env(&mut env, &overrides.env);

    // Args: docker's rules for Entrypoint/Cmd overrides.
    let (entrypoint, cmd) = match (&overrides.entrypoint, &overrides.cmd) {
        (Some(ep), cmd) => (ep.clone(), cmd.clone().unwrap_or_default()),
        (None, Some(cmd)) => (image.entrypoint().clone().unwrap_or_default(), cmd.clone()),
        (None, None) => (
            image.entrypoint().clone().unwrap_or_default(),
            image.cmd().clone().unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::invalid(
            "image config",
            "the image has neither Entrypoint nor Cmd; give a command to run",
        ));
    }

    let cwd = match &overrides.workdir {
        Some(w) => clean_path("working directory (--workdir)", w)?,
        None => match image.working_dir().as_deref().filter(|w| !w.is_empty()) {
            Some(w) => clean_path("the image's WorkingDir", w)?,
            None => "/".to_string(),
        },
    };

    let user_text = overrides
        .user
        .clone()
        .or_else(|| image.user().clone())
        .unwrap_or_default();
    let user = resolve_user(rootfs, &user_text)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    // A terminal gets a TERM, as podman gives it.
    if overrides.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }

    let process = &mut spec["process"];
    process["env"] = json!(env);
    process["args"] = match &overrides.init {
        Some(_) => json!([INIT_PATH, INIT_ARG, "--"]
            .into_iter()
            .map(String::from)
            .chain(args)
            .collect::<Vec<_>>()),
        None => json!(args),
    };
    process["cwd"] = json!(cwd);
    process["terminal"] = json!(overrides.terminal);
    process["user"] = json!({"uid": user.uid, "gid": user.gid});
    let mut gids = user.additional_gids.clone();
    for gid in resolve_groups(rootfs, &overrides.group_add)? {
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    if !gids.is_empty() {
        process["user"]["additionalGids"] = json!(gids);
    }
    if let Some(h) = &overrides.hostname {
        spec["hostname"] = json!(h);
    }
    spec["root"]["readonly"] = json!(overrides.read_only);

    // Annotations: image labels and stop signal.
    let mut annotations = serde_json::Map::new();
    if let Some(labels) = image.labels() {
        for (k, v) in labels {
            annotations.insert(k.clone(), json!(v));
        }
    }
    for (k, v) in &overrides.labels {
        annotations.insert(k.clone(), json!(v));
    }
    if let Some(sig) = image.stop_signal() {
        annotations.insert(STOP_SIGNAL_ANNOTATION.into(), json!(sig));
    }
    if !annotations.is_empty() {
        spec["annotations"] = serde_json::Value::Object(annotations);
    }

    // Volumes, binds and tmpfs mounts.
    let mounts = spec["mounts"]
        .as_array_mut()
        .expect("the default spec has mounts");
    mounts.retain(|m| {
        !overrides
            .mounts
            .iter()
            .any(|o| m["destination"].as_str() == o.destination().to_str())
    });
    for m in &overrides.mounts {
        mounts.push(json!(m));
    }

    if let Some(bin) = &overrides.init {
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.push(
                json!({"destination": INIT_PATH, "type": "bind", "source": bin,
                "options": ["bind", "ro", "nosuid", "nodev", "rprivate"]}),
            );
        }
    }
    overrides.security.apply(&mut spec)?;
    overrides.limits.apply(&mut spec)?;

    serde_json::from_value(spec).map_err(|e| Error::invalid("runtime spec", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> ImageConfiguration {
        let mut full = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        full["config"] = json;
        serde_json::from_value(full).unwrap()
    }

    fn rootfs() -> tempfile::TempDir {
        crate::user::tests::rootfs_with(
            "root:x:0:0::/root:/bin/sh\nweb:x:80:81::/:/bin/sh\n",
            "root:x:0:\nweb:x:81:\nlog:x:90:web\n",
        )
    }

    #[test]
    fn image_config_becomes_the_process() {
        let r = rootfs();
        let cfg = config(json!({
            "User": "web", "Env": ["PATH=/app/bin", "A=1"], "Entrypoint": ["/app/run"], "Cmd": ["--serve"],
            "WorkingDir": "/app", "Labels": {"org.example": "yes"}, "StopSignal": "SIGQUIT"
        }));
        let spec = spec_from_config(&cfg, &Overrides::default(), r.path()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &vec!["/app/run".to_string(), "--serve".into()]
        );
        assert_eq!(
            p.env().as_ref().unwrap(),
            &vec!["PATH=/app/bin".to_string(), "A=1".into(), "HOME=/".into()]
        );
        assert_eq!(p.cwd().to_str(), Some("/app"));
        assert_eq!((p.user().uid(), p.user().gid()), (80, 81));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![90]);
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(ann["org.example"], "yes");
        assert_eq!(ann[STOP_SIGNAL_ANNOTATION], "SIGQUIT");
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPS.len());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 5);
    }

    #[test]
    fn paths_are_cleaned_and_never_leave_the_root() {
        assert_eq!(clean_path("p", "/a/./b//c/").unwrap(), "/a/b/c");
        assert_eq!(clean_path("p", "/a/../b").unwrap(), "/b");
        assert_eq!(clean_path("p", "/").unwrap(), "/");
        for bad in ["/..", "/../x", "/a/../../etc", "relative"] {
            let err = clean_path("the image's WorkingDir", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("WorkingDir") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn hostile_workdirs_are_refused() {
        let r = rootfs();
        let cfg = config(json!({"Cmd": ["true"], "WorkingDir": "/../etc"}));
        let err = spec_from_config(&cfg, &Overrides::default(), r.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("WorkingDir"), "{err}");
        // Cleaned paths: "/a/../w" is "/w".
        let cfg = config(json!({"Cmd": ["true"], "WorkingDir": "/a/../w"}));
        let spec = spec_from_config(&cfg, &Overrides::default(), r.path()).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd().to_str(), Some("/w"));
    }

    #[test]
    fn overrides_follow_docker_rules() {
        let r = rootfs();
        let cfg = config(json!({"Entrypoint": ["/ep"], "Cmd": ["a"], "Env": ["X=1"]}));
        let o = Overrides {
            cmd: Some(vec!["b".into()]),
            env: vec!["X=2".into()],
            user: Some("0:81".into()),
            workdir: Some("/w".into()),
            hostname: Some("h".into()),
            read_only: true,
            mounts: vec![
                serde_json::from_value(json!({"destination": "/mnt", "type": "bind",
                "source": "/tmp", "options": ["rbind", "ro"]}))
                .unwrap(),
                serde_json::from_value(json!({"destination": "/run", "type": "tmpfs",
                "source": "tmpfs", "options": ["size=1k"]}))
                .unwrap(),
            ],
            ..Default::default()
        };
        let spec = spec_from_config(&cfg, &o, r.path()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &vec!["/ep".to_string(), "b".into()]
        );
        assert!(p.env().as_ref().unwrap().contains(&"X=2".to_string()));
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("PATH=/usr/local/sbin")));
        assert_eq!((p.user().uid(), p.user().gid()), (0, 81));
        assert_eq!(spec.hostname().as_deref(), Some("h"));
        assert!(spec.root().as_ref().unwrap().readonly().unwrap());
        let bind = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().to_str() == Some("/mnt"))
            .unwrap();
        assert!(bind.options().as_ref().unwrap().contains(&"ro".to_string()));
        // A mount at a default's destination replaces it.
        let runs: Vec<_> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination().to_str() == Some("/run"))
            .collect();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs[0].options().as_deref(),
            Some(&["size=1k".to_string()][..])
        );
        // A new entrypoint drops the image's Cmd.
        let o = Overrides {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        };
        let spec = spec_from_config(&cfg, &o, r.path()).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &vec!["/bin/sh".to_string()]
        );
    }

    #[test]
    fn labels_groups_security_and_limits_reach_the_spec() {
        let r = rootfs();
        let cfg =
            config(json!({"User": "web", "Cmd": ["x"], "Labels": {"a": "image", "b": "image"}}));
        let o = Overrides {
            labels: vec![parse_label("b=mine").unwrap(), parse_label("c").unwrap()],
            group_add: vec!["log".into(), "7".into(), "90".into()],
            security: Security {
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["SYS_ADMIN".into()],
                no_new_privileges: true,
                ..Default::default()
            },
            limits: Limits {
                memory: Some(64 << 20),
                pids_limit: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = spec_from_config(&cfg, &o, r.path()).unwrap();
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(
            (ann["a"].as_str(), ann["b"].as_str(), ann["c"].as_str()),
            ("image", "mine", "")
        );
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.user().additional_gids().as_ref().unwrap(),
            &vec![90, 7],
            "deduplicated"
        );
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.effective().as_ref().unwrap().len(), 1);
        let linux = spec.linux().as_ref().unwrap();
        let seccomp = linux.seccomp().as_ref().unwrap();
        assert!(
            seccomp
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.names().contains(&"mount".to_string())),
            "CAP_SYS_ADMIN allows mount"
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 10);
        let err = spec_from_config(
            &cfg,
            &Overrides {
                group_add: vec!["nosuch".into()],
                ..Default::default()
            },
            r.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"nosuch\""), "{err}");
    }

    #[test]
    fn env_files_follow_podmans_format() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e");
        std::env::set_var("BERTH_SPEC_ENV_FILE_PASS", "p");
        std::fs::write(
            &file,
            "# c\n\n  A=1\nB= spaced = \"q\"\nBERTH_SPEC_ENV_FILE_PASS\nBERTH_SPEC_ENV_FILE_UNSET\n",
        )
        .unwrap();
        assert_eq!(
            read_env_file(&file).unwrap(),
            ["A=1", "B= spaced = \"q\"", "BERTH_SPEC_ENV_FILE_PASS=p"]
        );
        std::fs::write(&file, "A B=1\n").unwrap();
        let err = read_env_file(&file).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("\"A B\""), "{err}");
        assert!(read_env_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn home_comes_from_passwd_unless_the_env_sets_it() {
        let r = rootfs();
        let home = |image_env: serde_json::Value| {
            let cfg = config(json!({"Env": image_env, "Cmd": ["sh"]}));
            let spec = spec_from_config(&cfg, &Overrides::default(), r.path()).unwrap();
            let env = spec.process().as_ref().unwrap().env().clone().unwrap();
            env.into_iter()
                .filter(|e| e.starts_with("HOME="))
                .collect::<Vec<_>>()
        };
        assert_eq!(home(json!([])), vec!["HOME=/root".to_string()]);
        assert_eq!(home(json!(["HOME=/srv"])), vec!["HOME=/srv".to_string()]);
    }

    #[test]
    fn unknown_user_and_missing_command_are_clear_errors() {
        let r = rootfs();
        let err = spec_from_config(
            &config(json!({"User": "ghost", "Cmd": ["x"]})),
            &Overrides::default(),
            r.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"ghost\""), "{err}");
        let err =
            spec_from_config(&config(json!({})), &Overrides::default(), r.path()).unwrap_err();
        assert!(
            err.to_string().contains("neither Entrypoint nor Cmd"),
            "{err}"
        );
    }
}
