//! Writing `linux.resources` to the v1 or v2 cgroup files.

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

use crate::bpf::{apply_device_rules, Rule};
use crate::cgroup::{Cgroup, Loc};
use crate::files::{read, write, CgroupFile};
use crate::{Error, Hierarchy};

/// runc's default device rules, appended after the spec's own: mknod of
/// anything, and the devices every container gets (null, zero, full, tty,
/// random, urandom, ptmx, pts, tun).
pub const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// The directory of `controller`, or a clear error naming the spec field.
fn need<'a>(m: &'a Cgroup, controller: &str, field: &str) -> Result<Loc<'a>, Error> {
    m.locate(controller).ok_or_else(|| Error::Unsupported {
        resource: format!("linux.resources.{field}"),
        reason: format!(
            "the {controller} cgroup controller is not available on this machine \
             (neither mounted as cgroup v1 nor offered by cgroup2): remove the field from the spec or enable the controller"
        ),
    })
}

/// Applies every resource set in `r`, controller by controller.
pub(crate) fn set(m: &Cgroup, r: &LinuxResources) -> Result<(), Error> {
    if let Some(cpu) = r.cpu() {
        set_cpuset(m, cpu)?;
    }
    if let Some(devices) = r.devices() {
        set_devices(m, devices)?;
    }
    if let Some(mem) = r.memory() {
        set_memory(m, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        set_cpu(m, cpu)?;
    }
    if let Some(pids) = r.pids() {
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_string()
        };
        match need(m, "pids", "pids.limit")? {
            Loc::V1(d) | Loc::V2(d) => write(&d.join("pids.max"), &value)?,
        }
    }
    if let Some(blkio) = r.block_io() {
        set_blkio(m, blkio)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        for l in limits {
            let size = l.page_size();
            if size.is_empty() || size.contains('/') {
                return Err(Error::Unsupported {
                    resource: "linux.resources.hugepageLimits.pageSize".into(),
                    reason: format!("{size:?} is not a page size: use e.g. \"2MB\" or \"1GB\""),
                });
            }
            match need(m, "hugetlb", "hugepageLimits")? {
                Loc::V1(d) => write(
                    &d.join(format!("hugetlb.{size}.limit_in_bytes")),
                    &l.limit().to_string(),
                )?,
                Loc::V2(d) => {
                    let v = if l.limit() < 0 {
                        "max".to_string()
                    } else {
                        l.limit().to_string()
                    };
                    write(&d.join(format!("hugetlb.{size}.max")), &v)?
                }
            }
        }
    }
    if let Some(net) = r.network() {
        if let Some(class_id) = net.class_id() {
            match need(m, "net_cls", "network.classID")? {
                Loc::V1(d) => write(&d.join("net_cls.classid"), &class_id.to_string())?,
                Loc::V2(_) => return Err(v2_unsupported("network.classID")),
            }
        }
        if let Some(prios) = net.priorities() {
            for p in prios {
                match need(m, "net_prio", "network.priorities")? {
                    Loc::V1(d) => write(
                        &d.join("net_prio.ifpriomap"),
                        &format!("{} {}", p.name(), p.priority()),
                    )?,
                    Loc::V2(_) => return Err(v2_unsupported("network.priorities")),
                }
            }
        }
    }
    if let Some(rdma) = r.rdma() {
        for (dev, limit) in rdma {
            let mut value = dev.clone();
            if let Some(h) = limit.hca_handles() {
                value.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = limit.hca_objects() {
                value.push_str(&format!(" hca_object={o}"));
            }
            match need(m, "rdma", "rdma")? {
                Loc::V1(d) | Loc::V2(d) => write(&d.join("rdma.max"), &value)?,
            }
        }
    }
    if let Some(unified) = r.unified() {
        let Some(v2) = &m.v2 else {
            return Err(Error::Unsupported {
                resource: "linux.resources.unified".into(),
                reason: "this machine has no cgroup2 hierarchy: express the limits with the v1 fields instead".into(),
            });
        };
        let mut keys: Vec<_> = unified.keys().collect();
        keys.sort();
        for key in keys {
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(Error::Unsupported {
                    resource: format!("linux.resources.unified[{key:?}]"),
                    reason: "not a cgroup2 interface file name: use e.g. \"memory.high\"".into(),
                });
            }
            write(&v2.path.join(key), &unified[key])?;
        }
    }
    Ok(())
}

