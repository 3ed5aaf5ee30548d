//! Three registry replicas on one real SeaweedFS bucket (started by the
//! test on loopback), every request of the test's client sent to the next
//! replica in turn: uploads whose requests each land on another replica,
//! racing chunks, mounts, tag moves, concurrent pushes while GC runs on
//! all three, a replica that loses its S3 server, and skopeo through an
//! nginx round-robin proxy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use berth_registry::config::Config;
use common::{sha256, TestRegistry, OCI_MANIFEST};
use reqwest::{Client, Response, StatusCode};

/// Replicas sharing one prefix of the test bucket, and a client that sends
/// each request to the next one.
struct Replicas {
    regs: Vec<TestRegistry>,
    turn: AtomicUsize,
    client: Client,
}

impl Replicas {
    async fn start(n: usize, f: impl Fn(&mut Config)) -> Replicas {
        let prefix = format!("replicas-{}", berth_registry::storage::random_hex(8));
        let mut regs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut c = common::config_for(dir.path());
            c.storage.s3 = Some(common::s3_config(&prefix));
            f(&mut c);
            regs.push(TestRegistry::start_in(dir, c).await);
        }
        Replicas {
            regs,
            turn: AtomicUsize::new(0),
            client: Client::new(),
        }
    }

    /// `path` on the next replica.
    fn url(&self, path: &str) -> String {
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.regs.len();
        self.regs[i].url(path)
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> Response {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .unwrap()
    }

    /// A chunked upload: POST, one PATCH per chunk with its Content-Range,
    /// a GET of the status, and the PUT, each on the next replica.
    async fn push_chunked(&self, repo: &str, data: &[u8], chunk: usize) -> String {
        let d = sha256(data);
        let r = self
            .send(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        for (i, piece) in data.chunks(chunk.max(1)).enumerate() {
            let start = i * chunk;
            let end = start + piece.len() - 1;
            let r = self
                .client
                .patch(self.url(&loc))
                .header("content-range", format!("{start}-{end}"))
                .body(piece.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {start}-{end}");
            assert_eq!(r.headers()["range"], format!("0-{end}").as_str());
            let r = self.send(reqwest::Method::GET, &loc).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            assert_eq!(
                r.headers()["range"],
                format!("0-{end}").as_str(),
                "every replica reports the offset another one stored"
            );
        }
        let r = self
            .client
            .put(self.url(&format!("{loc}?digest={d}")))
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

    async fn push_monolithic(&self, repo: &str, data: &[u8]) -> String {
        common::push_blob_at(&self.client, |path| self.url(path), repo, data).await
    }

    /// Pushes blobs `config` and `layers` (skipping those a HEAD finds,
    /// as clients do) and a manifest under `tag`; returns its digest.
    async fn push_image(&self, repo: &str, tag: &str, config: &[u8], layers: &[Vec<u8>]) -> String {
        let mut descs = Vec::new();
        for (i, blob) in std::iter::once(config)
            .chain(layers.iter().map(Vec::as_slice))
            .enumerate()
        {
            let d = sha256(blob);
            let r = self
                .send(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
                .await;
            if r.status() != StatusCode::OK {
                match i % 2 {
                    0 => self.push_monolithic(repo, blob).await,
                    _ => self.push_chunked(repo, blob, blob.len() / 3 + 1).await,
                };
            }
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d, "size": blob.len()
            }));
        }
        let mut config_desc = descs.remove(0);
        config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config_desc, "layers": descs,
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let r = common::put_manifest_at(&self.client, url, OCI_MANIFEST, body.clone()).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "manifest {repo}:{tag}: {}",
            r.text().await.unwrap()
        );
        sha256(&body)
    }

    /// Every replica serves manifest `digest` of `repo` and every blob it
    /// names, each blob's bytes matching its digest.
    async fn check_image(&self, repo: &str, digest: &str) {
        for reg in &self.regs {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/{repo}/manifests/{digest}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "{repo}@{digest} on {}",
                reg.base
            );
            let m: serde_json::Value = r.json().await.unwrap();
            let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
            for l in m["layers"].as_array().unwrap() {
                blobs.push(l["digest"].as_str().unwrap().to_string());
            }
            for b in blobs {
                let r = reg.get(&format!("/v2/{repo}/blobs/{b}")).await;
                assert_eq!(
                    r.status(),
                    StatusCode::OK,
                    "blob {b} of {repo}@{digest} on {}",
                    reg.base
                );
                assert_eq!(sha256(&r.bytes().await.unwrap()), b, "bytes of {b}");
            }
        }
    }

    /// Every blob in the bucket has the bytes its digest names.
    async fn check_every_stored_blob(&self) -> usize {
        let driver = &self.regs[0].server.as_ref().unwrap().app().store.driver;
        let hexes = driver.list("blobs/sha256").await.unwrap();
        for hex in &hexes {
            let data = driver.get(&format!("blobs/sha256/{hex}")).await.unwrap();
            let data = data.unwrap_or_else(|| panic!("blob {hex} listed but unreadable"));
            assert_eq!(sha256(&data), format!("sha256:{hex}"), "stored blob {hex}");
        }
        hexes.len()
    }
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

