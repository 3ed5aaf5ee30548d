//! The Runtime Spec's scheduling and execution attributes of a process:
//! `process.ioPriority` (ioprio_set), `process.scheduler` (sched_setattr),
//! `linux.personality` (personality) and `linux.memoryPolicy`
//! (set_mempolicy), plus the LSM labels (see `lsm.rs`).
//!
//! [`check_process`] and [`check_linux`] refuse out-of-range values and
//! combinations the kernel would reject, naming the field; [`Attrs::prepare`]
//! turns the fields into syscall arguments in the parent; [`Attrs::apply`]
//! runs in the forked child (the init and every exec'd process, as runc),
//! before its capabilities drop and its seccomp filter loads: a real-time
//! policy, a lower nice value and the real-time I/O class need privileges
//! the process may not keep.

use oci_spec::runtime::{
    IOPriorityClass, Linux, LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy,
    MemoryPolicyFlagType, MemoryPolicyModeType, Process, Scheduler,
};

use crate::idlist;
use crate::lsm::ExecLabels;

/// `struct sched_attr` of sched_setattr(2), with the utilization clamps
/// (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// SCHED_DEADLINE's smallest runtime the kernel takes (2^10 ns).
const DL_MIN_RUNTIME: u64 = 1 << 10;

fn policy_number(p: LinuxSchedulerPolicy) -> Option<u32> {
    Some(match p {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER as u32,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO as u32,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR as u32,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH as u32,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE as u32,
        LinuxSchedulerPolicy::SchedDeadline => 6,
        // Reserved in the kernel's headers, never implemented.
        LinuxSchedulerPolicy::SchedIso => return None,
    })
}

