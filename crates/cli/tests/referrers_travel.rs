//! Referrers travel with images: `berth pull --referrers` fetches an
//! image's SBOM (and the SBOM's signature) into the local store, `berth
//! push --referrers` sends them on after the image, and another store pulls
//! them back — through berth's registry (the referrers API) and Debian's
//! docker-registry 2.8 (no referrers API: the `sha256-<hex>` fallback tag).

mod common;

use common::registry::*;
use common::Env;
use serde_json::Value;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The digests an index at `path` on `addr` lists, or `None` on a 404.
fn listed(addr: &str, path: &str) -> Option<Vec<String>> {
    let (status, _, body) = http(addr, "GET", path, &[("Accept", OCI_INDEX)], b"");
    if status == 404 {
        return None;
    }
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    let index: Value = serde_json::from_slice(&body).unwrap();
    Some(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect(),
    )
}

/// Where `addr` lists the referrers of `subject` in `repo`: its referrers
/// API (`native`), else the fallback tag. Also checks that the other place
/// is empty, so the test knows which one the client used.
fn registry_referrers(addr: &str, repo: &str, subject: &str, native: bool) -> Vec<String> {
    let api = format!("/v2/{repo}/referrers/{subject}");
    let tag = format!(
        "/v2/{repo}/manifests/sha256-{}",
        subject.trim_start_matches("sha256:")
    );
    if native {
        assert_eq!(listed(addr, &tag), None, "no fallback tag on {addr}");
        listed(addr, &api).expect("berth's registry has the referrers API")
    } else {
        assert_eq!(listed(addr, &api), None, "no referrers API on {addr}");
        listed(addr, &tag).unwrap_or_default()
    }
}

