//! A container's resource limits with podman's names, units and rules:
//! cgroup limits (`--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
//! `--cpuset-cpus`, `--pids-limit`) into `linux.resources`, rlimits
//! (`--ulimit`), namespaced sysctls (`--sysctl`), `--oom-score-adj` and the
//! size of /dev/shm (`--shm-size`).
//!
//! Sizes are bytes, or a number with a binary unit: `b`, `k`, `m`, `g`,
//! `t`, `p` (any case, optionally followed by `b` or `ib`: 64m = 64mb =
//! 64MiB = 67108864); fractions are allowed (1.5g).

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The smallest memory limit podman (and the kernel's accounting, in
/// practice) accepts.
pub const MIN_MEMORY: i64 = 6 << 20;

/// The CFS period `--cpus` is expressed in (µs), as podman.
pub const CPU_PERIOD: u64 = 100_000;

/// A container's limits; `None`/empty fields leave the defaults.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`/`-m`), at least [`MIN_MEMORY`].
    pub memory: Option<i64>,
    /// Memory plus swap in bytes, -1 for unlimited swap (`--memory-swap`);
    /// needs `memory` and must not be below it. Unset with `memory` set:
    /// twice `memory` when the host accounts swap (podman's default).
    pub memory_swap: Option<i64>,
    /// CPUs (`--cpus`): a CFS quota of `cpus` × [`CPU_PERIOD`] per period;
    /// 0 means no limit.
    pub cpus: Option<f64>,
    /// Relative CPU weight (`--cpu-shares`/`-c`; cgroup v1 cpu.shares,
    /// converted to cpu.weight on cgroup v2).
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (`--cpuset-cpus`, e.g. "0-2,4").
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (`--pids-limit`); 0 or -1: unlimited.
    pub pids_limit: Option<i64>,
    /// rlimits (`--ulimit`), each replacing the default of its type.
    pub ulimits: Vec<Ulimit>,
    /// Namespaced sysctls (`--sysctl`), see [`parse_sysctl`].
    pub sysctls: Vec<(String, String)>,
    /// The init's OOM score adjustment, -1000..=1000 (`--oom-score-adj`).
    pub oom_score_adj: Option<i32>,
    /// Size of /dev/shm in bytes (`--shm-size`; default 64m; 0: unlimited).
    pub shm_size: Option<u64>,
}

fn invalid(what: &str, text: &str, reason: impl Into<String>) -> Error {
    Error::invalid(format!("{what} {text:?}"), reason)
}

/// A size in bytes (see the module documentation for the units).
pub fn parse_size(what: &str, text: &str) -> Result<u64> {
    let bad = || {
        invalid(
            what,
            text,
            "expected a size: bytes, or a number with a unit b, k, m, g, t or p (e.g. 64m, 1.5g)",
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let mut chars = unit.chars();
    let shift = match chars.next() {
        None | Some('b') if unit.len() <= 1 => 0,
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => return Err(bad()),
    };
    if shift > 0 && !matches!(chars.as_str(), "" | "b" | "ib") {
        return Err(bad());
    }
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid(what, text, "too large"));
    }
    Ok(bytes as u64)
}

/// `--memory-swap`: a size, or -1 for unlimited swap.
pub fn parse_memory_swap(what: &str, text: &str) -> Result<i64> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    Ok(parse_size(what, text)? as i64)
}

/// `--cpus`: a non-negative decimal number of CPUs.
pub fn parse_cpus(what: &str, text: &str) -> Result<f64> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(invalid(
            what,
            text,
            "expected a number of CPUs, e.g. 0.5 or 2",
        )),
    }
}

/// `--cpuset-cpus`: CPU numbers and ranges, comma-separated ("0-2,4").
pub fn parse_cpuset(what: &str, text: &str) -> Result<String> {
    let ok = !text.is_empty()
        && text.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let a = ends.next().and_then(|a| a.parse::<u32>().ok());
            match (a, ends.next()) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => b.parse::<u32>().is_ok_and(|b| b >= a),
                _ => false,
            }
        });
    if ok {
        Ok(text.to_string())
    } else {
        Err(invalid(
            what,
            text,
            "expected CPU numbers and ranges, e.g. 0-2,4",
        ))
    }
}

