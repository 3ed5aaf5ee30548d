//! cgroup v2 device control: the spec's device rules compiled into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the container's cgroup.
//!
//! The program reads the request (type, access, major, minor) and walks the
//! rules from last to first; the first rule that matches decides, and a
//! request no rule matches is allowed (the state a new cgroup starts in, as
//! in v1, where a leading deny-all rule turns that into deny).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::Error;

/// One device rule, already parsed: `typ` is 'a', 'b' or 'c'; `None` major
/// or minor means any; `access` is a subset of "rwm".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    pub typ: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

impl Rule {
    /// Parses a v1-style rule line ("a", "c 1:3 rwm", "b *:* m").
    pub(crate) fn parse(allow: bool, line: &str) -> Option<Rule> {
        let mut it = line.split_whitespace();
        let typ = it.next()?.chars().next()?;
        let (major, minor, access) = match (it.next(), it.next()) {
            (Some(nums), Some(access)) => {
                let (maj, min) = nums.split_once(':')?;
                let num = |s: &str| {
                    if s == "*" {
                        Some(None)
                    } else {
                        s.parse().ok().map(Some)
                    }
                };
                (num(maj)?, num(min)?, access.to_string())
            }
            _ => (None, None, "rwm".to_string()),
        };
        Some(Rule {
            allow,
            typ,
            major,
            minor,
            access,
        })
    }
}

// Instruction encoding (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// struct bpf_cgroup_dev_ctx values.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push((self.src << 4) | (self.dst & 0x0f));
        out.extend_from_slice(&self.off.to_le_bytes());
        out.extend_from_slice(&self.imm.to_le_bytes());
    }
}

