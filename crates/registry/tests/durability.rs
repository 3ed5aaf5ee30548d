//! Restarts, concurrent pushes and online GC.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_registry::config::GcConfig;
use common::{sha256, TestRegistry};
use reqwest::StatusCode;

#[tokio::test]
async fn upload_session_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::config_for(dir.path());
    let mut reg = TestRegistry::start_in(dir, c.clone()).await;
    let r = reg.post("/v2/s/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let first = vec![1u8; 300_000];
    let r = reg
        .client
        .patch(reg.url(&loc))
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    reg.stop().await;

    let dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
    let reg = TestRegistry::start_in(dir, c).await;
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-299999");
    let second = vec![2u8; 1000];
    let r = reg
        .client
        .patch(reg.url(&loc))
        .header("content-range", "300000-300999")
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let all = [first, second].concat();
    let d = sha256(&all);
    let r = reg
        .client
        .put(reg.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/s/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), all);
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_all_succeed() {
    let reg = Arc::new(TestRegistry::start().await);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = reg.clone();
        let data = data.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let repo = format!("same/r{}", i % 3);
            let r = reg.post(&format!("/v2/{repo}/blobs/uploads/")).await;
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            for (n, chunk) in data.chunks(500_000).enumerate() {
                let start = n * 500_000;
                let r = reg
                    .client
                    .patch(reg.url(&loc))
                    .header(
                        "content-range",
                        format!("{start}-{}", start + chunk.len() - 1),
                    )
                    .body(chunk.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
            let r = reg
                .client
                .put(reg.url(&format!("{loc}?digest={d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            repo
        }));
    }
    for t in tasks {
        let repo = t.await.unwrap();
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
    // Stored once.
    let blobs = std::fs::read_dir(reg.dir.path().join("storage/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
    let uploads = std::fs::read_dir(reg.dir.path().join("storage/uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "finished uploads leave nothing behind");
}

fn age(path: &std::path::Path, secs: u64) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn storage_blob(reg: &TestRegistry, d: &str) -> std::path::PathBuf {
    let (alg, hex) = d.split_once(':').unwrap();
    reg.dir.path().join("storage/blobs").join(alg).join(hex)
}

#[tokio::test]
async fn gc_removes_old_orphans_and_stale_uploads_keeps_referenced_and_recent() {
    let reg = TestRegistry::start().await;
    let (_, _, blobs) = reg.push_image("g", "v1", "g").await;
    let orphan_old = reg.push_blob("g", b"orphan old").await;
    let orphan_new = reg.push_blob("g", b"orphan new").await;
    age(&storage_blob(&reg, &orphan_old), 7200);
    let link = reg
        .dir
        .path()
        .join("storage/repos/g/_layers/sha256")
        .join(orphan_old.split_once(':').unwrap().1);
    age(&link, 7200);
    for b in &blobs {
        age(&storage_blob(&reg, b), 7200);
    }
    let r = reg.post("/v2/g/blobs/uploads/").await;
    let stale = r.headers()["location"].to_str().unwrap().to_string();
    let id = stale.rsplit('/').next().unwrap();
    for f in ["info", ""] {
        age(
            &reg.dir.path().join("storage/uploads").join(id).join(f),
            7200,
        );
    }

    let app = reg.server.as_ref().unwrap().app().clone();
    let cfg = GcConfig {
        enabled: true,
        interval_secs: 1,
        grace_secs: 3600,
        upload_grace_secs: 3600,
        delete_untagged: false,
    };
    let report = berth_registry::gc::collect(&app.store, &cfg, &app.metrics)
        .await
        .unwrap();
    assert_eq!((report.blobs, report.uploads), (1, 1));
    let head = |d: String| {
        let reg = &reg;
        async move { reg.head(&format!("/v2/g/blobs/{d}")).await.status() }
    };
    assert_eq!(head(orphan_old.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(
        head(orphan_new.clone()).await,
        StatusCode::OK,
        "inside the grace period"
    );
    for b in &blobs {
        assert_eq!(head(b.clone()).await, StatusCode::OK, "referenced by v1");
    }
    let r = reg.get(&stale).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let metrics = reg.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("berth_registry_gc_blobs_deleted_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn gc_untagged_policy_deletes_untagged_manifests_and_their_blobs() {
    let reg = TestRegistry::start().await;
    let (old, _, old_blobs) = reg.push_image("u", "v1", "first").await;
    let (new, _, _) = reg.push_image("u", "v1", "second").await; // retags v1
    let revisions = reg
        .dir
        .path()
        .join("storage/repos/u/_manifests/revisions/sha256");
    for d in [&old, &new] {
        age(&revisions.join(d.split_once(':').unwrap().1), 7200);
    }
    for d in &old_blobs {
        age(&storage_blob(&reg, d), 7200);
        age(
            &reg.dir
                .path()
                .join("storage/repos/u/_layers/sha256")
                .join(d.split_once(':').unwrap().1),
            7200,
        );
    }
    age(&storage_blob(&reg, &old), 7200);
    let app = reg.server.as_ref().unwrap().app().clone();
    let cfg = GcConfig {
        enabled: true,
        interval_secs: 1,
        grace_secs: 3600,
        upload_grace_secs: 3600,
        delete_untagged: true,
    };
    let report = berth_registry::gc::collect(&app.store, &cfg, &app.metrics)
        .await
        .unwrap();
    assert_eq!(report.manifests, 1);
    assert_eq!(report.blobs, 3, "old manifest, its config and its layer");
    let r = reg.get(&format!("/v2/u/manifests/{old}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg.get("/v2/u/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], new.as_str());
}

#[tokio::test]
async fn gc_running_during_pushes_keeps_every_referenced_blob() {
    let reg = Arc::new(TestRegistry::start().await);
    // An old orphan that a push will reuse after only a HEAD.
    let reused = reg.push_blob("busy", b"reused layer").await;
    age(&storage_blob(&reg, &reused), 7200);
    age(
        &reg.dir
            .path()
            .join("storage/repos/busy/_layers/sha256")
            .join(reused.split_once(':').unwrap().1),
        7200,
    );

    let app = reg.server.as_ref().unwrap().app().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let cfg = GcConfig {
                enabled: true,
                interval_secs: 1,
                grace_secs: 60,
                upload_grace_secs: 60,
                delete_untagged: true,
            };
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs == 0 {
                berth_registry::gc::collect(&app.store, &cfg, &app.metrics)
                    .await
                    .unwrap();
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        })
    };
    let mut pushes = Vec::new();
    for i in 0..6 {
        let reg = reg.clone();
        let reused = reused.clone();
        pushes.push(tokio::spawn(async move {
            let repo = "busy";
            // Like every client: HEAD, and upload only if missing. GC may
            // legitimately have removed the old orphan before the HEAD;
            // once a HEAD said 200, the blob must stay for the manifest.
            let r = reg.head(&format!("/v2/{repo}/blobs/{reused}")).await;
            if r.status() == StatusCode::NOT_FOUND {
                assert_eq!(reg.push_blob(repo, b"reused layer").await, reused);
            } else {
                assert_eq!(r.status(), StatusCode::OK);
            }
            let config = format!("{{\"n\":{i}}}");
            let cd = reg.push_blob(repo, config.as_bytes()).await;
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": reused, "size": 12}],
            });
            let r = reg.put_manifest(&format!("/v2/{repo}/manifests/t{i}"), common::OCI_MANIFEST, m.to_string()).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
            cd
        }));
    }
    let mut configs = Vec::new();
    for p in pushes {
        configs.push(p.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc.await.unwrap() >= 1);
    for d in configs.iter().chain([&reused]) {
        let r = reg.get(&format!("/v2/busy/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{d} must survive GC");
    }
}

#[tokio::test]
async fn the_background_gc_task_runs_while_serving() {
    let reg = TestRegistry::start_with(|c| {
        c.gc = GcConfig {
            enabled: true,
            interval_secs: 1,
            grace_secs: 3600,
            upload_grace_secs: 3600,
            delete_untagged: false,
        }
    })
    .await;
    let orphan = reg.push_blob("bg", b"background orphan").await;
    age(&storage_blob(&reg, &orphan), 7200);
    let link = reg
        .dir
        .path()
        .join("storage/repos/bg/_layers/sha256")
        .join(orphan.split_once(':').unwrap().1);
    age(&link, 7200);
    let app = reg.server.as_ref().unwrap().app().clone();
    let runs =
        |a: &berth_registry::api::App| a.metrics.gc_runs.load(std::sync::atomic::Ordering::Relaxed);
    let seen = runs(&app);
    // Two finished runs after the ageing: at least one started after it.
    while runs(&app) < seen + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reg.head(&format!("/v2/bg/blobs/{orphan}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The registry kept serving meanwhile.
    reg.push_image("bg", "v1", "still").await;
}
