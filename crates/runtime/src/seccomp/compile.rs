//! The spec's filter compiled to BPF with libseccomp.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::bad;
use crate::error::{Error, Result};

/// The spec name of a serde-renamed enum value (SCMP_ACT_ERRNO, ...).
fn spec_name<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    }
}

fn op(o: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

/// The BPF program of `s`, as libseccomp would load it: an array of
/// `struct sock_filter` in this machine's byte order.
pub(crate) fn to_bpf(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let ctx = compile(s)?;
    let fd = nix::sys::memfd::memfd_create(c"seccomp-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| {
            bad(format!(
                "linux.seccomp: cannot create a memfd for the program: {e}"
            ))
        })?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file)
        .map_err(|e| bad(format!("linux.seccomp: cannot export the program: {e}")))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| {
            bad(format!(
                "linux.seccomp: cannot read the exported program: {e}"
            ))
        })?;
    Ok(bytes)
}

/// Compiles `s` (not loaded yet). Unknown syscall names are skipped, as
/// runc does, so one profile serves several kernels.
fn compile(s: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    fn err(what: String) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
        move |e| bad(format!("linux.seccomp: {what}: {e}"))
    }
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx =
        ScmpFilterContext::new(default).map_err(err("cannot create the filter".into()))?;
    // no_new_privs is the process's own setting, not the filter's.
    ctx.set_ctl_nnp(false)
        .map_err(err("cannot configure the filter".into()))?;
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let name = spec_name(a);
        let arch: ScmpArch = name.parse().map_err(|_| {
            bad(format!(
                "field `linux.seccomp.architectures[{i}]`: unknown architecture {name}"
            ))
        })?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch)
                .map_err(err(format!("cannot add architecture {name}")))?;
        }
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        let mut cmps = Vec::new();
        for arg in rule.args().iter().flatten() {
            let o = op(arg.op(), arg.value());
            let datum = match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                _ => arg.value(),
            };
            cmps.push(ScmpArgCompare::new(arg.index() as u32, o, datum));
        }
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            ctx.add_rule_conditional(act, sc, &cmps)
                .map_err(err(format!("syscalls[{i}] {name}")))?;
        }
    }
    Ok(ctx)
}
