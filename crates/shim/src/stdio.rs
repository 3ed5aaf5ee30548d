//! A process's stdio over containerd's FIFOs. Without a terminal, stdout and
//! stderr are the FIFOs themselves (opened read-write, so opening never
//! blocks and a reader that goes away cannot kill the process with
//! SIGPIPE); stdin is a pipe fed from the stdin FIFO by a thread, so that
//! `close_io` can give the process its EOF. With a terminal, threads copy
//! between the pty master and the FIFOs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};

/// The stdio paths containerd gave for one process.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    /// The stdin FIFO ("" for none).
    pub stdin: String,
    /// The stdout FIFO or `file://` path ("" for none).
    pub stdout: String,
    /// The stderr FIFO or `file://` path ("" for none).
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

/// What the shim keeps of a process's stdio while it runs.
#[derive(Default)]
pub struct Handles {
    /// Where the stdin thread writes (the pipe to the process, or a copy of
    /// the pty master); taken by `close_io`.
    stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for `resize_pty`.
    pub master: Option<Arc<OwnedFd>>,
    /// The stdin FIFO a thread copies from (it may still wait in its open).
    stdin_fifo: Option<String>,
}

impl Drop for Handles {
    /// Ends the stdin thread's wait for a writer on the FIFO when nobody
    /// ever came (the process failed to start, or its client went away
    /// first): it opens as that writer and goes, so the thread reads its
    /// end of input and ends instead of waiting forever.
    fn drop(&mut self) {
        if let Some(fifo) = &self.stdin_fifo {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
        }
    }
}

impl Handles {
    /// Closes the process's stdin (it reads EOF once the data copied so far
    /// is consumed).
    pub fn close_stdin(&self) {
        if let Ok(mut w) = self.stdin.lock() {
            w.take();
        }
    }
}

/// Opens an output path: a FIFO read-write, a `file://` path for appending.
fn open_output(path: &str) -> Result<File> {
    if path.is_empty() {
        return File::options()
            .write(true)
            .open("/dev/null")
            .context("/dev/null");
    }
    if let Some(file) = path.strip_prefix("file://") {
        return OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("open the output file {file}"));
    }
    if path.contains("://") {
        bail!("stdio {path:?}: only FIFOs and file:// paths are supported by this shim (not binary:// loggers)");
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open the stdio FIFO {path}"))
}

/// Copies the stdin FIFO `path` into `handles`' stdin until EOF or
/// `close_io`, in a thread (opening the FIFO blocks until containerd's
/// writer is there, or until the handles are dropped).
fn feed_stdin(path: String, handles: &mut Handles) {
    let dest = handles.stdin.clone();
    handles.stdin_fifo = Some(path.clone());
    std::thread::spawn(move || {
        let Ok(mut fifo) = File::open(&path) else {
            dest.lock().map(|mut d| d.take()).ok();
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        loop {
            let n = match fifo.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Ok(mut d) = dest.lock() else { break };
            let Some(out) = d.as_mut() else { break };
            if out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        dest.lock().map(|mut d| d.take()).ok();
    });
}

/// Descriptors for a process without a terminal: what it gets as fds 0, 1
/// and 2, and what the shim keeps.
pub fn pipes(paths: &Paths) -> Result<(Arc<[OwnedFd; 3]>, Handles)> {
    let mut handles = Handles::default();
    let stdin: OwnedFd = if paths.stdin.is_empty() {
        File::open("/dev/null").context("/dev/null")?.into()
    } else {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        *handles.stdin.lock().expect("new lock") = Some(File::from(w));
        feed_stdin(paths.stdin.clone(), &mut handles);
        r
    };
    let stdout = open_output(&paths.stdout)?.into();
    let stderr = open_output(&paths.stderr)?.into();
    Ok((Arc::new([stdin, stdout, stderr]), handles))
}

/// A listening socket the runtime sends a new pty master to.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Binds a fresh socket in `root`'s `@console` directory (no container id has an @), which only
    /// root may enter (so no other user can connect first and hand over a
    /// terminal of their own).
    pub fn bind(root: &Path) -> Result<ConsoleSocket> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = root.join("@console");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        let path = dir.join(format!(
            ".console-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listen on the console socket {}", path.display()))?;
        Ok(ConsoleSocket { listener, path })
    }

    /// Where it listens (the runtime's console socket option).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the master and starts copying between it and the FIFOs.
    pub fn attach(self, paths: &Paths) -> Result<Handles> {
        let (master, _) = berth_runtime::console::recv_master(&self.listener)
            .context("receive the pty master")?;
        let master = Arc::new(master);
        let mut out = open_output(&paths.stdout)?;
        let mut from = File::from(master.as_fd().try_clone_to_owned()?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut out);
        });
        let mut handles = Handles::default();
        handles.master = Some(master.clone());
        if !paths.stdin.is_empty() {
            *handles.stdin.lock().expect("new lock") =
                Some(File::from(master.as_fd().try_clone_to_owned()?));
            feed_stdin(paths.stdin.clone(), &mut handles);
        }
        Ok(handles)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
