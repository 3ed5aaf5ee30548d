//! The registry client against real servers started on 127.0.0.1, beyond
//! plain pull and push: referrers (`berth artifact`), token auth in front of
//! Debian's docker-registry, registries.conf, redirects, chunked-upload
//! resume, credential helpers.

mod common;

use std::process::Command;

use common::registry::*;
use common::Env;
use serde_json::Value;

/// Runs berth, asserts success, returns (stdout, stderr).
fn ok_both(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.berth(args);
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        env.describe(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs berth, asserts it failed, returns its stderr.
fn fails(env: &Env, args: &[&str]) -> String {
    let out = env.berth(args);
    assert!(
        !out.status.success(),
        "berth {args:?} should fail: {}",
        env.describe(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// GETs `path` on `addr` with `accept`; asserts 200 and returns the JSON.
fn get_json(addr: &str, path: &str, accept: &str) -> Value {
    let (status, _, body) = http(addr, "GET", path, &[("Accept", accept)], b"");
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Attaches two artifacts to an image pushed to `addr` and lists them back;
/// `native` says whether the registry has the referrers API.
fn attach_and_list(env: &Env, addr: &str, native: bool) {
    env.import_busybox("bb", &[]);
    let image = format!("{addr}/test/bb:1");
    let subject = env.ok(&["push", "-q", "bb", &image]).trim().to_string();
    assert_eq!(
        env.ok(&["artifact", "ls", "-q", &image]),
        "",
        "no referrers yet"
    );
    let sbom = env.path("sbom.json");
    std::fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let sig = env.path("sig.txt");
    std::fs::write(&sig, b"signed by a test\n").unwrap();

    let (out, err) = ok_both(
        env,
        &[
            "artifact",
            "attach",
            "--artifact-type",
            "application/spdx+json",
            "--annotation",
            "made-by=test",
            &image,
            &format!("{}:application/spdx+json", sbom.display()),
        ],
    );
    let sbom_digest = out.trim().to_string();
    let hex = subject.trim_start_matches("sha256:");
    if native {
        assert!(err.contains("referrers API"), "{err}");
    } else {
        assert!(err.contains(&format!("fallback tag sha256-{hex}")), "{err}");
    }
    let sig_digest = env
        .ok(&[
            "artifact",
            "attach",
            "-q",
            "--artifact-type",
            "application/vnd.test.signature",
            &image,
            sig.to_str().unwrap(),
        ])
        .trim()
        .to_string();

    // The artifact manifest as the registry holds it.
    let m = get_json(
        addr,
        &format!("/v2/test/bb/manifests/{sbom_digest}"),
        OCI_MANIFEST,
    );
    assert_eq!(m["subject"]["digest"], subject.as_str(), "{m}");
    assert_eq!(m["artifactType"], "application/spdx+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "sbom.json"
    );
    let (status, _, blob) = http(
        addr,
        "GET",
        &format!(
            "/v2/test/bb/blobs/{}",
            m["layers"][0]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    );
    assert_eq!(
        (status, blob.as_slice()),
        (200, &br#"{"spdxVersion":"SPDX-2.3"}"#[..])
    );

    // Where another client (oras, regclient) would look for them.
    let index = if native {
        get_json(addr, &format!("/v2/test/bb/referrers/{subject}"), OCI_INDEX)
    } else {
        get_json(
            addr,
            &format!("/v2/test/bb/manifests/sha256-{hex}"),
            OCI_INDEX,
        )
    };
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&sbom_digest.as_str()) && listed.contains(&sig_digest.as_str()),
        "{index}"
    );

    let table = env.ok(&["artifact", "ls", &image]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("DIGEST") && lines[0].contains("ARTIFACT TYPE"));
    assert!(
        table.contains(&format!("{sbom_digest}   application/spdx+json")),
        "{table}"
    );
    let only = env.ok(&[
        "artifact",
        "ls",
        "-q",
        "--artifact-type",
        "application/vnd.test.signature",
        &image,
    ]);
    assert_eq!(only.trim(), sig_digest);
    let json: Value =
        serde_json::from_str(&env.ok(&["artifact", "ls", "--format", "json", &image])).unwrap();
    let entry = json["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == sbom_digest.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["artifactType"], "application/spdx+json");
    assert_eq!(entry["annotations"]["made-by"], "test");

    // Bad input is refused before anything is sent.
    let err = fails(
        env,
        &[
            "artifact",
            "attach",
            "--artifact-type",
            "nonsense",
            &image,
            sig.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("\"nonsense\"") && err.contains("TYPE/SUBTYPE"),
        "{err}"
    );
    let err = fails(
        env,
        &[
            "artifact",
            "attach",
            "--artifact-type",
            "a/b",
            &image,
            "/no/such/file",
        ],
    );
    assert!(err.contains("/no/such/file"), "{err}");
}

#[test]
fn artifacts_through_the_referrers_api_of_berths_registry() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    attach_and_list(&env, &reg.addr, true);
}

#[test]
fn artifacts_through_the_fallback_tag_on_docker_registry() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    // docker-registry 2.8 has no referrers API.
    let (status, _, _) = http(
        &reg.addr,
        "GET",
        &format!("/v2/x/referrers/sha256:{}", "0".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    attach_and_list(&env, &reg.addr, false);
    // skopeo sees the fallback tag as an ordinary index.
    let tags = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/test/bb", reg.addr)));
    assert!(tags.contains("sha256-"), "{tags}");
}