/// One rlimit: its spec name (`RLIMIT_NOFILE`), soft and hard values
/// (u64::MAX is unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// `RLIMIT_*`.
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The `--ulimit` names (podman's, after setrlimit(2)).
const ULIMITS: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl Ulimit {
    /// `NAME=SOFT[:HARD]` (`nofile=1024:2048`); `-1` or `unlimited` for
    /// no limit; HARD defaults to SOFT.
    pub fn parse(text: &str) -> Result<Ulimit> {
        let what = "--ulimit";
        let (name, values) = text.split_once('=').ok_or_else(|| {
            invalid(
                what,
                text,
                "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048",
            )
        })?;
        let name = name.trim().to_ascii_lowercase();
        if !ULIMITS.contains(&name.as_str()) {
            return Err(invalid(
                what,
                text,
                format!("unknown limit {name:?}: use one of {}", ULIMITS.join(", ")),
            ));
        }
        let value = |v: &str| -> Result<u64> {
            match v.trim() {
                "-1" | "unlimited" => Ok(u64::MAX),
                n => n.parse().map_err(|_| {
                    invalid(
                        what,
                        text,
                        format!("{n:?} is not a number (or -1 for unlimited)"),
                    )
                }),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(invalid(
                what,
                text,
                "the soft limit is above the hard limit",
            ));
        }
        Ok(Ulimit {
            name: format!("RLIMIT_{}", name.to_ascii_uppercase()),
            soft,
            hard,
        })
    }
}

/// `--sysctl KEY=VALUE` (`/` works in place of `.`). Only sysctls of the
/// container's own namespaces are allowed: IPC (`kernel.msg*`,
/// `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`), network (`net.*`) and UTS
/// (`kernel.domainname`); the others would change the host.
pub fn parse_sysctl(text: &str) -> Result<(String, String)> {
    let what = "--sysctl";
    let (key, value) = text
        .split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .ok_or_else(|| invalid(what, text, "expected KEY=VALUE, e.g. net.ipv4.ip_forward=1"))?;
    let key = key.trim().replace('/', ".");
    // berth run gives every container its own IPC, network and UTS
    // namespaces; the hostname has a flag of its own.
    let namespaced = berth_runtime::spec::sysctl_namespace(&key).is_some();
    if !namespaced || key == "kernel.hostname" {
        let hint = if key == "kernel.hostname" {
            "set the hostname with --hostname".to_string()
        } else {
            format!(
                "{key} is not namespaced: setting it would change the host; allowed are the \
                 IPC ones (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*), net.* and \
                 kernel.domainname"
            )
        };
        return Err(invalid(what, text, hint));
    }
    Ok((key, value.to_string()))
}

/// `--oom-score-adj`: -1000..=1000.
pub fn parse_oom_score_adj(what: &str, text: &str) -> Result<i32> {
    match text.trim().parse::<i32>() {
        Ok(v) if (-1000..=1000).contains(&v) => Ok(v),
        _ => Err(invalid(what, text, "expected a number from -1000 to 1000")),
    }
}

/// Memory plus swap when only `--memory` is given: twice the limit, as
/// podman; twice a limit past i64::MAX / 2 is no limit (-1).
fn default_swap(memory: i64) -> i64 {
    memory.checked_mul(2).unwrap_or(-1)
}

/// Whether this host limits swap in memory cgroups (cgroup v1
/// `memory.memsw.*`, which needs swapaccount=1; cgroup v2 `memory.swap.max`).
fn host_accounts_swap() -> bool {
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        return true;
    }
    // cgroup v2: the file exists in every non-root cgroup with the memory
    // controller; look at this process's own.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    own.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .is_some_and(|p| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(p.trim_start_matches('/'))
                .join("memory.swap.max")
                .exists()
        })
}

