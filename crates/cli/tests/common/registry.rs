//! Registry peers shared by the registry tests: `berth registry serve` and
//! Debian's docker-registry (from berth-testutil) as child processes, a
//! busybox OCI layout made with umoci, an htpasswd user, and a minimal
//! HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// Not every test binary that includes this module starts one.
#[allow(unused_imports)]
pub use berth_testutil::registry::DockerRegistry;
use berth_testutil::{busybox_layout, run_ok};

/// A `berth registry serve` child process.
pub struct Serve {
    /// The server process.
    pub child: Child,
    /// Its HOST:PORT.
    pub addr: String,
}

impl Serve {
    pub fn start(storage: &Path, extra: &[&str]) -> Serve {
        Serve::start_with_stdout(storage, extra, Stdio::null())
    }

    /// Like [`Serve::start`], with the access log (stdout) going to `stdout`.
    pub fn start_with_stdout(storage: &Path, extra: &[&str], stdout: Stdio) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--storage"])
            .arg(storage)
            .args(extra)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth registry serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("read stderr");
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest
                    .split_whitespace()
                    .next()
                    .map(|a| a.split("://").last().unwrap_or(a).to_string());
                break;
            }
            eprintln!("registry: {line}");
        }
        let addr = addr.expect("berth registry serve exited before listening");
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("registry: {line}");
            }
        });
        Serve { child, addr }
    }

    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 exchange (Connection: close): status, headers, body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to registry");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

pub fn sha256_hex(data: &[u8]) -> String {
    // Hash with the system's sha256sum to stay independent of the server's code.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs skopeo with `args` then the `refs` (paths or references).
pub fn skopeo(args: &[&str], refs: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    let mut c = Command::new("skopeo");
    c.args(args);
    for r in refs {
        c.arg(r);
    }
    c.output().expect("run skopeo")
}

/// Runs `cmd`, failing the test unless it exits 0; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// A registry holding busybox (made with umoci, pushed with skopeo) as
/// `seed/busybox:latest`.
pub fn seeded_registry(dir: &Path) -> Serve {
    let layout = busybox_layout(dir);
    let reg = Serve::start(&dir.join("storage"), &[]);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/seed/busybox:latest", reg.addr)));
    reg
}

/// An htpasswd file in `dir` with user alice, password s3cret.
pub fn alice_htpasswd(dir: &Path) -> PathBuf {
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("alice:{}\n", bcrypt_hash("s3cret"))).unwrap();
    path
}

/// A bcrypt hash from `berth registry htpasswd` (password on stdin).
pub fn bcrypt_hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["registry", "htpasswd", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    line.strip_prefix("alice:")
        .expect("user:hash line")
        .to_string()
}