/// An image with an SBOM attached in the registry `seed`, and a signature
/// of the SBOM: pulled with its referrers into store A, pushed from A to
/// the registry `via` (`via_native`: it has the referrers API), pulled
/// from there into store B with them.
fn referrers_travel(seed: &str, via: &str, via_native: bool) {
    let origin_env = Env::new();
    origin_env.import_busybox("bb", &[]);
    let origin = format!("{seed}/test/bb:1");
    let subject = origin_env
        .ok(&["push", "-q", "bb", &origin])
        .trim()
        .to_string();
    let sbom_file = origin_env.path("sbom.json");
    std::fs::write(&sbom_file, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let sbom = origin_env
        .ok(&[
            "artifact",
            "attach",
            "-q",
            "--artifact-type",
            "application/spdx+json",
            "--annotation",
            "made-by=test",
            &origin,
            &format!("{}:application/spdx+json", sbom_file.display()),
        ])
        .trim()
        .to_string();
    let sig_file = origin_env.path("sig.txt");
    std::fs::write(&sig_file, b"signed by a test\n").unwrap();
    let sig = origin_env
        .ok(&[
            "artifact",
            "attach",
            "-q",
            "--artifact-type",
            "application/vnd.test.signature",
            &format!("{seed}/test/bb@{sbom}"),
            sig_file.to_str().unwrap(),
        ])
        .trim()
        .to_string();

    // Store A: a plain pull brings no referrers, --referrers both.
    let a = Env::new();
    a.ok(&["pull", "-q", &origin]);
    assert_eq!(a.ok(&["artifact", "ls", "--local", "-q", &origin]), "");
    let err = a.ok_stderr(&["pull", "--referrers", &origin]);
    assert!(err.contains("pulled 2 referrers"), "{err}");
    assert_eq!(
        a.ok(&["artifact", "ls", "--local", "-q", &origin]).trim(),
        sbom
    );
    assert_eq!(
        a.ok(&["artifact", "ls", "--local", "-q", &sbom]).trim(),
        sig
    );
    let images = a.ok(&["images", "-q"]);
    assert_eq!(
        images.lines().count(),
        1,
        "referrers are not images: {images}"
    );

    // A plain push sends the image alone and says what it left behind.
    let copy = format!("{via}/copy/bb:1");
    let err = a.ok_stderr(&["push", &origin, &copy]);
    assert!(
        err.contains(&format!("1 local referrers of {subject} not pushed"))
            && err.contains("--referrers"),
        "{err}"
    );
    assert!(registry_referrers(via, "copy/bb", &subject, via_native).is_empty());
    // With --referrers, twice: each referrer listed once.
    for _ in 0..2 {
        a.ok(&["push", "--referrers", &origin, &copy]);
        assert_eq!(
            registry_referrers(via, "copy/bb", &subject, via_native),
            vec![sbom.clone()]
        );
        assert_eq!(
            registry_referrers(via, "copy/bb", &sbom, via_native),
            vec![sig.clone()]
        );
    }
    assert_eq!(a.ok(&["artifact", "ls", "-q", &copy]).trim(), sbom);

    // Store B pulls the copy with its referrers, intact.
    let b = Env::new();
    let err = b.ok_stderr(&["pull", "--referrers", &copy]);
    assert!(err.contains("pulled 2 referrers"), "{err}");
    let table = b.ok(&["artifact", "ls", "--local", &copy]);
    assert!(
        table.contains(&format!("{sbom}   application/spdx+json")),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&b.ok(&["artifact", "ls", "--local", "--format", "json", &copy]))
            .unwrap();
    assert_eq!(
        json["manifests"][0]["annotations"]["made-by"], "test",
        "{json}"
    );
    assert_eq!(
        json["manifests"][0]["annotations"]
            .as_object()
            .unwrap()
            .len(),
        1,
        "only the manifest's annotations: {json}"
    );
    assert_eq!(
        b.ok(&[
            "artifact",
            "ls",
            "--local",
            "-q",
            "--artifact-type",
            "application/vnd.test.signature",
            &sbom
        ])
        .trim(),
        sig
    );
    // The SBOM's file, from the local store alone.
    let out_dir = b.path("sbom-out");
    let written = b.ok(&[
        "artifact",
        "pull",
        "--local",
        "-o",
        out_dir.to_str().unwrap(),
        &format!("{via}/copy/bb@{sbom}"),
    ]);
    assert_eq!(written.trim(), out_dir.join("sbom.json").to_str().unwrap());
    assert_eq!(
        std::fs::read(out_dir.join("sbom.json")).unwrap(),
        br#"{"spdxVersion":"SPDX-2.3"}"#
    );
    let fsck = b.ok(&["fsck"]);
    assert!(fsck.contains(": ok"), "{fsck}");

    // GC keeps the referrers with their image, and drops them after it.
    b.ok(&["gc"]);
    assert_eq!(
        b.ok(&["artifact", "ls", "--local", "-q", &copy]).trim(),
        sbom
    );
    assert_eq!(
        b.ok(&["artifact", "ls", "--local", "-q", &sbom]).trim(),
        sig
    );
    b.ok(&["rmi", &copy]);
    b.ok(&["gc"]);
    let out = b.berth(&["artifact", "ls", "--local", "-q", &sbom]);
    assert!(!out.status.success(), "{}", b.describe(&out));
    let blobs = std::fs::read_dir(b.root().join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "gc left blobs behind");
}

#[test]
fn referrers_travel_from_docker_registry_through_berths_registry() {
    let env = Env::new();
    let seed = DockerRegistry::start(&env.path(""), None);
    let via = Serve::start(&env.path("storage"), &[]);
    referrers_travel(&seed.addr, &via.addr, true);
}

#[test]
fn referrers_travel_from_berths_registry_through_docker_registry() {
    let env = Env::new();
    let seed = Serve::start(&env.path("storage"), &[]);
    let via = DockerRegistry::start(&env.path(""), None);
    referrers_travel(&seed.addr, &via.addr, false);
}

/// A registry whose fallback index lists, for an image, a manifest whose
/// subject is not that image: the pull refuses it and records nothing.
#[test]
fn a_referrer_of_another_subject_is_refused() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    env.import_busybox("bb", &[]);
    env.import_busybox("other", &["CMD [\"/bin/true\"]"]);
    let image = format!("{}/test/bb:1", reg.addr);
    let subject = env.ok(&["push", "-q", "bb", &image]).trim().to_string();
    let other = env
        .ok(&[
            "push",
            "-q",
            "other",
            &format!("{}/test/bb:other", reg.addr),
        ])
        .trim()
        .to_string();
    let (status, _, body) = http(
        &reg.addr,
        "GET",
        &format!("/v2/test/bb/manifests/{other}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": other,
            "size": body.len(),
        }],
    });
    let (status, _, body) = http(
        &reg.addr,
        "PUT",
        &format!(
            "/v2/test/bb/manifests/sha256-{}",
            subject.trim_start_matches("sha256:")
        ),
        &[("Content-Type", OCI_INDEX)],
        index.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    let b = Env::new();
    let out = b.berth(&["pull", "--referrers", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", b.describe(&out));
    assert!(
        err.contains(&format!("referrer {other} of {subject}"))
            && err.contains("its subject is none; refused"),
        "{err}"
    );
    let images = b.ok(&["images", "-q"]);
    assert_eq!(images, "", "a failed pull records no image");
}