fn v2_unsupported(field: &str) -> Error {
    Error::Unsupported {
        resource: format!("linux.resources.{field}"),
        reason: "cgroup v2 has no equivalent: remove the field from the spec".into(),
    }
}

fn set_cpuset(m: &Cgroup, cpu: &LinuxCpu) -> Result<(), Error> {
    for (value, file, field) in [
        (cpu.cpus(), "cpuset.cpus", "cpu.cpus"),
        (cpu.mems(), "cpuset.mems", "cpu.mems"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            match need(m, "cpuset", field)? {
                Loc::V1(d) | Loc::V2(d) => write(&d.join(file), v)?,
            }
        }
    }
    Ok(())
}

/// Formats one device rule as the v1 devices.allow/deny line.
pub(crate) fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = match d.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => "p",
    };
    let num = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = d
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    if typ == "a" && d.major().is_none() && d.minor().is_none() {
        return "a".to_string();
    }
    format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// v1 device exceptions: access bits (r=1, w=2, m=4) by "type major:minor".
type Exceptions = std::collections::BTreeMap<String, u8>;

/// Adds the exceptions of v1 lines ("c 1:3 rwm") to `into`, OR-ing the
/// access of the same device as the kernel does. None for a line that is
/// not a single-device-class exception (type `a`: allow- or deny-all).
fn add_exceptions<'a>(into: &mut Exceptions, lines: impl Iterator<Item = &'a str>) -> Option<()> {
    for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let (typ, dev, access) = (parts.next()?, parts.next()?, parts.next()?);
        if !matches!(typ, "b" | "c") || parts.next().is_some() {
            return None;
        }
        let mut bits = 0;
        for c in access.chars() {
            bits |= match c {
                'r' => 1,
                'w' => 2,
                'm' => 4,
                _ => return None,
            };
        }
        *into.entry(format!("{typ} {dev}")).or_insert(0) |= bits;
    }
    Some(())
}

fn access_of(bits: u8) -> String {
    [(1, 'r'), (2, 'w'), (4, 'm')]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// On a v1 cgroup that already denies by default, the writes that turn its
/// exception list into the one `devices` (a deny-all followed by allows,
/// plus the defaults) asks for: allows first, then the removals. No
/// deny-all is written, so devices the container keeps are never denied
/// meanwhile, and a cgroup with child cgroups (where the kernel refuses a
/// deny-all) can be updated. None when the cgroup allows by default or the
/// rules have another shape: then they are written as given.
fn v1_transition(
    dir: &std::path::Path,
    devices: &[LinuxDeviceCgroup],
) -> Result<Option<Vec<(bool, String)>>, Error> {
    let Some((first, rest)) = devices.split_first() else {
        return Ok(None);
    };
    if first.allow() || device_rule(first) != "a" || rest.iter().any(|d| !d.allow()) {
        return Ok(None);
    }
    let mut current = Exceptions::new();
    let list = read(&dir.join("devices.list"))?;
    if add_exceptions(&mut current, list.lines()).is_none() {
        return Ok(None);
    }
    let mut target = Exceptions::new();
    let rules: Vec<String> = rest.iter().map(device_rule).collect();
    let lines = rules
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_DEVICE_RULES.iter().copied());
    if add_exceptions(&mut target, lines).is_none() {
        return Ok(None);
    }
    let mut writes = Vec::new();
    for (dev, &want) in &target {
        let add = want & !current.get(dev).copied().unwrap_or(0);
        if add != 0 {
            writes.push((true, format!("{dev} {}", access_of(add))));
        }
    }
    for (dev, &have) in &current {
        let remove = have & !target.get(dev).copied().unwrap_or(0);
        if remove != 0 {
            writes.push((false, format!("{dev} {}", access_of(remove))));
        }
    }
    Ok(Some(writes))
}

