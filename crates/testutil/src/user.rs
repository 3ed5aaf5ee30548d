//! A real unprivileged user for the rootless tests: made with useradd
//! (with or without a subordinate id range in /etc/subuid and /etc/subgid),
//! removed with userdel on drop, with a scratch directory of its own and
//! commands run as it through setpriv.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require_peer, require_root, run_ok};

/// A user made for one test (see the module docs).
pub struct TestUser {
    /// The login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    dir: tempfile::TempDir,
}

impl TestUser {
    /// Makes a user; with `subids`, useradd gives it a range of 65536
    /// subordinate uids and gids, without, none.
    pub fn new(subids: bool) -> TestUser {
        require_root();
        for tool in ["useradd", "userdel", "setpriv", "newuidmap", "newgidmap"] {
            require_peer(tool);
        }
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "berthrl{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-user-")
            .tempdir()
            .expect("tempdir");
        let count = if subids { "65536" } else { "0" };
        // useradd fails while another test holds the password file's lock.
        let mut tries = 0;
        loop {
            let out = Command::new("useradd")
                .args(["--no-create-home", "--user-group", "--shell", "/bin/sh"])
                .arg("--home-dir")
                .arg(dir.path())
                .args(["-K", &format!("SUB_UID_COUNT={count}")])
                .args(["-K", &format!("SUB_GID_COUNT={count}")])
                .arg(&name)
                .output()
                .expect("run useradd");
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(
                tries < 50,
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let id = |flag: &str| -> u32 {
            let out = run_ok(Command::new("id").arg(flag).arg(&name));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("id")
        };
        let user = TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
            dir,
        };
        user.chown(user.dir.path());
        std::fs::set_permissions(user.dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the user's directory");
        let run = user.runtime_dir();
        std::fs::create_dir(&run).expect("create the runtime directory");
        user.chown(&run);
        user
    }

    /// The user's home and scratch directory (mode 0700, its own).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's XDG_RUNTIME_DIR, inside [`TestUser::dir`].
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Gives `path` and everything below it to the user.
    pub fn chown(&self, path: &Path) {
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path),
        );
    }

    /// The first id of the user's range in /etc/subuid (or /etc/subgid
    /// with `gids`).
    pub fn subid_start(&self, gids: bool) -> u32 {
        let file = if gids { "/etc/subgid" } else { "/etc/subuid" };
        let text = std::fs::read_to_string(file).expect("read the subordinate id file");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{}:", self.name)))
            .and_then(|rest| rest.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("user {} has no range in {file}", self.name))
    }

    /// A copy of `program` the user can run, in its directory (the build
    /// tree may sit below directories only root can enter): a hard link
    /// when possible.
    pub fn program(&self, program: &Path) -> PathBuf {
        let name = program.file_name().expect("a program file name");
        let bin = self.dir.path().join("bin");
        let copy = bin.join(name);
        if !copy.exists() {
            std::fs::create_dir_all(&bin).expect("create the user's bin");
            if std::fs::hard_link(program, &copy).is_err() {
                std::fs::copy(program, &copy).expect("copy the program for the user");
            }
        }
        copy
    }

    /// A copy of `program` ([`TestUser::program`]) run as the user: see
    /// [`TestUser::run_as`].
    pub fn command(&self, program: &Path) -> Command {
        self.run_as(&self.program(program))
    }

    /// `program` (one the user can reach, e.g. in /usr/bin) run as the
    /// user (no supplementary groups) with a clean environment: HOME and
    /// XDG_RUNTIME_DIR in the user's directory, and the host's PATH.
    pub fn run_as(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .current_dir(self.dir.path());
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // The user's processes are gone by now (each test waits for its
        // containers); userdel also drops the subordinate ranges.
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
