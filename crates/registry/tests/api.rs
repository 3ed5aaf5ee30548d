//! Distribution-spec API behaviour against a real server on 127.0.0.1.

mod common;

use common::{error_code, sha256, TestRegistry};
use reqwest::StatusCode;

#[tokio::test]
async fn base_endpoint_and_spec_error_bodies() {
    let reg = TestRegistry::start().await;
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let d = sha256(b"nothing");
    let r = reg.get(&format!("/v2/a/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    let r = reg.get(&format!("/v2/Bad/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");

    let r = reg.get("/v2/a/blobs/sha256:xyz").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    let r = reg.get("/v2/nope/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    let r = reg.get("/v2/a/manifests/latest").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    let r = reg.get("/v2/a/blobs/uploads/00ff").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    let r = reg
        .client
        .put(reg.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn monolithic_upload_then_head_get_and_ranges() {
    let reg = TestRegistry::start().await;
    let data = b"0123456789abcdef".to_vec();
    let d = reg.push_blob("lib/x", &data).await;

    let r = reg.head(&format!("/v2/lib/x/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "16");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    let r = reg.get(&format!("/v2/lib/x/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), data);

    let r = reg
        .client
        .get(reg.url(&format!("/v2/lib/x/blobs/{d}")))
        .header("range", "bytes=4-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 4-7/16");
    assert_eq!(r.bytes().await.unwrap(), &b"4567"[..]);

    let r = reg
        .client
        .get(reg.url(&format!("/v2/lib/x/blobs/{d}")))
        .header("range", "bytes=16-20")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */16");

    // A blob is per repository: another repository does not see it.
    let r = reg.head(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Wrong digest on a monolithic upload.
    let r = reg
        .client
        .post(reg.url(&format!(
            "/v2/lib/x/blobs/uploads/?digest={}",
            sha256(b"other")
        )))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn chunked_upload_status_out_of_order_chunk_and_cancel() {
    let reg = TestRegistry::start().await;
    let r = reg.post("/v2/c/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("/v2/c/blobs/uploads/"), "{loc}");

    let r = reg
        .client
        .patch(reg.url(&loc))
        .header("content-range", "0-4")
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-4");
    let loc = r.headers()["location"].to_str().unwrap().to_string();

    // Out of order: starts at 10 instead of 5.
    let r = reg.patch_chunk(&loc, Some("10-14"), "world").await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["range"], "0-4");

    // Streamed chunk without Content-Range.
    let r = reg.patch_chunk(&loc, None, " world").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-10");
    assert_eq!(r.headers()["location"], loc.as_str());

    // Finish with a last chunk in the PUT.
    let d = sha256(b"hello world!");
    let r = reg.finish_upload(&loc, &d, "!").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/c/blobs/{d}").as_str());
    let r = reg.get(&format!("/v2/c/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), &b"hello world!"[..]);
    // The session is gone.
    let r = reg.get(&loc).await;
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Cancel.
    let r = reg.post("/v2/c/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.delete(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.patch_chunk(&loc, None, "x").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn empty_blob_sha512_and_blob_delete() {
    let reg = TestRegistry::start().await;
    let empty = reg.push_blob("e", b"").await;
    let r = reg.get(&format!("/v2/e/blobs/{empty}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "0");

    use sha2::Digest as _;
    let data = b"sha512 content";
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
    let r = reg.post("/v2/e/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.finish_upload(&loc, &d512, data.to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/e/blobs/{d512}")).await;
    assert_eq!(r.headers()["docker-content-digest"], d512.as_str());
    assert_eq!(r.bytes().await.unwrap(), &data[..]);

    let r = reg.delete(&format!("/v2/e/blobs/{d512}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg.head(&format!("/v2/e/blobs/{d512}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

fn sha512(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// A zero-byte blob under sha512 is pushed in every upload style, each
/// answering 201 and leaving no upload state behind. (It was a 500
/// "storage error: No such file or directory": a sha512 upload is hashed
/// at PUT time by reading its data file back, and an empty upload never
/// created one.)
#[tokio::test]
async fn an_empty_sha512_blob_is_pushed_in_every_upload_style() {
    let reg = TestRegistry::start().await;
    let d = sha512(b"");

    // POST with ?digest= (monolithic, no session visible to the client).
    let r = reg
        .client
        .post(reg.url(&format!("/v2/e512/post/blobs/uploads/?digest={d}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    // POST, then PUT with no body.
    let r = reg.post("/v2/e512/put/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.finish_upload(&loc, &d, Vec::new()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    // Chunked: POST, an empty PATCH, PUT.
    let r = reg.post("/v2/e512/chunked/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.patch_chunk(&loc, None, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.finish_upload(&loc, &d, Vec::new()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    for repo in ["e512/post", "e512/put", "e512/chunked"] {
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}");
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(r.headers()["content-length"], "0");
    }
    let driver = &reg.server.as_ref().unwrap().app().store.driver;
    assert_eq!(
        driver.list("uploads").await.unwrap(),
        Vec::<String>::new(),
        "finished uploads leave no state behind"
    );

    // A non-empty sha512 blob pushed monolithically works too.
    let data = b"sha512 monolithic";
    let d = sha512(data);
    let r = reg
        .client
        .post(reg.url(&format!("/v2/e512/post/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/e512/post/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), &data[..]);
}

/// A manifest pushed (PUT) and fetched (GET, HEAD) by a sha512 digest is
/// named by that digest in `Docker-Content-Digest` and `Location`, also
/// when fetched through a tag given with the PUT.
#[tokio::test]
async fn a_manifest_addressed_by_sha512_answers_with_its_sha512_digest() {
    let reg = TestRegistry::start().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"sha512 manifest layer";
    let cd = reg.push_blob("m512", config).await;
    let ld = reg.push_blob("m512", layer).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let d = sha512(&body);
    let r = reg
        .put_manifest(
            &format!("/v2/m512/manifests/{d}?tag=v512"),
            common::OCI_MANIFEST,
            body.clone(),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(
        r.headers()["location"],
        format!("/v2/m512/manifests/{d}").as_str()
    );
    for reference in [d.as_str(), "v512"] {
        let r = reg.get(&format!("/v2/m512/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{reference}");
        assert_eq!(
            r.headers()["docker-content-digest"],
            d.as_str(),
            "GET {reference}"
        );
        assert_eq!(r.bytes().await.unwrap(), body);
        let r = reg.head(&format!("/v2/m512/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{reference}");
        assert_eq!(
            r.headers()["docker-content-digest"],
            d.as_str(),
            "HEAD {reference}"
        );
    }
    // The same manifest pushed by tag is stored under its sha256 digest;
    // each digest keeps answering with itself.
    let r = reg
        .put_manifest(
            "/v2/m512/manifests/v256",
            common::OCI_MANIFEST,
            body.clone(),
        )
        .await;
    assert_eq!(r.headers()["docker-content-digest"], sha256(&body).as_str());
    let r = reg.head(&format!("/v2/m512/manifests/{d}")).await;
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
}

#[tokio::test]
async fn cross_repository_and_anonymous_mounts() {
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("src", b"shared layer").await;
    let r = reg
        .post(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/blobs/{d}").as_str()
    );
    let r = reg.head(&format!("/v2/dst/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Anonymous mount (no `from`).
    let r = reg
        .post(&format!("/v2/anon/blobs/uploads/?mount={d}"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Mount of a blob the source lacks falls back to an upload session.
    let missing = sha256(b"missing");
    let r = reg
        .post(&format!("/v2/dst/blobs/uploads/?mount={missing}&from=src"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_content_negotiation_validation_and_limits() {
    let reg = TestRegistry::start().await;
    let (md, body, blobs) = reg.push_image("app", "v1", "a").await;

    let r = reg
        .client
        .get(reg.url("/v2/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    assert_eq!(r.bytes().await.unwrap(), body);

    let r = reg.head(&format!("/v2/app/manifests/{md}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"],
        body.len().to_string().as_str()
    );

    // A reference that is neither a tag nor a digest names no manifest:
    // reads find nothing (the OCI conformance suite's expectation), a PUT
    // is refused as invalid.
    let r = reg.get("/v2/app/manifests/.INVALID_MANIFEST_NAME").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg.head("/v2/app/manifests/.INVALID_MANIFEST_NAME").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .put_manifest(
            "/v2/app/manifests/.INVALID_MANIFEST_NAME",
            "application/vnd.oci.image.manifest.v1+json",
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");

    // An Accept that excludes the type.
    let r = reg
        .client
        .get(reg.url("/v2/app/manifests/v1"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A manifest referencing a blob the repository lacks.
    let bad = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(b"absent"), "size": 6}],
    });
    let r = reg
        .put_manifest(
            "/v2/app/manifests/bad",
            common::OCI_MANIFEST,
            bad.to_string(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains(&sha256(b"absent")));

    let r = reg
        .put_manifest("/v2/app/manifests/bad", common::OCI_MANIFEST, "{not json")
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");

    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = reg
        .put_manifest("/v2/app/manifests/huge", common::OCI_MANIFEST, huge)
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "SIZE_INVALID");

    // PUT by digest with tag parameters.
    let r = reg
        .put_manifest(
            &format!("/v2/app/manifests/{md}?tag=t1&tag=t2"),
            common::OCI_MANIFEST,
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/app/manifests/{md}").as_str()
    );
    let r = reg.get("/v2/app/manifests/t2").await;
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());

    // A digest in the URL that does not match the body.
    let r = reg
        .put_manifest(
            &format!("/v2/app/manifests/{}", sha256(b"x")),
            common::OCI_MANIFEST,
            body.clone(),
        )
        .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // Delete a tag, then the manifest by digest (which drops its other tags).
    let r = reg.delete("/v2/app/manifests/t1").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg.get("/v2/app/manifests/t1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg.delete(&format!("/v2/app/manifests/{md}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in ["v1".to_string(), "t2".to_string(), md.clone()] {
        let r = reg.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
    }
}

#[tokio::test]
async fn tags_pagination_and_catalog() {
    let reg = TestRegistry::start().await;
    let (md, body, _) = reg.push_image("p/q", "b", "x").await;
    for t in ["c", "a", "e", "d"] {
        let r = reg
            .put_manifest(
                &format!("/v2/p/q/manifests/{t}"),
                common::OCI_MANIFEST,
                body.clone(),
            )
            .await;
        assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    }
    let r = reg.get("/v2/p/q/tags/list").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "p/q");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c", "d", "e"]));

    let r = reg.get("/v2/p/q/tags/list?n=2").await;
    assert_eq!(
        r.headers()["link"],
        "</v2/p/q/tags/list?n=2&last=b>; rel=\"next\""
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    let r = reg.get("/v2/p/q/tags/list?n=2&last=b").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c", "d"]));
    let r = reg.get("/v2/p/q/tags/list?n=2&last=d").await;
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["e"]));
    let r = reg.get("/v2/p/q/tags/list?n=0").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));

    reg.push_image("a", "1", "y").await;
    reg.push_image("p/q/r", "1", "z").await;
    let r = reg.get("/v2/_catalog").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["a", "p/q", "p/q/r"]));
    let r = reg.get("/v2/_catalog?n=1&last=a").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["p/q"]));
}

#[tokio::test]
async fn referrers_subject_header_artifact_type_filter_and_unpushed_subject() {
    let reg = TestRegistry::start().await;
    let (md, _, _) = reg.push_image("r", "v1", "s").await;
    let empty = reg.push_blob("r", b"{}").await;
    let never_pushed = sha256(b"a subject nobody pushed");
    let mut referrer_digests = Vec::new();
    for (subject, at) in [
        (&md, "application/vnd.example.sig"),
        (&md, "application/vnd.example.sbom"),
        (&never_pushed, "application/vnd.example.sig"),
    ] {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 100},
            "annotations": {"k": "v"},
        });
        let body = m.to_string();
        let d = sha256(body.as_bytes());
        let r = reg
            .put_manifest(&format!("/v2/r/manifests/{d}"), common::OCI_MANIFEST, body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["oci-subject"], subject.as_str());
        referrer_digests.push(d);
    }
    let r = reg.get(&format!("/v2/r/referrers/{md}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(v["manifests"][0]["annotations"]["k"], "v");

    let r = reg
        .client
        .get(reg.url(&format!(
            "/v2/r/referrers/{md}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], referrer_digests[1].as_str());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );

    let r = reg.get(&format!("/v2/r/referrers/{never_pushed}")).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], referrer_digests[2].as_str());

    // No referrers at all: an empty index, not a 404.
    let r = reg.get(&format!("/v2/r/referrers/{}", sha256(b"z"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));

    // Deleting a referrer removes it from the list.
    reg.delete(&format!("/v2/r/manifests/{}", referrer_digests[0]))
        .await;
    let r = reg.get(&format!("/v2/r/referrers/{md}")).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn index_requires_its_child_manifests() {
    let reg = TestRegistry::start().await;
    let (md, body, _) = reg.push_image("i", "amd64", "i").await;
    let index = |d: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": body.len(),
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        })
        .to_string()
    };
    let r = reg
        .put_manifest(
            "/v2/i/manifests/multi",
            "application/vnd.oci.image.index.v1+json",
            index(&sha256(b"no such manifest")),
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = reg
        .put_manifest(
            "/v2/i/manifests/multi",
            "application/vnd.oci.image.index.v1+json",
            index(&md),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn uploads_and_manifests_over_the_size_limit_are_refused() {
    let reg = TestRegistry::start_with(|c| c.limits.max_blob_size = Some(10)).await;
    let r = reg
        .client
        .post(reg.url(&format!(
            "/v2/l/blobs/uploads/?digest={}",
            sha256(&[7u8; 11])
        )))
        .body(vec![7u8; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    reg.push_blob("l", &[7u8; 10]).await;
}

#[tokio::test]
async fn metrics_count_requests() {
    let reg = TestRegistry::start().await;
    reg.push_blob("m", b"data").await;
    reg.get("/v2/").await;
    let text = reg.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("berth_registry_requests_total{method=\"GET\",code=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_registry_requests_total{method=\"POST\",code=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_registry_blobs_committed_total 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_registry_bytes_received_total 4"),
        "{text}"
    );
}

#[tokio::test]
async fn a_manifest_media_type_that_cannot_be_a_header_is_refused() {
    let reg = TestRegistry::start().await;
    // No Content-Type header, so only the body names the type; a control
    // character or a non-ASCII letter cannot go into the Content-Type of
    // the GET that serves it back.
    for (tag, media_type) in [
        ("ctl", "application/x\u{1}y"),
        ("utf8", "application/caf\u{e9}"),
        ("shape", "no-slash"),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
        }))
        .unwrap();
        let r = reg
            .client
            .put(reg.url(&format!("/v2/app/manifests/{tag}")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{media_type:?}");
        let text = r.text().await.unwrap();
        assert!(text.contains("MANIFEST_INVALID"), "{text}");
        assert!(text.contains("TYPE/SUBTYPE"), "{text}");
        let r = reg.get(&format!("/v2/app/manifests/{tag}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{media_type:?}");
    }
}

/// A subject the registry cannot index (a digest algorithm it does not
/// verify) refuses the whole PUT before anything is stored: a refused
/// manifest must not be readable by its digest afterwards.
#[tokio::test]
async fn a_manifest_refused_for_its_subject_leaves_nothing_behind() {
    let reg = TestRegistry::start().await;
    let empty = reg.push_blob("r", b"{}").await;
    for subject in [format!("sha384:{}", "a".repeat(96)), "foo:bar".to_string()] {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 100},
        });
        let body = m.to_string();
        let d = sha256(body.as_bytes());
        for reference in [d.as_str(), "tagged"] {
            let r = reg
                .put_manifest(
                    &format!("/v2/r/manifests/{reference}"),
                    common::OCI_MANIFEST,
                    body.clone(),
                )
                .await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{subject}");
            let text = r.text().await.unwrap();
            assert!(text.contains("subject"), "{text}");
            assert!(text.contains(&subject), "{text}");
        }
        let r = reg.get(&format!("/v2/r/manifests/{d}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{subject}");
        let r = reg.get("/v2/r/manifests/tagged").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{subject}");
    }
}