fn set_devices(m: &Cgroup, devices: &[LinuxDeviceCgroup]) -> Result<(), Error> {
    match m.locate("devices") {
        Some(Loc::V1(d)) => {
            if let Some(writes) = v1_transition(d, devices)? {
                for (allow, line) in writes {
                    let file = if allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write(&d.join(file), &line)?;
                }
                return Ok(());
            }
            // v1 has no atomic replace: a deny-all ("a") empties the allow
            // list until the allows are written. Keep that window as short
            // as possible (files opened once, runc's defaults, which include
            // mknod of any device, right after each deny-all; they are
            // written again at the end, so the final list is the same).
            let mut allow = CgroupFile::open(&d.join("devices.allow"))?;
            let mut deny = CgroupFile::open(&d.join("devices.deny"))?;
            for rule in devices {
                let line = device_rule(rule);
                if rule.allow() {
                    allow.write(&line)?;
                } else {
                    deny.write(&line)?;
                    if line == "a" {
                        for r in DEFAULT_DEVICE_RULES {
                            allow.write(r)?;
                        }
                    }
                }
            }
            for r in DEFAULT_DEVICE_RULES {
                allow.write(r)?;
            }
            Ok(())
        }
        // cgroup2 has no devices files: the rules become an eBPF program.
        Some(Loc::V2(_)) | None if m.hierarchy == Hierarchy::V2 => {
            let Some(v2) = &m.v2 else {
                return Err(need(m, "devices", "devices")
                    .err()
                    .unwrap_or(Error::NoCgroupFs));
            };
            let mut rules = Vec::new();
            let lines = devices
                .iter()
                .map(|d| (d.allow(), device_rule(d)))
                .chain(DEFAULT_DEVICE_RULES.iter().map(|r| (true, r.to_string())));
            for (allow, line) in lines {
                rules.push(Rule::parse(allow, &line).ok_or_else(|| Error::Unsupported {
                    resource: "linux.resources.devices".into(),
                    reason: format!("rule {line:?} cannot be compiled"),
                })?);
            }
            apply_device_rules(&v2.path, &rules)
        }
        _ => Err(need(m, "devices", "devices")
            .err()
            .unwrap_or(Error::Unsupported {
                resource: "linux.resources.devices".into(),
                reason: "no devices controller".into(),
            })),
    }
}

fn set_memory(m: &Cgroup, mem: &LinuxMemory) -> Result<(), Error> {
    let loc = need(m, "memory", "memory")?;
    match loc {
        Loc::V1(d) => {
            let limit_file = d.join("memory.limit_in_bytes");
            let swap_file = d.join("memory.memsw.limit_in_bytes");
            match (mem.limit(), mem.swap()) {
                (limit, Some(swap)) if swap_file.exists() => {
                    // The kernel requires memory <= memory+swap at every step:
                    // raise memsw first when it grows, lower it last when it shrinks.
                    let current: i64 = read(&limit_file)?.trim().parse().unwrap_or(i64::MAX);
                    let swap_first = swap == -1 || swap > current;
                    if swap_first {
                        write(&swap_file, &swap.to_string())?;
                    }
                    if let Some(limit) = limit {
                        write(&limit_file, &limit.to_string())?;
                    }
                    if !swap_first {
                        write(&swap_file, &swap.to_string())?;
                    }
                }
                (limit, Some(swap)) if limit.is_some_and(|l| l != swap) && swap != 0 => {
                    return Err(Error::Unsupported {
                        resource: "linux.resources.memory.swap".into(),
                        reason: format!(
                            "{} does not exist (swap accounting is off): boot with swapaccount=1 or drop the swap limit",
                            swap_file.display()
                        ),
                    });
                }
                (limit, _) => {
                    if let Some(limit) = limit {
                        write(&limit_file, &limit.to_string())?;
                    }
                }
            }
            if let Some(res) = mem.reservation() {
                write(&d.join("memory.soft_limit_in_bytes"), &res.to_string())?;
            }
            if let Some(tcp) = mem.kernel_tcp() {
                write(&d.join("memory.kmem.tcp.limit_in_bytes"), &tcp.to_string())?;
            }
            // memory.kernel is deprecated and ignored, as runc does (kernels
            // since 5.x refuse kmem limits).
            if let Some(sw) = mem.swappiness() {
                if sw > 100 {
                    return Err(Error::Unsupported {
                        resource: "linux.resources.memory.swappiness".into(),
                        reason: format!("{sw} is out of range: use 0 to 100"),
                    });
                }
                write(&d.join("memory.swappiness"), &sw.to_string())?;
            }
            if mem.disable_oom_killer() == Some(true) {
                write(&d.join("memory.oom_control"), "1")?;
            }
        }
        Loc::V2(d) => {
            let max = |v: i64| {
                if v < 0 {
                    "max".to_string()
                } else {
                    v.to_string()
                }
            };
            if let Some(swap) = mem.swap() {
                let v2 = swap_to_v2(swap, mem.limit())?;
                if let Some(v) = v2 {
                    write(&d.join("memory.swap.max"), &max(v))?;
                }
            }
            if let Some(limit) = mem.limit() {
                write(&d.join("memory.max"), &max(limit))?;
            }
            if let Some(res) = mem.reservation() {
                write(&d.join("memory.low"), &max(res))?;
            }
            if mem.swappiness().is_some() {
                return Err(v2_unsupported("memory.swappiness"));
            }
            if mem.disable_oom_killer() == Some(true) {
                return Err(v2_unsupported("memory.disableOOMKiller"));
            }
        }
    }
    Ok(())
}

