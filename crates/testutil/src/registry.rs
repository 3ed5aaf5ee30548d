//! Debian's docker-registry (the CNCF distribution registry) started by a
//! test on a free loopback port.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_peer;

/// Debian's docker-registry (the CNCF distribution registry) on a free
/// loopback port, with filesystem storage under `dir/docker-registry`;
/// stopped on drop.
pub struct DockerRegistry {
    child: Child,
    /// Its HOST:PORT.
    pub addr: String,
    /// Its storage root.
    pub storage: PathBuf,
}

impl DockerRegistry {
    /// Starts it; with `htpasswd`, behind that file's Basic auth.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> DockerRegistry {
        let auth = htpasswd.map(|h| {
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                h.display()
            )
        });
        DockerRegistry::start_with(dir, auth.as_deref().unwrap_or(""))
    }

    /// Starts it with `extra` (YAML, e.g. an `auth:` section) appended to
    /// its configuration.
    pub fn start_with(dir: &Path, extra: &str) -> DockerRegistry {
        let bin = require_peer("docker-registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.join("docker-registry");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        config.push_str(extra);
        let cfg = dir.join("docker-registry.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        DockerRegistry {
            child,
            addr,
            storage,
        }
    }

    /// Where it keeps the data of blob `digest` (`sha256:…`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
