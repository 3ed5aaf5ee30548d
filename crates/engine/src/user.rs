//! Resolving an image's `User` ("name", "uid", "uid:gid", "name:group")
//! through the image's own /etc/passwd and /etc/group, read confined to the
//! root filesystem (openat2 RESOLVE_IN_ROOT), so a symlinked /etc/passwd in
//! a hostile image can never make berth read a host file.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use berth_runtime::spec::MAX_ID;

use crate::error::{Error, Result};

/// A resolved user: uid, primary gid, additional gids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership).
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd; "/" for a uid the image doesn't
    /// define (docker's and podman's rule for HOME).
    pub home: String,
}

/// Reads `rel` inside `rootfs`, resolving symlinks as if `rootfs` were `/`.
/// A missing file reads as empty.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String> {
    let root = std::fs::File::open(rootfs).map_err(|e| Error::io(rootfs, e))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(root.as_fd(), rel, how) {
        Ok(fd) => {
            let mut text = String::new();
            std::fs::File::from(fd)
                .take(16 << 20)
                .read_to_string(&mut text)
                .map_err(|e| Error::io(rootfs.join(rel), e))?;
            Ok(text)
        }
        Err(nix::errno::Errno::ENOENT) => Ok(String::new()),
        Err(e) => Err(Error::io(rootfs.join(rel), std::io::Error::from(e))),
    }
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The colon-separated fields of each non-comment line, parsed by `parse`
/// (lines it rejects are skipped, as libc does).
fn parse_lines<T>(text: &str, parse: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| parse(&l.split(':').collect::<Vec<_>>()))
        .collect()
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    parse_lines(text, |f| {
        Some(Passwd {
            name: f.first()?.to_string(),
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f
                .get(5)
                .filter(|h| !h.is_empty())
                .unwrap_or(&"/")
                .to_string(),
        })
    })
}

fn parse_group(text: &str) -> Vec<Group> {
    parse_lines(text, |f| {
        Some(Group {
            name: f.first()?.to_string(),
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Resolves `user` (the image's or an override) against `rootfs`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser> {
    let user = user.trim();
    if user.is_empty() {
        return resolve_user(rootfs, "0");
    }
    let passwd = parse_passwd(&read_in_root(rootfs, "/etc/passwd")?);
    let groups = parse_group(&read_in_root(rootfs, "/etc/group")?);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid, name, home) = match user_part.parse::<u32>() {
        Ok(uid) => match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone()), p.home.clone()),
            None => (uid, 0, None, "/".to_string()),
        },
        Err(_) => match passwd.iter().find(|p| p.name == user_part) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone()), p.home.clone()),
            None => {
                return Err(Error::invalid(
                    format!("user {user_part:?}"),
                    "not found in the image's /etc/passwd; use a numeric uid or a user the image defines",
                ))
            }
        },
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|gr| gr.name == g) {
                Some(gr) => gr.gid,
                None => {
                    return Err(Error::invalid(
                        format!("group {g:?}"),
                        "not found in the image's /etc/group; use a numeric gid or a group the image defines",
                    ))
                }
            },
        };
    }
    let mut additional_gids = Vec::new();
    if group_part.is_none() {
        if let Some(name) = &name {
            for g in &groups {
                if g.members.iter().any(|m| m == name)
                    && g.gid != gid
                    && !additional_gids.contains(&g.gid)
                {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    for id in [uid, gid].iter().chain(&additional_gids) {
        if *id > MAX_ID {
            return Err(Error::invalid(
                format!("user {user:?}"),
                format!("id {id} is out of range: ids run from 0 to {MAX_ID} (4294967295 would mean \"unchanged\" to the kernel and leave the process root)"),
            ));
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary root filesystem with just /etc/passwd and /etc/group.
    pub(crate) fn rootfs_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    fn rootfs() -> tempfile::TempDir {
        rootfs_with(
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "root:x:0:\nwww:x:33:\nalice:x:1000:\naudio:x:29:alice\nvideo:x:44:alice,www\n",
        )
    }

    #[test]
    fn names_ids_and_groups() {
        let r = rootfs();
        let p = r.path();
        assert_eq!(
            resolve_user(p, "").unwrap(),
            ResolvedUser {
                home: "/root".into(),
                ..Default::default()
            }
        );
        assert_eq!(
            resolve_user(p, "alice").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![29, 44],
                home: "/home/alice".into(),
            }
        );
        assert_eq!(resolve_user(p, "33").unwrap().gid, 33);
        assert_eq!(
            resolve_user(p, "4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![],
                home: "/".into(),
            }
        );
        assert_eq!(
            resolve_user(p, "1000:44").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 44,
                additional_gids: vec![],
                home: "/home/alice".into(),
            }
        );
        assert_eq!(
            resolve_user(p, "www:audio").unwrap(),
            ResolvedUser {
                uid: 33,
                gid: 29,
                additional_gids: vec![],
                home: "/var/www".into(),
            }
        );
        let err = resolve_user(p, "bob").unwrap_err().to_string();
        assert!(
            err.contains("\"bob\"") && err.contains("/etc/passwd"),
            "{err}"
        );
        let err = resolve_user(p, "alice:nogroup").unwrap_err().to_string();
        assert!(err.contains("\"nogroup\""), "{err}");
    }

    #[test]
    fn ids_beyond_the_kernels_range_are_refused() {
        // 4294967295 is (uid_t)-1: "unchanged" to setresuid, so root.
        let r = rootfs_with(
            "root:x:0:0:root:/root:/bin/sh\nghost:x:4294967295:0::/:/bin/sh\n",
            "root:x:0:\nbig:x:2147483648:root\n",
        );
        let p = r.path();
        for user in [
            "4294967295",
            "4294967295:4294967295",
            "0:2147483648",
            "ghost",
            "root",
        ] {
            let err = resolve_user(p, user).unwrap_err().to_string();
            assert!(
                err.contains(user) && err.contains("out of range"),
                "{user}: {err}"
            );
        }
        assert_eq!(
            resolve_user(p, "2147483647:2147483647").unwrap().uid,
            2147483647
        );
    }

    #[test]
    fn passwd_symlink_cannot_escape_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        // Points at the host's /etc/passwd if followed naively.
        std::os::unix::fs::symlink("/../../../../etc/passwd", r.path().join("etc/passwd")).unwrap();
        // Inside the root the link resolves to <rootfs>/etc/passwd itself: a loop, or missing.
        let result = resolve_user(r.path(), "root");
        assert!(
            result.is_err(),
            "the host's root entry must not be found through the link"
        );
    }
}