/// Monolithic and chunked uploads, status, cancel: every request on
/// another replica than the one before.
#[tokio::test]
async fn every_request_of_an_upload_may_land_on_another_replica() {
    let set = Replicas::start(3, |_| {}).await;
    let data = pattern(1, 3 * 1024 * 1024 + 17);
    // 7 chunks: POST, then PATCH and GET alternate over the replicas.
    let d = set.push_chunked("spread/app", &data, data.len() / 6).await;
    let m = set.push_monolithic("spread/app", b"a small config").await;
    for reg in &set.regs {
        for (digest, bytes) in [(&d, &data[..]), (&m, &b"a small config"[..])] {
            let r = reg.get(&format!("/v2/spread/app/blobs/{digest}")).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(&r.bytes().await.unwrap()[..], bytes);
        }
    }
    // A streamed PATCH (no Content-Range) on one replica, a PUT with the
    // last chunk on the next.
    let r = set
        .send(reqwest::Method::POST, "/v2/spread/app/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = set
        .client
        .patch(set.url(&loc))
        .body("first half, ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let whole = b"first half, second half";
    let r = set
        .client
        .put(set.url(&format!("{loc}?digest={}", sha256(whole))))
        .body("second half")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Cancelled on one replica: unknown on the others.
    let r = set
        .send(reqwest::Method::POST, "/v2/spread/app/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = set
        .client
        .patch(set.url(&loc))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        set.send(reqwest::Method::DELETE, &loc).await.status(),
        StatusCode::NO_CONTENT
    );
    for _ in 0..3 {
        let r = set.send(reqwest::Method::GET, &loc).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(common::error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    // An out-of-order chunk on another replica gets 416 with the Range
    // the first replica stored.
    let r = set
        .send(reqwest::Method::POST, "/v2/spread/app/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = set
        .client
        .patch(set.url(&loc))
        .header("content-range", "0-2")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = set
        .client
        .patch(set.url(&loc))
        .header("content-range", "0-2")
        .body("xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["range"], "0-2");
}

/// Two replicas PATCH the same chunk of one session at once: one gets
/// 202, the other 416, and the blob is the winner's bytes.
#[tokio::test]
async fn concurrent_chunks_on_two_replicas_one_wins_the_other_gets_416() {
    let set = Arc::new(Replicas::start(3, |_| {}).await);
    for round in 0..4u32 {
        let r = set
            .send(reqwest::Method::POST, "/v2/race/blobs/uploads/")
            .await;
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let bodies = [pattern(round * 2, 4 << 20), pattern(round * 2 + 1, 4 << 20)];
        let sends = bodies.iter().enumerate().map(|(i, body)| {
            let url = set.regs[1 + i].url(&loc);
            let (client, body) = (set.client.clone(), body.clone());
            async move {
                client
                    .patch(url)
                    .header("content-range", format!("0-{}", body.len() - 1))
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        });
        let statuses = futures::future::join_all(sends).await;
        let winner = match statuses[..] {
            [StatusCode::ACCEPTED, StatusCode::RANGE_NOT_SATISFIABLE] => 0,
            [StatusCode::RANGE_NOT_SATISFIABLE, StatusCode::ACCEPTED] => 1,
            _ => panic!("round {round}: expected one 202 and one 416, got {statuses:?}"),
        };
        let d = sha256(&bodies[winner]);
        let r = set
            .client
            .put(set.url(&format!("{loc}?digest={d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "round {round}: {}",
            r.text().await.unwrap()
        );
        let r = set.regs[0].get(&format!("/v2/race/blobs/{d}")).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
    // No segment of a losing request is left behind.
    let driver = &set.regs[0].server.as_ref().unwrap().app().store.driver;
    assert_eq!(driver.list("uploads").await.unwrap(), Vec::<String>::new());
}

/// Mounts, manifest pushes, tag moves and deletes made through one
/// replica are seen at once by the others.
#[tokio::test]
async fn mounts_and_tag_moves_are_seen_by_every_replica_at_once() {
    let set = Replicas::start(3, |_| {}).await;
    let v1 = set
        .push_image("tags/a", "latest", b"config one", &[pattern(3, 5000)])
        .await;
    // Cross-repository mount on one replica, HEAD on the next.
    let layer = sha256(&pattern(3, 5000));
    let r = set
        .send(
            reqwest::Method::POST,
            &format!("/v2/tags/b/blobs/uploads/?mount={layer}&from=tags/a"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for reg in &set.regs {
        assert_eq!(
            reg.head(&format!("/v2/tags/b/blobs/{layer}"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let read_tag = |reg: &TestRegistry| {
        let url = reg.url("/v2/tags/a/manifests/latest");
        let client = reg.client.clone();
        async move {
            let r = client
                .get(url)
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.headers()
                    .get("docker-content-digest")
                    .map(|h| h.to_str().unwrap().to_string()),
            )
        }
    };
    for reg in &set.regs {
        assert_eq!(read_tag(reg).await, (StatusCode::OK, Some(v1.clone())));
    }
    for round in 0..3 {
        let moved = set
            .push_image(
                "tags/a",
                "latest",
                format!("config {round}").as_bytes(),
                &[pattern(3, 5000)],
            )
            .await;
        for reg in &set.regs {
            assert_eq!(
                read_tag(reg).await,
                (StatusCode::OK, Some(moved.clone())),
                "tag move {round} seen by {}",
                reg.base
            );
            let tags: serde_json::Value =
                reg.get("/v2/tags/a/tags/list").await.json().await.unwrap();
            assert_eq!(tags["tags"], serde_json::json!(["latest"]));
        }
    }
    assert_eq!(
        set.send(reqwest::Method::DELETE, "/v2/tags/a/manifests/latest")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    for reg in &set.regs {
        assert_eq!(read_tag(reg).await.0, StatusCode::NOT_FOUND);
    }
}

/// Concurrent pushes of the same image and of different images, with GC
/// running every second on all three replicas and garbage of the same
/// content waiting to be collected: every manifest pushed has all of its
/// blobs, and every blob in the bucket matches its digest.
#[tokio::test]
async fn concurrent_pushes_with_gc_on_every_replica_lose_no_blob() {
    let set = Arc::new(
        Replicas::start(3, |c| {
            c.gc.enabled = true;
            c.gc.interval_secs = 1;
            c.gc.grace_secs = 4;
            c.gc.upload_grace_secs = 3600;
        })
        .await,
    );
    let layer = |image: u32, n: u32| pattern(image * 16 + n, 20_000 + (n as usize) * 7000);
    // Garbage: blobs of every image, pushed without manifests and left to
    // grow old, so GC wants them just as the pushes below find them.
    for image in 0..4 {
        for n in 0..3 {
            set.push_monolithic("garbage", &layer(image, n)).await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut pushes = Vec::new();
    for client in 0..6u32 {
        let set = set.clone();
        pushes.push(tokio::spawn(async move {
            let mut pushed = Vec::new();
            for round in 0..4u32 {
                // Clients 0-2 push the same image into one repository;
                // the others each their own.
                let (repo, image) = match client {
                    0..=2 => ("same/app".to_string(), round % 4),
                    c => (format!("own/app{c}"), (c + round) % 4),
                };
                let layers: Vec<Vec<u8>> = (0..3).map(|n| layer(image, n)).collect();
                let config = format!("config of image {image}");
                let d = set
                    .push_image(&repo, &format!("r{round}"), config.as_bytes(), &layers)
                    .await;
                pushed.push((repo, d));
            }
            pushed
        }));
    }
    let mut manifests = Vec::new();
    for p in pushes {
        manifests.extend(p.await.expect("a push task failed"));
    }
    // GC kept running during all of it.
    let runs: u64 = set
        .regs
        .iter()
        .map(|r| {
            r.server
                .as_ref()
                .unwrap()
                .app()
                .metrics
                .gc_runs
                .load(Ordering::Relaxed)
        })
        .sum();
    assert!(runs >= 3, "GC ran {runs} times across the replicas");
    for (repo, d) in &manifests {
        set.check_image(repo, d).await;
    }
    assert!(set.check_every_stored_blob().await >= 12);
}

/// A replica whose S3 server stops answering gives 503 UNAVAILABLE with
/// the storage error, and `/readyz` says so, while `/healthz` and a
/// healthy replica's `/readyz` answer 200.
#[tokio::test]
async fn a_replica_that_loses_s3_answers_503_and_is_not_ready() {
    let healthy = Replicas::start(1, |_| {}).await;
    assert_eq!(
        healthy.regs[0].get("/readyz").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        healthy.regs[0].get("/healthz").await.status(),
        StatusCode::OK
    );
    // An "S3 server" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let lost = Replicas::start(1, |c| {
        let s3 = c.storage.s3.as_mut().unwrap();
        s3.endpoint = endpoint.clone();
        s3.timeout_secs = 1;
    })
    .await;
    let reg = &lost.regs[0];
    assert_eq!(reg.get("/healthz").await.status(), StatusCode::OK);
    let r = reg.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = reg.get("/v2/some/app/manifests/latest").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("storage unavailable") && message.contains("S3"),
        "{message}"
    );
    hold.abort();
}

/// A child process killed and reaped when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx (Debian's) balancing request by request over the three replicas,
/// `skopeo copy` of busybox in and out through it, then `podman pull` and
/// `podman push` through it, and `ctr images pull` and `push` through it.
#[tokio::test]
async fn skopeo_copies_through_a_round_robin_proxy() {
    use berth_testutil::{busybox_layout, require_peer, run_ok, Containerd};
    use std::process::Command;
    let nginx = require_peer("nginx");
    require_peer("skopeo");
    require_peer("podman");
    require_peer("ctr");
    let set = Replicas::start(3, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstreams: String = set
        .regs
        .iter()
        .map(|r| format!("server {};", r.base.trim_start_matches("http://")))
        .collect();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{}}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             upstream replicas {{ {upstreams} }}\n\
             server {{ listen 127.0.0.1:{port}; client_max_body_size 0;\n\
             proxy_request_buffering off; proxy_buffering off; proxy_http_version 1.1;\n\
             location / {{ proxy_pass http://replicas; proxy_set_header Host $http_host; }} }} }}\n"
        ),
    )
    .unwrap();
    // One process (master_process off), stopped when the test ends, even
    // by a panic.
    let _proxy = Stopped(
        Command::new(&nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .spawn()
            .expect("start nginx"),
    );
    let proxy_url = format!("http://127.0.0.1:{port}");
    let client = Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.get(format!("{proxy_url}/v2/")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start; see {d}/error.log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let layout = busybox_layout(dir.path());
    let pushed = tokio::task::spawn_blocking({
        let (layout, port, out) = (layout.clone(), port, dir.path().join("out"));
        move || {
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--dest-tls-verify=false"])
                    .arg(format!("oci:{}:latest", layout.display()))
                    .arg(format!("docker://127.0.0.1:{port}/proxied/busybox:latest")),
            );
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://127.0.0.1:{port}/proxied/busybox:latest"))
                    .arg(format!("oci:{}:copied", out.display())),
            );
            let inspect = |reference: String| {
                let out = run_ok(
                    Command::new("skopeo")
                        .args(["inspect", "--raw", "--tls-verify=false"])
                        .arg(reference),
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let podman = |args: &[&str]| {
                let root = out.with_file_name("podman");
                run_ok(
                    Command::new("podman")
                        .arg("--root")
                        .arg(root.join("root"))
                        .arg("--runroot")
                        .arg(root.join("run"))
                        .args(["--storage-driver", "vfs", "--events-backend", "none"])
                        .args(["--cgroup-manager", "cgroupfs"])
                        .args(args),
                );
            };
            let src = format!("127.0.0.1:{port}/proxied/busybox:latest");
            podman(&["pull", "--tls-verify=false", &src]);
            let dst = format!("127.0.0.1:{port}/podman/busybox:pushed");
            podman(&["push", "--tls-verify=false", &src, &dst]);
            let cd = Containerd::start(&out.with_file_name("containerd"));
            let ctr_dst = format!("127.0.0.1:{port}/ctr/busybox:pushed");
            run_ok(&mut cd.ctr(&["images", "pull", "--plain-http", &src]));
            run_ok(&mut cd.ctr(&["images", "tag", &src, &ctr_dst]));
            run_ok(&mut cd.ctr(&["images", "push", "--plain-http", &ctr_dst]));
            (
                inspect(format!("oci:{}:latest", layout.display())),
                inspect(format!("oci:{}:copied", out.display())),
                inspect(format!("docker://{dst}")),
                inspect(format!("docker://{ctr_dst}")),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(pushed.0, pushed.1, "the manifest came back unchanged");
    // Every replica served some of the pushes' and pulls' requests.
    for reg in &set.regs {
        let served = reg.server.as_ref().unwrap().app().metrics.render();
        assert!(
            served.contains("berth_registry_requests_total{method=\"PUT\""),
            "{served}"
        );
    }
    let m = sha256(pushed.0.as_bytes());
    set.check_image("proxied/busybox", &m).await;
    // podman pushed what it pulled (possibly converted to another media
    // type): every replica serves it whole.
    set.check_image("podman/busybox", &sha256(pushed.2.as_bytes()))
        .await;
    // ctr pushed the manifest it pulled, unchanged.
    assert_eq!(pushed.3, pushed.0);
    set.check_image("ctr/busybox", &sha256(pushed.3.as_bytes()))
        .await;
}

/// Without `auth.token.secret`, the replicas share the signing key the
/// first one created in the bucket: a token issued by one is accepted by
/// every other.
#[tokio::test]
async fn a_token_from_one_replica_is_accepted_by_the_others() {
    use berth_registry::auth::{Action, AuthConfig, Rule, TokenConfig};
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let alice = bcrypt::hash("alice-pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{alice}\n")).unwrap();
    let set = Replicas::start(3, |c| {
        c.auth = AuthConfig {
            htpasswd: Some(htpasswd.clone()),
            token: Some(TokenConfig {
                realm: None,
                service: "replicas".into(),
                secret: None,
                expiry_secs: 300,
                rules: vec![Rule {
                    account: "alice".into(),
                    repos: "*".into(),
                    actions: vec![Action::Pull, Action::Push],
                }],
            }),
        }
    })
    .await;
    let issuer = &set.regs[0];
    let r = issuer
        .client
        .get(issuer.url("/token?service=replicas&scope=repository:shared/app:pull,push"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    for reg in &set.regs {
        let d = sha256(reg.base.as_bytes());
        let r = reg
            .client
            .post(reg.url(&format!("/v2/shared/app/blobs/uploads/?digest={d}")))
            .bearer_auth(&token)
            .body(reg.base.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push with the token on {}",
            reg.base
        );
    }
}

/// A session whose stored hash state cannot be resumed (here: removed
/// from its state) is re-hashed from the stored data by the replica that
/// serves the next request, and commits with the right digest.
#[tokio::test]
async fn a_session_without_a_usable_hash_state_is_rehashed_from_storage() {
    let set = Replicas::start(3, |_| {}).await;
    let r = set
        .send(reqwest::Method::POST, "/v2/rehash/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let first = pattern(9, 700_000);
    let r = set
        .client
        .patch(set.url(&loc))
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().unwrap();
    let driver = &set.regs[0].server.as_ref().unwrap().app().store.driver;
    let key = format!("uploads/{id}/info");
    let mut state: serde_json::Value =
        serde_json::from_slice(&driver.get(&key).await.unwrap().unwrap()).unwrap();
    assert!(
        state["sha256"].is_string(),
        "the hash state is stored: {state}"
    );
    state["sha256"] = "damaged".into();
    driver.put(&key, state.to_string().into()).await.unwrap();
    let second = pattern(10, 300_000);
    let r = set
        .client
        .patch(set.url(&loc))
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let whole = [first, second].concat();
    let d = sha256(&whole);
    let r = set
        .client
        .put(set.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = set.regs[2].get(&format!("/v2/rehash/blobs/{d}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), d);
}
