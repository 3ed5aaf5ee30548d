//! Usage counters, shaped like the `data` of runc's `events --stats`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, Loc};
use crate::files::{keyed, num, opt_num, read};
use crate::Error;

/// Everything the cgroup files tell about a container's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time used and throttling.
    pub cpu: CpuStats,
    /// Memory usage and limits.
    pub memory: MemoryStats,
    /// Number of processes and their limit.
    pub pids: PidsStats,
    /// Block I/O counters.
    pub blkio: BlkioStats,
    /// Per huge page size ("2MB", "1GB") usage.
    pub hugetlb: HashMap<String, HugetlbStats>,
}

/// CPU accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    /// Time used.
    pub usage: CpuUsage,
    /// CFS bandwidth throttling.
    pub throttling: Throttling,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Total CPU time.
    pub total: u64,
    /// Per-CPU totals (v1 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Time in kernel mode.
    pub kernel: u64,
    /// Time in user mode.
    pub user: u64,
}

/// CFS throttling counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

/// Memory accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Page cache bytes.
    pub cache: u64,
    /// Memory usage.
    pub usage: MemoryEntry,
    /// Memory+swap (v1) or swap (v2) usage.
    pub swap: MemoryEntry,
    /// Kernel memory (v1).
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1).
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as read.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub raw: HashMap<String, u64>,
}

/// One memory counter set, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// The limit (u64::MAX-ish values mean unlimited).
    pub limit: u64,
    /// Current usage.
    pub usage: u64,
    /// Peak usage.
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Process counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Processes and threads now in the cgroup.
    pub current: u64,
    /// pids.max (0 = unlimited).
    pub limit: u64,
}

/// Block I/O counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioStats {
    /// Bytes read/written per device.
    #[serde(rename = "ioServiceBytesRecursive", default)]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations per device.
    #[serde(rename = "ioServicedRecursive", default)]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One block I/O counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// "Read", "Write", ...
    pub op: String,
    /// The counter.
    pub value: u64,
}

/// Huge page usage for one page size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HugetlbStats {
    /// Bytes in use.
    pub usage: u64,
    /// Peak bytes (v1).
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Huge page sizes of this machine as cgroup file names ("2MB", "1GB").
pub(crate) fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            })
        })
        .collect();
    out.sort();
    out
}

/// Reads every counter the mounted controllers offer.
/// How many processes of the cgroup the OOM killer has killed so far:
/// `oom_kill` of memory.events (v2) or memory.oom_control (v1); 0 without
/// a memory controller or on kernels that do not count.
pub(crate) fn oom_kills(m: &Cgroup) -> Result<u64, Error> {
    let file = match m.locate("memory") {
        Some(Loc::V1(d)) => d.join("memory.oom_control"),
        Some(Loc::V2(d)) => d.join("memory.events"),
        None => return Ok(0),
    };
    Ok(keyed(&file)?.get("oom_kill").copied().unwrap_or(0))
}