/// Compiles the rules into the program's instructions.
fn compile(rules: &[Rule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU32_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        match rule.typ {
            'b' => checks.push(Insn::new(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
            'c' => checks.push(Insn::new(JMP_JNE_K, 2, 0, 0, DEV_CHAR)),
            'a' => {}
            // Other types (p) never match a block/char device request.
            _ => continue,
        }
        let mut acc = 0;
        for ch in rule.access.chars() {
            acc |= match ch {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => 0,
            };
        }
        if acc != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // The request's access must lie within the rule's.
            checks.push(Insn::new(ALU32_MOV_X, 1, 3, 0, 0));
            checks.push(Insn::new(ALU32_AND_K, 1, 0, 0, acc));
            checks.push(Insn::new(JMP_JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            checks.push(Insn::new(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push(Insn::new(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        let tail = [
            Insn::new(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)),
            Insn::new(JMP_EXIT, 0, 0, 0, 0),
        ];
        let unconditional = checks.is_empty();
        let len = checks.len() + tail.len();
        for (i, insn) in checks.iter_mut().enumerate() {
            if matches!(insn.code, JMP_JNE_K | JMP_JNE_X) {
                // Skip to the first instruction after this rule's block.
                insn.off = (len - i - 1) as i16;
            }
        }
        p.extend(checks);
        p.extend(tail);
        if unconditional {
            // Matches every request: earlier rules can never decide (and the
            // verifier refuses unreachable instructions).
            return p;
        }
    }
    p.push(Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands and constants.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Calls bpf(2) with `attr` (a `union bpf_attr` laid out by the caller).
fn bpf(cmd: libc::c_int, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, writable 128-byte buffer that outlives the
    // call and its length is passed; every pointer stored inside it by our
    // callers points to memory that is alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8; 128], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Takes ownership of a file descriptor bpf(2) returned.
fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn bpf_error(cgroup: &Path, what: &str, err: std::io::Error) -> Error {
    Error::Unsupported {
        resource: "linux.resources.devices".into(),
        reason: format!(
            "{what} for cgroup {}: {err} (cgroup v2 device control needs bpf(2) with CONFIG_CGROUP_BPF, as root)",
            cgroup.display()
        ),
    }
}

/// Loads the program for `rules`, attaches it to the cgroup directory
/// `cgroup`, then detaches the programs attached before (so `update`
/// replaces rules and the cgroup is never left without one).
pub(crate) fn apply_device_rules(cgroup: &Path, rules: &[Rule]) -> Result<(), Error> {
    let mut code = Vec::new();
    let insns = compile(rules);
    for i in &insns {
        i.encode(&mut code);
    }
    let license = b"Apache-2.0\0";
    let load = |log: &mut [u8]| {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
        put_u32(&mut attr, 4, insns.len() as u32);
        put_u64(&mut attr, 8, code.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put_u32(&mut attr, 24, 1); // log_level
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put_u32(&mut attr, 68, BPF_CGROUP_DEVICE); // expected_attach_type
        bpf(BPF_PROG_LOAD, &mut attr).map(owned_fd)
    };
    let prog = match load(&mut []) {
        Ok(fd) => fd,
        Err(e) => {
            // Load again with the verifier's log to say why.
            let mut log = vec![0u8; 1 << 20];
            let _ = load(&mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            let last = verifier
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ");
            return Err(bpf_error(
                cgroup,
                &format!("loading the device program (verifier: {last})"),
                e,
            ));
        }
    };
    let dir = File::open(cgroup).map_err(|err| Error::Read {
        path: cgroup.to_path_buf(),
        err,
    })?;
    let old = attached(&dir).map_err(|e| bpf_error(cgroup, "listing device programs", e))?;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, dir.as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| bpf_error(cgroup, "attaching the device program", e))?;
    for old_prog in old {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, dir.as_raw_fd() as u32);
        put_u32(&mut attr, 4, old_prog.as_raw_fd() as u32);
        put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut attr)
            .map_err(|e| bpf_error(cgroup, "detaching the previous device program", e))?;
    }
    Ok(())
}

/// The device programs attached directly to the cgroup `dir`.
fn attached(dir: &File) -> std::io::Result<Vec<OwnedFd>> {
    let mut ids = [0u32; 64];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, dir.as_raw_fd() as u32);
    put_u32(&mut attr, 4, BPF_CGROUP_DEVICE);
    put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
    put_u32(&mut attr, 24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let count = u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]) as usize;
    let mut out = Vec::new();
    for id in ids.iter().take(count.min(ids.len())) {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, *id);
        out.push(owned_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?));
    }
    Ok(out)
}

/// How many device programs are attached to the cgroup directory `cgroup`.
#[cfg(test)]
pub(crate) fn attached_count(cgroup: &Path) -> std::io::Result<usize> {
    Ok(attached(&File::open(cgroup)?)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_like_v1_lines() {
        assert_eq!(
            Rule::parse(false, "a"),
            Some(Rule {
                allow: false,
                typ: 'a',
                major: None,
                minor: None,
                access: "rwm".into()
            })
        );
        let r = Rule::parse(true, "c 136:* rw").unwrap();
        assert_eq!(
            (r.typ, r.major, r.minor, r.access.as_str()),
            ('c', Some(136), None, "rw")
        );
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let rules = [
            Rule::parse(false, "a").unwrap(),
            Rule::parse(true, "c 1:3 rw").unwrap(),
        ];
        let p = compile(&rules);
        // Prologue (6), "c 1:3 rw" block (type, 3 access, major, minor, mov,
        // exit = 8), deny-all block (mov, exit) and no default after it.
        assert_eq!(p.len(), 6 + 8 + 2);
        for (pc, insn) in p.iter().enumerate() {
            if matches!(insn.code, JMP_JNE_K | JMP_JNE_X) {
                let target = pc as i64 + 1 + i64::from(insn.off);
                assert_eq!(target, 14, "jump at {pc} must reach the deny-all block");
            }
        }
        assert_eq!(p[14], Insn::new(ALU64_MOV_K, 0, 0, 0, 0));
        // Rules before an allow-all are never reached.
        let rules = [
            Rule::parse(false, "c 1:3 rwm").unwrap(),
            Rule::parse(true, "a").unwrap(),
        ];
        assert_eq!(compile(&rules).len(), 6 + 2);
    }
}