/// The OCI swap value is memory+swap; cgroup2's memory.swap.max is swap alone.
fn swap_to_v2(swap: i64, limit: Option<i64>) -> Result<Option<i64>, Error> {
    if swap == -1 {
        return Ok(Some(-1));
    }
    if swap == 0 {
        return Ok(None);
    }
    match limit {
        Some(l) if l > 0 && swap >= l => Ok(Some(swap - l)),
        Some(l) if l > 0 => Err(Error::Unsupported {
            resource: "linux.resources.memory.swap".into(),
            reason: format!(
                "{swap} is below memory.limit {l}: swap is memory+swap, so it must be >= the limit"
            ),
        }),
        _ => Err(Error::Unsupported {
            resource: "linux.resources.memory.swap".into(),
            reason: "cgroup v2 cannot limit swap without a memory limit: set memory.limit too"
                .into(),
        }),
    }
}

fn set_cpu(m: &Cgroup, cpu: &LinuxCpu) -> Result<(), Error> {
    let wants_cpu = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
        || cpu.idle().is_some()
        || cpu.burst().is_some();
    if !wants_cpu {
        return Ok(());
    }
    match need(m, "cpu", "cpu")? {
        Loc::V1(d) => {
            if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
                write(&d.join("cpu.shares"), &shares.to_string())?;
            }
            let period = cpu.period().filter(|p| *p != 0);
            let quota = cpu.quota().filter(|q| *q != 0);
            if let Some(p) = period {
                // A new period may be refused until the quota fits it: retry after the quota.
                if write(&d.join("cpu.cfs_period_us"), &p.to_string()).is_err() {
                    if let Some(q) = quota {
                        write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                    }
                    write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                }
            }
            if let Some(q) = quota {
                write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
            if let Some(b) = cpu.burst() {
                write(&d.join("cpu.cfs_burst_us"), &b.to_string())?;
            }
            if let Some(p) = cpu.realtime_period().filter(|p| *p != 0) {
                write(&d.join("cpu.rt_period_us"), &p.to_string())?;
            }
            if let Some(r) = cpu.realtime_runtime().filter(|r| *r != 0) {
                write(&d.join("cpu.rt_runtime_us"), &r.to_string())?;
            }
            if let Some(i) = cpu.idle() {
                write(&d.join("cpu.idle"), &i.to_string())?;
            }
        }
        Loc::V2(d) => {
            if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
                write(&d.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
            }
            let period = cpu.period().unwrap_or(0);
            let quota = cpu.quota().unwrap_or(0);
            if period != 0 || quota != 0 {
                let mut v = if quota > 0 {
                    quota.to_string()
                } else {
                    "max".to_string()
                };
                if period != 0 {
                    v.push_str(&format!(" {period}"));
                }
                write(&d.join("cpu.max"), &v)?;
            }
            if let Some(b) = cpu.burst() {
                write(&d.join("cpu.max.burst"), &b.to_string())?;
            }
            if let Some(i) = cpu.idle() {
                write(&d.join("cpu.idle"), &i.to_string())?;
            }
            if cpu.realtime_period().is_some_and(|p| p != 0)
                || cpu.realtime_runtime().is_some_and(|r| r != 0)
            {
                return Err(v2_unsupported("cpu.realtimeRuntime/realtimePeriod"));
            }
        }
    }
    Ok(())
}