pub(crate) fn collect(m: &Cgroup) -> Result<Stats, Error> {
    let mut s = Stats::default();
    match m.locate("cpuacct") {
        Some(Loc::V1(d)) => {
            s.cpu.usage.total = opt_num(&d.join("cpuacct.usage"))?;
            let per = d.join("cpuacct.usage_percpu");
            if per.exists() {
                s.cpu.usage.percpu = read(&per)?
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
            // cpuacct.stat is in USER_HZ ticks (100 per second).
            let st = keyed(&d.join("cpuacct.stat"))?;
            s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * 10_000_000;
            s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * 10_000_000;
        }
        Some(Loc::V2(_)) | None => {}
    }
    match m.locate("cpu") {
        Some(Loc::V1(d)) => {
            let st = keyed(&d.join("cpu.stat"))?;
            s.cpu.throttling = Throttling {
                periods: st.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: st.get("throttled_time").copied().unwrap_or(0),
            };
        }
        Some(Loc::V2(d)) => {
            let st = keyed(&d.join("cpu.stat"))?;
            let us = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
            s.cpu.usage.total = us("usage_usec");
            s.cpu.usage.user = us("user_usec");
            s.cpu.usage.kernel = us("system_usec");
            s.cpu.throttling = Throttling {
                periods: st.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: us("throttled_usec"),
            };
        }
        None => {}
    }
    match m.locate("memory") {
        Some(Loc::V1(d)) => {
            let entry = |prefix: &str| -> Result<MemoryEntry, Error> {
                Ok(MemoryEntry {
                    limit: opt_num(&d.join(format!("{prefix}.limit_in_bytes")))?,
                    usage: opt_num(&d.join(format!("{prefix}.usage_in_bytes")))?,
                    max: opt_num(&d.join(format!("{prefix}.max_usage_in_bytes")))?,
                    failcnt: opt_num(&d.join(format!("{prefix}.failcnt")))?,
                })
            };
            s.memory.usage = entry("memory")?;
            s.memory.swap = entry("memory.memsw")?;
            s.memory.kernel = entry("memory.kmem")?;
            s.memory.kernel_tcp = entry("memory.kmem.tcp")?;
            s.memory.raw = keyed(&d.join("memory.stat"))?;
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
        Some(Loc::V2(d)) => {
            let events = keyed(&d.join("memory.events"))?;
            s.memory.usage = MemoryEntry {
                limit: opt_num(&d.join("memory.max"))?,
                usage: opt_num(&d.join("memory.current"))?,
                max: opt_num(&d.join("memory.peak"))?,
                failcnt: events.get("max").copied().unwrap_or(0),
            };
            s.memory.swap = MemoryEntry {
                limit: opt_num(&d.join("memory.swap.max"))?,
                usage: opt_num(&d.join("memory.swap.current"))?,
                max: opt_num(&d.join("memory.swap.peak"))?,
                failcnt: 0,
            };
            s.memory.raw = keyed(&d.join("memory.stat"))?;
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        }
        None => {}
    }
    if let Some(Loc::V1(d) | Loc::V2(d)) = m.locate("pids") {
        s.pids.current = opt_num(&d.join("pids.current"))?;
        // runc's "no limit" for pids is 0 (its "max" for memory is u64::MAX).
        s.pids.limit = match opt_num(&d.join("pids.max"))? {
            u64::MAX => 0,
            limit => limit,
        };
    }
    match m.locate("blkio") {
        Some(Loc::V1(d)) => {
            s.blkio.io_service_bytes_recursive =
                blkio_v1(&d.join("blkio.throttle.io_service_bytes_recursive"))?;
            s.blkio.io_serviced_recursive =
                blkio_v1(&d.join("blkio.throttle.io_serviced_recursive"))?;
        }
        _ => {
            if let Some(Loc::V2(d)) = m.locate("io") {
                let (bytes, ios) = io_stat_v2(&d.join("io.stat"))?;
                s.blkio.io_service_bytes_recursive = bytes;
                s.blkio.io_serviced_recursive = ios;
            }
        }
    }
    match m.locate("hugetlb") {
        Some(Loc::V1(d)) => {
            for size in hugepage_sizes() {
                let f = |x: &str| d.join(format!("hugetlb.{size}.{x}"));
                let h = HugetlbStats {
                    usage: opt_num(&f("usage_in_bytes"))?,
                    max: opt_num(&f("max_usage_in_bytes"))?,
                    failcnt: opt_num(&f("failcnt"))?,
                };
                s.hugetlb.insert(size, h);
            }
        }
        Some(Loc::V2(d)) => {
            for size in hugepage_sizes() {
                let current = d.join(format!("hugetlb.{size}.current"));
                if !current.exists() {
                    continue;
                }
                let events = keyed(&d.join(format!("hugetlb.{size}.events")))?;
                let h = HugetlbStats {
                    usage: num(&current)?,
                    max: 0,
                    failcnt: events.get("max").copied().unwrap_or(0),
                };
                s.hugetlb.insert(size, h);
            }
        }
        None => {}
    }
    Ok(s)
}

/// Parses v1 blkio files: "MAJ:MIN Op value" lines ("Total" lines skipped).
fn blkio_v1(path: &Path) -> Result<Vec<BlkioEntry>, Error> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for line in read(path)?.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        let Some((maj, min)) = f[0].split_once(':') else {
            continue;
        };
        if let (Ok(major), Ok(minor), Ok(value)) = (maj.parse(), min.parse(), f[2].parse()) {
            out.push(BlkioEntry {
                major,
                minor,
                op: f[1].to_string(),
                value,
            });
        }
    }
    Ok(out)
}

/// Parses v2 io.stat: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.." lines.
fn io_stat_v2(path: &Path) -> Result<(Vec<BlkioEntry>, Vec<BlkioEntry>), Error> {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    if !path.exists() {
        return Ok((bytes, ios));
    }
    for line in read(path)?.lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    Ok((bytes, ios))
}
