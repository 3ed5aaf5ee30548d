//! Compiled seccomp programs kept under the state root, one file per
//! profile: `<root>/@cache/seccomp/<key>.bpf`, where the key is the sha256
//! of the profile's JSON, the native architecture, libseccomp's version and
//! this format's version (so a libseccomp upgrade, whose syscall table may
//! differ, never reuses an old program).
//!
//! A file is written to a temporary name and renamed into place, and read
//! back as untrusted input: it is used only when it is a regular file owned
//! by this user and writable by no one else, of a size within bounds, with
//! the magic, the key it is looked up by, and the sha256 of its program.
//! Anything else is ignored (and then replaced), so a torn, corrupt,
//! foreign or mislabelled file costs a compile, never a wrong filter.
//!
//! ```text
//! "berth-seccomp-bpf-1\n" | key (64 hex) | "\n" | sha256 of program (64 hex) | "\n" | program
//! ```

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;

/// The first bytes of every cache file.
const MAGIC: &[u8] = b"berth-seccomp-bpf-1\n";
/// The header: magic, key, program digest, two newlines.
const HEADER: usize = MAGIC.len() + 64 + 1 + 64 + 1;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
pub(super) const MAX_INSNS: usize = 4096;
/// The size of one `struct sock_filter`.
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

/// The cache directory of the state root `root`: a name no container id can
/// take (`@` is not allowed in one).
pub(crate) fn dir(root: &Path) -> PathBuf {
    root.join(crate::CACHE_DIR).join("seccomp")
}

/// The cache key of `s` on this machine (hex sha256).
pub(super) fn key(s: &LinuxSeccomp) -> String {
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut text = format!(
        "{}{}\n{:?}\n",
        String::from_utf8_lossy(MAGIC),
        v,
        libseccomp::ScmpArch::native()
    )
    .into_bytes();
    // serde_json writes struct fields in declaration order: one profile,
    // one text.
    text.extend(serde_json::to_vec(s).unwrap_or_default());
    berth_core::digest::sha256_of(&text).digest().to_string()
}

/// `bytes` as instructions, when it holds 1 to MAX_INSNS whole ones.
pub(super) fn decode(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSN) || bytes.len() / INSN > MAX_INSNS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.bpf"))
}

/// The cached program for `key`, if a valid entry is there.
pub(super) fn read(dir: &Path, key: &str) -> Option<Vec<libc::sock_filter>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path(dir, key))
        .ok()?;
    let meta = file.metadata().ok()?;
    let max = (HEADER + MAX_INSNS * INSN) as u64;
    if !meta.is_file()
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.mode() & 0o022 != 0
        || meta.len() > max
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref().take(max + 1).read_to_end(&mut bytes).ok()?;
    parse(&bytes, key)
}

/// The program of the cache file `bytes`, when it is one for `key`.
fn parse(bytes: &[u8], key: &str) -> Option<Vec<libc::sock_filter>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (stored_key, rest) = split_line(rest)?;
    let (digest, program) = split_line(rest)?;
    if stored_key != key.as_bytes() {
        return None;
    }
    if digest != berth_core::digest::sha256_of(program).digest().as_bytes() {
        return None;
    }
    decode(program)
}

/// `bytes` cut after its first 64 bytes, which must be followed by `\n`.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    match bytes.get(64) {
        Some(b'\n') => Some((&bytes[..64], &bytes[65..])),
        _ => None,
    }
}

/// Stores `program` (exported by libseccomp) for `key`.
pub(super) fn write(dir: &Path, key: &str, program: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut data = Vec::with_capacity(HEADER + program.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(key.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(berth_core::digest::sha256_of(program).digest().as_bytes());
    data.push(b'\n');
    data.extend_from_slice(program);
    // Volatile: an entry lost in a crash is compiled again.
    berth_core::fs::atomic_write(&path(dir, key), &data, berth_core::fs::Durability::Volatile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, program: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), key, program).unwrap();
        std::fs::read(path(dir.path(), key)).unwrap()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_entry_reads_back_only_under_its_own_key() {
        let program = [6u8, 0, 0, 0, 0, 0, 0xff, 0x7f]; // ret ALLOW
        let bytes = entry(KEY, &program);
        let read = parse(&bytes, KEY).expect("a fresh entry parses");
        assert_eq!((read.len(), read[0].code, read[0].k), (1, 6, 0x7fff_0000));
        let other = KEY.replace('0', "1");
        assert!(
            parse(&bytes, &other).is_none(),
            "another key's entry was used"
        );
    }

    #[test]
    fn torn_or_altered_entries_are_refused() {
        let program: Vec<u8> = [6u8, 0, 0, 0, 1, 0, 5, 0].repeat(3);
        let bytes = entry(KEY, &program);
        for cut in [0, 10, HEADER - 1, HEADER, HEADER + 4, bytes.len() - 1] {
            assert!(parse(&bytes[..cut], KEY).is_none(), "cut at {cut} parsed");
        }
        for at in [0, MAGIC.len() + 3, HEADER - 2, HEADER, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(parse(&b, KEY).is_none(), "flipped byte {at} parsed");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse(&longer, KEY).is_none());
        // A whole, correctly hashed program that is not whole instructions.
        assert!(parse(&entry(KEY, &program[..12]), KEY).is_none());
        assert!(parse(&entry(KEY, &[]), KEY).is_none());
        assert!(parse(&entry(KEY, &[0u8; (MAX_INSNS + 1) * 8]), KEY).is_none());
    }

    #[test]
    fn files_anyone_else_may_write_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = [6u8, 0, 0, 0, 0, 0, 0xff, 0x7f];
        write(dir.path(), KEY, &program).unwrap();
        assert!(read(dir.path(), KEY).is_some());
        let p = path(dir.path(), KEY);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            read(dir.path(), KEY).is_none(),
            "a world-writable entry was used"
        );
        std::fs::remove_file(&p).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, entry(KEY, &program)).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(
            read(dir.path(), KEY).is_none(),
            "a symlinked entry was used"
        );
    }
}