impl Limits {
    /// Checks the limits against each other (the error names the flag).
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(Error::invalid(
                    format!("--memory {m}"),
                    "the minimum memory limit is 6m (6291456 bytes)",
                ));
            }
        }
        match (self.memory, self.memory_swap) {
            (None, Some(s)) if s > 0 => {
                return Err(Error::invalid(
                    format!("--memory-swap {s}"),
                    "a swap limit needs a memory limit: give --memory too",
                ))
            }
            (Some(m), Some(s)) if s > 0 && s < m => {
                return Err(Error::invalid(
                    format!("--memory-swap {s}"),
                    format!("is memory plus swap, so it must be at least --memory ({m}); -1 means unlimited swap"),
                ))
            }
            _ => {}
        }
        if let Some(c) = self.cpus {
            if c > 0.0 && (c * CPU_PERIOD as f64).round() < 1000.0 {
                return Err(Error::invalid(
                    format!("--cpus {c}"),
                    "the smallest CPU limit is 0.01 (the kernel's minimum quota of 1 ms per 100 ms)",
                ));
            }
        }
        Ok(())
    }

    /// Writes the limits into `spec` (the JSON of a runtime spec).
    pub(crate) fn apply(&self, spec: &mut Value) -> Result<()> {
        self.validate()?;
        let resources = &mut spec["linux"]["resources"];
        if let Some(m) = self.memory {
            resources["memory"]["limit"] = json!(m);
            let swap = match self.memory_swap {
                Some(s) if s != 0 => Some(s),
                _ if host_accounts_swap() => Some(default_swap(m)),
                _ => None,
            };
            if let Some(s) = swap {
                resources["memory"]["swap"] = json!(s);
            }
        } else if self.memory_swap == Some(-1) {
            resources["memory"]["swap"] = json!(-1);
        }
        if let Some(c) = self.cpus.filter(|c| *c > 0.0) {
            resources["cpu"]["quota"] = json!((c * CPU_PERIOD as f64).round() as i64);
            resources["cpu"]["period"] = json!(CPU_PERIOD);
        }
        if let Some(s) = self.cpu_shares.filter(|s| *s > 0) {
            resources["cpu"]["shares"] = json!(s);
        }
        if let Some(c) = &self.cpuset_cpus {
            resources["cpu"]["cpus"] = json!(c);
        }
        if let Some(p) = self.pids_limit {
            resources["pids"]["limit"] = json!(if p <= 0 { -1 } else { p });
        }
        let process = &mut spec["process"];
        if !self.ulimits.is_empty() {
            let mut rlimits: Vec<Value> =
                process["rlimits"].as_array().cloned().unwrap_or_default();
            for u in &self.ulimits {
                rlimits.retain(|r| r["type"] != u.name.as_str());
                rlimits.push(json!({"type": u.name, "soft": u.soft, "hard": u.hard}));
            }
            process["rlimits"] = json!(rlimits);
        }
        if let Some(adj) = self.oom_score_adj {
            process["oomScoreAdj"] = json!(adj);
        }
        if !self.sysctls.is_empty() {
            let sysctl = &mut spec["linux"]["sysctl"];
            for (k, v) in &self.sysctls {
                sysctl[k] = json!(v);
            }
        }
        if let Some(size) = self.shm_size {
            for m in spec["mounts"].as_array_mut().into_iter().flatten() {
                if m["destination"] == "/dev/shm" {
                    if let Some(opts) = m["options"].as_array_mut() {
                        opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
                        opts.push(json!(format!("size={size}")));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_podmans_binary_units() {
        for (text, bytes) in [
            ("1024", 1024),
            ("10b", 10),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MiB", 64 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2 k", 2048),
            ("1t", 1 << 40),
        ] {
            assert_eq!(parse_size("--memory", text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "m", "-1", "1x", "1.", ".5g", "1gg", "1kibb", "1e3"] {
            let err = parse_size("--memory", bad).unwrap_err().to_string();
            assert!(
                err.contains("--memory") && err.contains("expected a size"),
                "{bad}: {err}"
            );
        }
        assert_eq!(parse_memory_swap("--memory-swap", "-1").unwrap(), -1);
    }

    #[test]
    fn cpus_become_quota_and_period() {
        let mut spec = json!({"process": {}, "linux": {}, "mounts": []});
        let limits = Limits {
            cpus: Some(parse_cpus("--cpus", "0.5").unwrap()),
            cpu_shares: Some(512),
            cpuset_cpus: Some(parse_cpuset("--cpuset-cpus", "0-1,3").unwrap()),
            pids_limit: Some(0),
            ..Default::default()
        };
        limits.apply(&mut spec).unwrap();
        let cpu = &spec["linux"]["resources"]["cpu"];
        assert_eq!(
            (cpu["quota"].as_i64(), cpu["period"].as_u64()),
            (Some(50_000), Some(100_000))
        );
        assert_eq!(cpu["shares"], 512);
        assert_eq!(cpu["cpus"], "0-1,3");
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], -1);
        for bad in ["x", "-1", "1-", "3-1", ""] {
            assert!(parse_cpuset("--cpuset-cpus", bad).is_err(), "{bad}");
        }
        assert!(parse_cpus("--cpus", "-0.5").is_err());
        let tiny = Limits {
            cpus: Some(0.001),
            ..Default::default()
        };
        assert!(tiny.validate().unwrap_err().to_string().contains("0.01"));
    }

    #[test]
    fn memory_and_swap_follow_podmans_rules() {
        let mut spec = json!({"process": {}, "linux": {}, "mounts": []});
        Limits {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            ..Default::default()
        }
        .apply(&mut spec)
        .unwrap();
        assert_eq!(
            spec["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20, "swap": 128 << 20})
        );
        for (memory, swap, says) in [
            (Some(1 << 20), None, "minimum"),
            (None, Some(64 << 20), "needs a memory limit"),
            (Some(64 << 20), Some(32 << 20), "at least --memory"),
        ] {
            let l = Limits {
                memory,
                memory_swap: swap,
                ..Default::default()
            };
            let err = l.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        // Without --memory-swap: twice the limit, and twice a limit past
        // i64::MAX / 2 is unlimited rather than an overflow.
        assert_eq!(default_swap(64 << 20), 128 << 20);
        let huge = parse_size("--memory", "5000p").unwrap() as i64;
        assert_eq!(default_swap(huge), -1);
    }

    #[test]
    fn ulimits_sysctls_oom_and_shm() {
        assert_eq!(
            Ulimit::parse("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(Ulimit::parse("core=-1").unwrap().hard, u64::MAX);
        for (bad, says) in [
            ("nofile", "NAME=SOFT"),
            ("files=1", "unknown limit"),
            ("nofile=2:1", "soft limit is above"),
            ("nofile=x", "not a number"),
        ] {
            let err = Ulimit::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(
            parse_sysctl("net/ipv4/ip_forward=1").unwrap(),
            ("net.ipv4.ip_forward".into(), "1".into())
        );
        assert!(parse_sysctl("kernel.sem=250 32000 32 128").is_ok());
        for (bad, says) in [
            ("kernel.pid_max=1", "not namespaced"),
            ("kernel.hostname=x", "--hostname"),
            ("=1", "KEY=VALUE"),
        ] {
            let err = parse_sysctl(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(parse_oom_score_adj("--oom-score-adj", "1001").is_err());
        let mut spec = json!({
            "process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]},
            "linux": {},
            "mounts": [{"destination": "/dev/shm", "options": ["nosuid", "size=65536k"]}]
        });
        Limits {
            ulimits: vec![
                Ulimit::parse("nofile=10:20").unwrap(),
                Ulimit::parse("nproc=5").unwrap(),
            ],
            sysctls: vec![parse_sysctl("kernel.shmmax=4096").unwrap()],
            oom_score_adj: Some(-500),
            shm_size: Some(parse_size("--shm-size", "128m").unwrap()),
            ..Default::default()
        }
        .apply(&mut spec)
        .unwrap();
        assert_eq!(
            spec["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}, {"type": "RLIMIT_NPROC", "soft": 5, "hard": 5}])
        );
        assert_eq!(spec["process"]["oomScoreAdj"], -500);
        assert_eq!(spec["linux"]["sysctl"]["kernel.shmmax"], "4096");
        assert_eq!(
            spec["mounts"][0]["options"],
            json!(["nosuid", "size=134217728"])
        );
    }
}