/// runc's mapping of v1 cpu.shares [2, 262144] onto v2 cpu.weight [1, 10000].
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn set_blkio(m: &Cgroup, b: &LinuxBlockIo) -> Result<(), Error> {
    match need(m, "blkio", "blockIO").or_else(|e| need(m, "io", "blockIO").map_err(|_| e))? {
        Loc::V1(d) => {
            let weight_file = |name: &str| {
                let plain = d.join(format!("blkio.{name}"));
                let bfq = d.join(format!("blkio.bfq.{name}"));
                if !plain.exists() && bfq.exists() {
                    bfq
                } else {
                    plain
                }
            };
            if let Some(w) = b.weight() {
                write(&weight_file("weight"), &w.to_string())?;
            }
            if let Some(w) = b.leaf_weight() {
                write(&d.join("blkio.leaf_weight"), &w.to_string())?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    write(
                        &weight_file("weight_device"),
                        &format!("{}:{} {w}", wd.major(), wd.minor()),
                    )?;
                }
                if let Some(w) = wd.leaf_weight() {
                    write(
                        &d.join("blkio.leaf_weight_device"),
                        &format!("{}:{} {w}", wd.major(), wd.minor()),
                    )?;
                }
            }
            for (list, file) in [
                (
                    b.throttle_read_bps_device(),
                    "blkio.throttle.read_bps_device",
                ),
                (
                    b.throttle_write_bps_device(),
                    "blkio.throttle.write_bps_device",
                ),
                (
                    b.throttle_read_iops_device(),
                    "blkio.throttle.read_iops_device",
                ),
                (
                    b.throttle_write_iops_device(),
                    "blkio.throttle.write_iops_device",
                ),
            ] {
                for t in list.iter().flatten() {
                    write(
                        &d.join(file),
                        &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
        Loc::V2(d) => {
            let bfq = d.join("io.bfq.weight");
            if let Some(w) = b.weight() {
                if bfq.exists() {
                    write(&bfq, &w.to_string())?;
                } else {
                    let v = 1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990;
                    write(&d.join("io.weight"), &v.to_string())?;
                }
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    write(&bfq, &format!("{}:{} {w}", wd.major(), wd.minor()))?;
                }
            }
            for (list, key) in [
                (b.throttle_read_bps_device(), "rbps"),
                (b.throttle_write_bps_device(), "wbps"),
                (b.throttle_read_iops_device(), "riops"),
                (b.throttle_write_iops_device(), "wiops"),
            ] {
                for t in list.iter().flatten() {
                    write(
                        &d.join("io.max"),
                        &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_rules_format_like_the_kernel_wants() {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&deny_all), "a");
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&null), "c 1:3 rw");
        let any_block = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .access("m")
            .build()
            .unwrap();
        assert_eq!(device_rule(&any_block), "b *:* m");
    }

    #[test]
    fn v2_conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(swap_to_v2(-1, Some(100)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(300, Some(100)).unwrap(), Some(200));
        assert_eq!(swap_to_v2(0, Some(100)).unwrap(), None);
        assert!(swap_to_v2(50, Some(100)).is_err());
        assert!(swap_to_v2(50, None).is_err());
    }
}