fn flag_bit(f: LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// Checks `process.scheduler` against sched_setattr(2)'s rules.
fn check_scheduler(s: &Scheduler, f: &str) -> Result<(), String> {
    let policy = s.policy();
    let name = policy.to_string();
    if policy_number(*policy).is_none() {
        return Err(format!("field `{f}.policy`: {name} is not implemented by Linux; use SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO, SCHED_RR or SCHED_DEADLINE"));
    }
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(format!(
            "field `{f}.nice`: {nice} is out of range (-20 to 19)"
        ));
    }
    let realtime = matches!(
        policy,
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    let priority = s.priority().unwrap_or(0);
    if realtime && !(1..=99).contains(&priority) {
        return Err(format!(
            "field `{f}.priority`: {priority} is out of range for {name} (1 to 99)"
        ));
    }
    if !realtime && priority != 0 {
        return Err(format!("field `{f}.priority`: only SCHED_FIFO and SCHED_RR take a priority ({name} runs at 0); remove it or change the policy"));
    }
    let (runtime, deadline, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if *policy != LinuxSchedulerPolicy::SchedDeadline {
        if runtime != 0 || deadline != 0 || period != 0 {
            return Err(format!("field `{f}`: runtime, deadline and period are SCHED_DEADLINE's; remove them for {name}"));
        }
    } else {
        // The kernel's __checkparam_dl: runtime <= deadline <= period (a
        // period of 0 means the deadline), all below 2^63 ns.
        let period_or_deadline = if period == 0 { deadline } else { period };
        if deadline == 0
            || runtime < DL_MIN_RUNTIME
            || runtime > deadline
            || deadline > period_or_deadline
            || period_or_deadline >= 1 << 63
        {
            return Err(format!("field `{f}`: SCHED_DEADLINE needs runtime ({runtime}) <= deadline ({deadline}) <= period ({period}, 0 for the deadline), in nanoseconds, with a runtime of at least {DL_MIN_RUNTIME}"));
        }
    }
    Ok(())
}

/// Checks the attributes of a process (config.json's `process` or an exec's
/// process.json); `f` names it in messages.
pub(crate) fn check_process(p: &Process, f: &str) -> Result<(), String> {
    if let Some(io) = p.io_priority() {
        let prio = io.priority();
        if !(0..=7).contains(&prio) {
            return Err(format!(
                "field `{f}.ioPriority.priority`: {prio} is out of range (0, the highest, to 7)"
            ));
        }
    }
    if let Some(s) = p.scheduler() {
        check_scheduler(s, &format!("{f}.scheduler"))?;
    }
    if let Some(a) = p.exec_cpu_affinity() {
        for (name, list) in [("initial", a.initial()), ("final", a.cpu_affinity_final())] {
            if let Some(list) = list {
                idlist::parse(list)
                    .map_err(|e| format!("field `{f}.execCPUAffinity.{name}`: {list:?}: {e}"))?;
            }
        }
    }
    crate::lsm::check_process(p, f)
}

/// The mode and flag bits of a memory policy (set_mempolicy's `mode`).
fn mempolicy_mode(m: MemoryPolicyModeType, flags: &[MemoryPolicyFlagType]) -> libc::c_int {
    let mode = match m {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    };
    flags.iter().fold(mode, |acc, f| {
        acc | match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        }
    })
}

/// Checks `linux.personality`, `linux.memoryPolicy`, `linux.timeOffsets`
/// and `linux.mountLabel`.
pub(crate) fn check_linux(linux: &Linux) -> Result<(), String> {
    if let Some(p) = linux.personality() {
        if let Some(flag) = p.flags().iter().flatten().next() {
            return Err(format!("field `linux.personality.flags`: {flag:?}: the Runtime Spec defines no personality flags yet; remove it"));
        }
    }
    if let Some(m) = linux.memory_policy() {
        let mode = m.mode();
        let nodes = match m.nodes().as_deref().filter(|n| !n.is_empty()) {
            Some(list) => idlist::parse(list)
                .map_err(|e| format!("field `linux.memoryPolicy.nodes`: {list:?}: {e}"))?,
            None => Vec::new(),
        };
        let n = idlist::count(&nodes);
        match mode {
            MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal if n > 0 => {
                return Err(format!(
                    "field `linux.memoryPolicy.nodes`: {mode} takes no nodes; remove them"
                ));
            }
            MemoryPolicyModeType::MpolBind
            | MemoryPolicyModeType::MpolInterleave
            | MemoryPolicyModeType::MpolPreferredMany
            | MemoryPolicyModeType::MpolWeightedInterleave
                if n == 0 =>
            {
                return Err(format!("field `linux.memoryPolicy.nodes`: {mode} needs at least one node (a list like \"0\" or \"0-1\"; see /sys/devices/system/node/online)"));
            }
            _ => {}
        }
        let flags = m.flags().clone().unwrap_or_default();
        if flags.contains(&MemoryPolicyFlagType::MpolFStaticNodes)
            && flags.contains(&MemoryPolicyFlagType::MpolFRelativeNodes)
        {
            return Err("field `linux.memoryPolicy.flags`: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other".into());
        }
        if !flags.is_empty()
            && matches!(
                mode,
                MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal
            )
        {
            return Err(format!(
                "field `linux.memoryPolicy.flags`: {mode} takes no flags; remove them"
            ));
        }
    }
    for (clock, o) in linux.time_offsets().iter().flatten() {
        if clock != "monotonic" && clock != "boottime" {
            return Err(format!("field `linux.timeOffsets`: {clock:?} is not a clock a time namespace can offset (use monotonic or boottime)"));
        }
        let ns = o.nanosecs().unwrap_or(0);
        if ns >= 1_000_000_000 {
            return Err(format!(
                "field `linux.timeOffsets.{clock}.nanosecs`: {ns} is not below one second (999999999 at most)"
            ));
        }
    }
    crate::lsm::check_mount_label(linux.mount_label().as_deref())
}

/// The attributes as syscall arguments, applied in a forked child.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attrs {
    ioprio: Option<libc::c_int>,
    sched: Option<SchedAttr>,
    personality: Option<libc::c_ulong>,
    mempolicy: Option<(libc::c_int, Vec<libc::c_ulong>)>,
    labels: ExecLabels,
}

