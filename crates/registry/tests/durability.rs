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
    let r = reg.patch_chunk(&loc, None, first.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    reg.stop().await;

    let dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
    let reg = TestRegistry::start_in(dir, c).await;
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-299999");
    let second = vec![2u8; 1000];
    let r = reg
        .patch_chunk(&loc, Some("300000-300999"), second.clone())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let all = [first, second].concat();
    let d = sha256(&all);
    let r = reg.finish_upload(&loc, &d, Vec::new()).await;
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
                let range = format!("{start}-{}", start + chunk.len() - 1);
                let r = reg.patch_chunk(&loc, Some(&range), chunk.to_vec()).await;
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
            let r = reg.finish_upload(&loc, &d, Vec::new()).await;
            assert_eq!(
                r.status(),
                StatusCode::CREATED,
                "{}",
                r.text().await.unwrap()
            );
            repo
        }));
    }
    for t in tasks {
        let repo = t.await.unwrap();
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
    // Stored once.
    let driver = &reg.server.as_ref().unwrap().app().store.driver;
    assert_eq!(driver.list("blobs/sha256").await.unwrap().len(), 1);
    assert_eq!(
        driver.list("uploads").await.unwrap(),
        Vec::<String>::new(),
        "finished uploads leave nothing behind"
    );
}

fn gc_config(grace_secs: u64, delete_untagged: bool) -> GcConfig {
    GcConfig {
        enabled: true,
        interval_secs: 1,
        grace_secs,
        upload_grace_secs: grace_secs,
        delete_untagged,
    }
}

/// Runs GC as if two hours had passed: longer than the one-hour grace.
async fn gc_two_hours_later(
    reg: &TestRegistry,
    delete_untagged: bool,
) -> berth_registry::gc::GcReport {
    let app = reg.server.as_ref().unwrap().app();
    let later = SystemTime::now() + Duration::from_secs(7200);
    berth_registry::gc::collect_at(
        &app.store,
        &gc_config(3600, delete_untagged),
        &app.metrics,
        later,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn gc_removes_orphans_and_stale_uploads_after_the_grace_period_keeps_referenced() {
    let reg = TestRegistry::start().await;
    let (_, _, blobs) = reg.push_image("g", "v1", "g").await;
    let orphan = reg.push_blob("g", b"orphan").await;
    let r = reg.post("/v2/g/blobs/uploads/").await;
    let stale = r.headers()["location"].to_str().unwrap().to_string();

    // Within the grace period nothing goes.
    let app = reg.server.as_ref().unwrap().app().clone();
    let report = berth_registry::gc::collect(&app.store, &gc_config(3600, false), &app.metrics)
        .await
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(
        reg.head(&format!("/v2/g/blobs/{orphan}")).await.status(),
        StatusCode::OK
    );

    let report = gc_two_hours_later(&reg, false).await;
    assert_eq!((report.blobs, report.uploads), (1, 1));
    assert_eq!(
        reg.head(&format!("/v2/g/blobs/{orphan}")).await.status(),
        StatusCode::NOT_FOUND
    );
    for b in &blobs {
        assert_eq!(
            reg.head(&format!("/v2/g/blobs/{b}")).await.status(),
            StatusCode::OK,
            "referenced by v1"
        );
    }
    assert_eq!(reg.get(&stale).await.status(), StatusCode::NOT_FOUND);
    let metrics = reg.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("berth_registry_gc_blobs_deleted_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn gc_untagged_policy_deletes_untagged_manifests_and_their_blobs() {
    let reg = TestRegistry::start().await;
    let (old, _, _) = reg.push_image("u", "v1", "first").await;
    let (new, _, _) = reg.push_image("u", "v1", "second").await; // retags v1
    let report = gc_two_hours_later(&reg, true).await;
    assert_eq!(report.manifests, 1);
    assert_eq!(report.blobs, 3, "old manifest, its config and its layer");
    assert_eq!(
        reg.get(&format!("/v2/u/manifests/{old}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = reg.get("/v2/u/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], new.as_str());
}

#[tokio::test]
async fn gc_running_during_pushes_keeps_every_referenced_blob() {
    // A short grace period, so an orphan really ages during the test.
    let grace = 3;
    let reg = Arc::new(TestRegistry::start_with(|c| c.gc.grace_secs = grace).await);
    let reused = reg.push_blob("busy", b"reused layer").await;
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;

    let app = reg.server.as_ref().unwrap().app().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let cfg = gc_config(grace, true);
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
            let r = reg
                .put_manifest(&format!("/v2/{repo}/manifests/t{i}"), common::OCI_MANIFEST, m.to_string())
                .await;
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
    let reg = TestRegistry::start_with(|c| c.gc = gc_config(1, false)).await;
    let orphan = reg.push_blob("bg", b"background orphan").await;
    // The task deletes it once it is older than the 1 s grace period. (Not
    // polled with HEAD: a HEAD is a reference and would keep it alive.)
    let app = reg.server.as_ref().unwrap().app().clone();
    let deleted = || {
        app.metrics
            .gc_blobs_deleted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut waited = 0;
    while deleted() == 0 {
        assert!(waited < 1200, "the background GC never removed the orphan");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(
        reg.head(&format!("/v2/bg/blobs/{orphan}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The registry kept serving meanwhile.
    reg.push_image("bg", "v1", "still").await;
}
