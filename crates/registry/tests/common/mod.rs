//! Helpers for the registry's API tests: an in-process server on
//! 127.0.0.1:0 over its own temporary storage, and push helpers.
#![allow(dead_code)]

use berth_registry::{config::Config, Server};
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub struct TestRegistry {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: Client,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn config_for(dir: &std::path::Path) -> Config {
    let mut c = Config {
        addr: "127.0.0.1:0".into(),
        ..Default::default()
    };
    c.storage.root = dir.join("storage");
    if on_s3() {
        // Each registry gets its own corner of the shared bucket.
        let prefix = format!("t-{}", berth_registry::storage::random_hex(8));
        c.storage.s3 = Some(s3_config(&prefix));
    }
    c.log.access = false;
    c.gc.enabled = false;
    c
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config_for(dir.path());
        f(&mut c);
        Self::start_in(dir, c).await
    }

    pub async fn start_in(dir: tempfile::TempDir, c: Config) -> TestRegistry {
        let server = berth_registry::start(c).await.expect("start registry");
        let base = format!("http://{}", server.addr());
        TestRegistry {
            server: Some(server),
            dir,
            base,
            client: Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(std::time::Duration::from_secs(5)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client.head(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    /// A body-less request with a bearer token.
    pub async fn bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// PUT of an OCI image manifest (or `media_type`) body.
    pub async fn put_manifest(
        &self,
        path: &str,
        media_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        put_manifest_at(&self.client, self.url(path), media_type, body).await
    }

    /// PATCH of one upload chunk to session `loc`, with a Content-Range
    /// header when `range` is given.
    pub async fn patch_chunk(
        &self,
        loc: &str,
        range: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.client.patch(self.url(loc));
        if let Some(range) = range {
            req = req.header("content-range", range);
        }
        req.body(body).send().await.unwrap()
    }

    /// PUT that closes upload session `loc` as blob `digest`, with `body`
    /// as its last chunk.
    pub async fn finish_upload(
        &self,
        loc: &str,
        digest: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("{loc}?digest={digest}")))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Monolithic push; returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        push_blob_at(&self.client, |path| self.url(path), repo, data).await
    }

    /// Pushes a config and one layer and an image manifest under `tag`;
    /// returns (manifest digest, manifest bytes, [config, layer] digests).
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        seed: &str,
    ) -> (String, Vec<u8>, Vec<String>) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let layer = format!("layer-{seed}").repeat(100);
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let r = self
            .put_manifest(
                &format!("/v2/{repo}/manifests/{tag}"),
                OCI_MANIFEST,
                body.clone(),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        (sha256(&body), body, vec![cd, ld])
    }
}

/// Monolithic push of `data` to `repo`, the POST's URL made by `url_of`
/// from its path (so a round-robin client can pick the server); returns
/// the digest.
pub async fn push_blob_at(
    client: &Client,
    url_of: impl Fn(&str) -> String,
    repo: &str,
    data: &[u8],
) -> String {
    let d = sha256(data);
    let r = client
        .post(url_of(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    d
}

/// PUT of a manifest body of `media_type` to `url`.
pub async fn put_manifest_at(
    client: &Client,
    url: String,
    media_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .put(url)
        .header("content-type", media_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The spec error code of a response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

const S3_BUCKET: &str = "registry";
/// Credentials of the test S3 servers (Garage's key-id format; SeaweedFS
/// takes anything).
const S3_KEY: &str = "GK0123456789abcdef01234567";
const S3_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// S3 storage under `prefix` of the test bucket on this binary's S3
/// server (started on first use).
pub fn s3_config(prefix: &str) -> berth_registry::storage::S3Config {
    berth_registry::storage::S3Config {
        endpoint: s3_server().endpoint.clone(),
        bucket: S3_BUCKET.into(),
        region: s3_server().region.into(),
        access_key_id: S3_KEY.into(),
        secret_access_key: S3_SECRET.into(),
        prefix: prefix.into(),
        timeout_secs: 30,
    }
}

/// True in the `s3` test binary, which runs the same suites with S3 storage
/// on a real S3 server instead of the filesystem.
pub fn on_s3() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("s3-"))
        })
        .unwrap_or(false)
}

/// A running S3 server for the tests.
pub struct S3Server {
    pub endpoint: String,
    pub region: &'static str,
}

/// The S3 server shared by this test binary: SeaweedFS, or Garage with
/// `BERTH_S3_SERVER=garage` (`BERTH_GARAGE` names its binary). Started on
/// first use with its own data directory and ports; a watchdog shell stops
/// it and removes its data when the test process exits.
pub fn s3_server() -> &'static S3Server {
    static SERVER: std::sync::OnceLock<Result<S3Server, String>> = std::sync::OnceLock::new();
    let started = SERVER.get_or_init(|| {
        std::panic::catch_unwind(start_s3_server).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match started {
        Ok(server) => server,
        Err(why) => panic!("the S3 server for the S3 suite did not start: {why}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}

fn wait_until(what: &str, log: &std::path::Path, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen; see {}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Runs `command` in the background under a watchdog that kills it and
/// removes `dir` once this test process is gone.
fn run_watched(command: &str, dir: &std::path::Path) {
    let script = format!(
        "{command} >{log} 2>&1 & w=$!; while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         kill $w; sleep 3; kill -9 $w; wait $w; rm -rf {dir}",
        log = dir.join("server.log").display(),
        me = std::process::id(),
        dir = dir.display()
    );
    // The watchdog runs in the background of a shell that exits at once.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("({script}) </dev/null >/dev/null 2>&1 &")])
        .status()
        .expect("start the S3 server");
    assert!(status.success(), "starting the S3 server failed: {status}");
}

fn start_s3_server() -> S3Server {
    let garage = std::env::var("BERTH_S3_SERVER").is_ok_and(|v| v == "garage");
    let kind = if garage { "garage" } else { "seaweedfs" };
    let region = if garage { "garage" } else { "us-east-1" };
    let dir = std::env::temp_dir().join(format!("berth-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("S3 server data directory");
    // The suites included by tests/s3.rs each have their own copy of this
    // module: the first to create `starter` starts the server, the others
    // wait for its endpoint file.
    let endpoint_file = dir.join("endpoint");
    let starter = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("starter"));
    if starter.is_err() {
        wait_until("the S3 server start", &dir.join("server.log"), || {
            endpoint_file.exists()
        });
        let endpoint = std::fs::read_to_string(&endpoint_file).unwrap();
        return S3Server { endpoint, region };
    }
    let endpoint = if garage {
        start_garage(&dir)
    } else {
        start_seaweedfs(&dir)
    };
    let tmp = dir.join("endpoint.tmp");
    std::fs::write(&tmp, &endpoint).unwrap();
    std::fs::rename(&tmp, &endpoint_file).unwrap();
    S3Server { endpoint, region }
}

fn start_seaweedfs(dir: &std::path::Path) -> String {
    let weed =
        std::env::var("BERTH_WEED").unwrap_or_else(|_| "/opt/berth-seaweedfs/bin/weed".into());
    let weed = berth_testutil::require_peer(&weed);
    let s3_json = dir.join("s3.json");
    std::fs::write(
        &s3_json,
        format!(
            r#"{{"identities":[{{"name":"berth","credentials":[{{"accessKey":"{S3_KEY}","secretKey":"{S3_SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .unwrap();
    let p: Vec<u16> = (0..8).map(|_| free_port()).collect();
    run_watched(
        &format!(
            "{} server -dir={} -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
             -master.port={} -master.port.grpc={} -volume.port={} -volume.port.grpc={} \
             -volume.max=50 -master.volumeSizeLimitMB=64 -filer -filer.port={} -filer.port.grpc={} \
             -s3 -s3.port={} -s3.port.grpc={} -s3.config={} -s3.port.iceberg=0 -s3.port.lance=0 -iam=false",
            weed.display(),
            dir.display(),
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
            s3_json.display()
        ),
        dir,
    );
    // The bucket is a directory under the filer's /buckets.
    wait_until(
        "SeaweedFS start and bucket creation",
        &dir.join("server.log"),
        || {
            std::net::TcpStream::connect(("127.0.0.1", p[6])).is_ok()
                && filer_mkdir(p[4], S3_BUCKET)
        },
    );
    format!("http://127.0.0.1:{}", p[6])
}

/// `POST /buckets/NAME/?op=mkdir` on the SeaweedFS filer: true once the
/// directory (the bucket) exists.
fn filer_mkdir(port: u16, name: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let req = format!(
        "POST /buckets/{name}/?op=mkdir HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut answer).is_err() {
        return false;
    }
    answer.starts_with("HTTP/1.1 201") || answer.contains("already exists")
}

fn start_garage(dir: &std::path::Path) -> String {
    let garage = std::env::var("BERTH_GARAGE").unwrap_or_else(|_| "garage".into());
    let garage = berth_testutil::require_peer(&garage);
    let p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = dir.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{}\"\nrpc_public_addr = \"127.0.0.1:{}\"\n\
             rpc_secret = \"{}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{}\"\n\
             root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{}\"\n",
            p[0],
            p[0],
            berth_registry::storage::random_hex(32),
            p[1],
            p[2],
            d = dir.display()
        ),
    )
    .unwrap();
    run_watched(
        &format!("{} -c {} server", garage.display(), config.display()),
        dir,
    );
    let cli = |args: &[&str]| {
        std::process::Command::new("timeout")
            .arg("60")
            .arg(&garage)
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let log = dir.join("server.log");
    let mut node = String::new();
    wait_until("Garage start", &log, || {
        node = cli(&["node", "id", "-q"]).unwrap_or_default();
        !node.is_empty()
    });
    let node = node.split('@').next().unwrap_or_default().to_string();
    for step in [
        vec!["layout", "assign", "-z", "dc1", "-c", "1G", node.as_str()],
        vec!["layout", "apply", "--version", "1"],
        vec!["bucket", "create", S3_BUCKET],
        vec!["key", "import", "--yes", "-n", "berth", S3_KEY, S3_SECRET],
        vec![
            "bucket", "allow", "--read", "--write", "--owner", S3_BUCKET, "--key", "berth",
        ],
    ] {
        assert!(
            cli(&step).is_some(),
            "garage {step:?} failed; see {}",
            log.display()
        );
    }
    format!("http://127.0.0.1:{}", p[1])
}