impl Attrs {
    /// The attributes of process `p` in a container configured by `linux`
    /// (both checked already).
    pub(crate) fn prepare(p: &Process, linux: Option<&Linux>) -> Attrs {
        let ioprio = p.io_priority().as_ref().map(|io| {
            let class = match io.class() {
                IOPriorityClass::IoprioClassRt => 1,
                IOPriorityClass::IoprioClassBe => 2,
                IOPriorityClass::IoprioClassIdle => 3,
            };
            (class << 13) | io.priority() as libc::c_int
        });
        let sched = p.scheduler().as_ref().map(|s| SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: policy_number(*s.policy()).unwrap_or(0),
            flags: s.flags().iter().flatten().fold(0, |a, f| a | flag_bit(*f)),
            nice: s.nice().unwrap_or(0),
            priority: s.priority().unwrap_or(0) as u32,
            runtime: s.runtime().unwrap_or(0),
            deadline: s.deadline().unwrap_or(0),
            period: s.period().unwrap_or(0),
            ..SchedAttr::default()
        });
        let personality = linux
            .and_then(|l| l.personality().as_ref())
            .map(|p| match p.domain() {
                LinuxPersonalityDomain::PerLinux => 0x0000,
                LinuxPersonalityDomain::PerLinux32 => 0x0008,
            });
        let mempolicy = linux.and_then(|l| l.memory_policy().as_ref()).map(|m| {
            let nodes = m
                .nodes()
                .as_deref()
                .filter(|n| !n.is_empty())
                .and_then(|n| idlist::parse(n).ok())
                .unwrap_or_default();
            (
                mempolicy_mode(m.mode(), m.flags().as_deref().unwrap_or(&[])),
                nodes,
            )
        });
        Attrs {
            ioprio,
            sched,
            personality,
            mempolicy,
            labels: ExecLabels::of(p),
        }
    }

    /// In the forked child, still privileged: applies every attribute to
    /// the calling process (its children and its execve inherit them).
    pub(crate) fn apply(&self) -> Result<(), String> {
        if let Some(prio) = self.ioprio {
            const IOPRIO_WHO_PROCESS: libc::c_long = 1;
            // SAFETY: ioprio_set takes three integers and changes only the
            // calling process (who 0).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_ioprio_set,
                    IOPRIO_WHO_PROCESS,
                    0 as libc::c_long,
                    prio as libc::c_long,
                )
            };
            if r != 0 {
                return Err(format!(
                    "cannot set process.ioPriority (ioprio_set): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Some(attr) = &self.sched {
            // SAFETY: `attr` is a live, initialized struct sched_attr whose
            // size field says how much the kernel may read; pid 0 is the
            // calling thread.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_sched_setattr,
                    0 as libc::c_long,
                    attr as *const SchedAttr,
                    0 as libc::c_long,
                )
            };
            if r != 0 {
                let err = std::io::Error::last_os_error();
                let hint = match err.raw_os_error() {
                    Some(libc::EPERM) if attr.policy == 6 => " (SCHED_DEADLINE needs the process's CPU affinity to span its whole root domain: a cpuset cgroup limit or an execCPUAffinity forbids it)",
                    Some(libc::EPERM) => " (real-time policies need CAP_SYS_NICE, and in a cgroup v1 cpu controller a cpu.rt_runtime_us budget)",
                    Some(libc::EBUSY) => " (the SCHED_DEADLINE bandwidth is already taken: lower runtime or raise period)",
                    _ => "",
                };
                return Err(format!(
                    "cannot set process.scheduler (sched_setattr): {err}{hint}"
                ));
            }
        }
        if let Some(p) = self.personality {
            // SAFETY: personality only sets the calling process's execution
            // domain.
            if unsafe { libc::personality(p) } == -1 {
                return Err(format!(
                    "cannot set linux.personality (personality {p:#x}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Some((mode, nodes)) = &self.mempolicy {
            let maxnode = nodes.len() * libc::c_ulong::BITS as usize + 1;
            let mask = if nodes.is_empty() {
                std::ptr::null()
            } else {
                nodes.as_ptr()
            };
            // SAFETY: `mask` is null or points to `nodes`, whose words hold
            // `maxnode - 1` bits (the kernel reads maxnode - 1 of them).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_set_mempolicy,
                    *mode as libc::c_long,
                    mask,
                    maxnode as libc::c_ulong,
                )
            };
            if r != 0 {
                let online =
                    std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_default();
                return Err(format!(
                    "cannot set linux.memoryPolicy (set_mempolicy): {} (this machine's online NUMA nodes: {})",
                    std::io::Error::last_os_error(),
                    online.trim()
                ));
            }
        }
        self.labels.apply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: serde_json::Value) -> Result<(), String> {
        let mut p = serde_json::json!({"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}});
        p.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        check_process(&serde_json::from_value(p).unwrap(), "process")
    }

    fn linux(json: serde_json::Value) -> Result<(), String> {
        check_linux(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn io_priority_is_checked_against_its_range() {
        process(serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 7}}))
            .unwrap();
        let e =
            process(serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_RT", "priority": 8}}))
                .unwrap_err();
        assert!(
            e.contains("process.ioPriority.priority") && e.contains("0, the highest, to 7"),
            "{e}"
        );
        let e = process(
            serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_RT", "priority": -1}}),
        )
        .unwrap_err();
        assert!(e.contains("-1"), "{e}");
    }

    #[test]
    fn scheduler_rules_are_sched_setattrs() {
        let s = |v: serde_json::Value| process(serde_json::json!({"scheduler": v}));
        s(serde_json::json!({"policy": "SCHED_BATCH", "nice": 5})).unwrap();
        s(serde_json::json!({"policy": "SCHED_FIFO", "priority": 10})).unwrap();
        s(serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 10000000, "deadline": 20000000, "period": 30000000})).unwrap();
        for (bad, want) in [
            (
                serde_json::json!({"policy": "SCHED_OTHER", "nice": 20}),
                "scheduler.nice",
            ),
            (serde_json::json!({"policy": "SCHED_FIFO"}), "1 to 99"),
            (
                serde_json::json!({"policy": "SCHED_RR", "priority": 100}),
                "1 to 99",
            ),
            (
                serde_json::json!({"policy": "SCHED_OTHER", "priority": 3}),
                "only SCHED_FIFO and SCHED_RR",
            ),
            (
                serde_json::json!({"policy": "SCHED_BATCH", "runtime": 5}),
                "SCHED_DEADLINE's",
            ),
            (
                serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 30, "deadline": 20}),
                "runtime (30) <= deadline (20)",
            ),
            (
                serde_json::json!({"policy": "SCHED_ISO"}),
                "not implemented by Linux",
            ),
        ] {
            let e = s(bad.clone()).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn exec_cpu_affinity_lists_are_checked() {
        process(serde_json::json!({"execCPUAffinity": {"initial": "0-1", "final": "1"}})).unwrap();
        let e = process(serde_json::json!({"execCPUAffinity": {"final": "3-1"}})).unwrap_err();
        assert!(
            e.contains("process.execCPUAffinity.final") && e.contains("backwards"),
            "{e}"
        );
    }

    #[test]
    fn memory_policy_nodes_must_fit_the_mode() {
        linux(serde_json::json!({"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0"}})).unwrap();
        linux(serde_json::json!({"memoryPolicy": {"mode": "MPOL_LOCAL"}})).unwrap();
        for (bad, want) in [
            (
                serde_json::json!({"mode": "MPOL_BIND"}),
                "needs at least one node",
            ),
            (
                serde_json::json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
                "takes no nodes",
            ),
            (
                serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "0-70000"}),
                "highest",
            ),
            (
                serde_json::json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
                "exclude each other",
            ),
        ] {
            let e = linux(serde_json::json!({"memoryPolicy": bad})).unwrap_err();
            assert!(e.contains("linux.memoryPolicy") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn personality_flags_and_time_offsets_are_checked() {
        linux(serde_json::json!({"personality": {"domain": "LINUX32"}})).unwrap();
        let e = linux(
            serde_json::json!({"personality": {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}}),
        )
        .unwrap_err();
        assert!(e.contains("linux.personality.flags"), "{e}");
        linux(serde_json::json!({"timeOffsets": {"boottime": {"secs": 5}}})).unwrap();
        let e = linux(serde_json::json!({"timeOffsets": {"realtime": {"secs": 5}}})).unwrap_err();
        assert!(e.contains("monotonic or boottime"), "{e}");
        let e =
            linux(serde_json::json!({"timeOffsets": {"monotonic": {"nanosecs": 1000000000u32}}}))
                .unwrap_err();
        assert!(e.contains("nanosecs"), "{e}");
    }
}
