//! Each auth mode allows and refuses what it should.

mod common;

use base64::Engine;
use berth_registry::auth::{Action, AuthConfig, Rule, TokenConfig};
use common::{error_code, sha256, TestRegistry};
use reqwest::{Method, StatusCode};

/// A monolithic blob upload of `body` as `digest` to `repo`, to send with
/// or without credentials.
fn monolithic(
    reg: &TestRegistry,
    repo: &str,
    digest: &str,
    body: &'static str,
) -> reqwest::RequestBuilder {
    reg.client
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(body)
}

fn htpasswd(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let alice = bcrypt::hash("alice-pw", 4).unwrap();
    let bob = bcrypt::hash("bob-pw", 4).unwrap();
    std::fs::write(&path, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
    path
}

#[tokio::test]
async fn htpasswd_basic_auth_allows_users_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth.htpasswd = Some(htpasswd(dir.path()));
    let reg = TestRegistry::start_in(dir, c).await;

    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    let r = reg
        .client
        .get(reg.url("/v2/"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .client
        .get(reg.url("/v2/"))
        .basic_auth("mallory", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Anonymous writes and reads are refused.
    let d = sha256(b"secret");
    let r = monolithic(&reg, "x", &d, "secret").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = monolithic(&reg, "x", &d, "secret")
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/x/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .client
        .get(reg.url(&format!("/v2/x/blobs/{d}")))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"secret"[..]);
    let r = reg.delete(&format!("/v2/x/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn token_config(dir: &std::path::Path) -> AuthConfig {
    AuthConfig {
        htpasswd: Some(htpasswd(dir)),
        token: Some(TokenConfig {
            realm: None,
            service: "test-registry".into(),
            secret: Some("a-test-secret-of-32-characters!!".into()),
            expiry_secs: 300,
            rules: vec![
                Rule {
                    account: "alice".into(),
                    repos: "alice/*".into(),
                    actions: vec![Action::Pull, Action::Push, Action::Delete],
                },
                Rule {
                    account: "*".into(),
                    repos: "public/*".into(),
                    actions: vec![Action::Pull],
                },
                Rule {
                    account: "anonymous".into(),
                    repos: "public/*".into(),
                    actions: vec![Action::Pull],
                },
                Rule {
                    account: "alice".into(),
                    repos: "public/*".into(),
                    actions: vec![Action::Push],
                },
                Rule {
                    account: "alice".into(),
                    repos: "*".into(),
                    actions: vec![Action::Catalog],
                },
            ],
        }),
    }
}

async fn token(reg: &TestRegistry, user: Option<(&str, &str)>, scope: &str) -> String {
    let mut req = reg
        .client
        .get(reg.url("/token"))
        .query(&[("service", "test-registry"), ("scope", scope)]);
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn granted(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["access"].clone()
}

/// Sends `method path` with `token` and asserts the registry refuses it
/// (401); returns the response for checks of its challenge.
async fn refused(reg: &TestRegistry, method: Method, path: &str, token: &str) -> reqwest::Response {
    let r = reg.bearer(method.clone(), path, token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    r
}

#[tokio::test]
async fn token_flow_grants_scopes_per_repository() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = token_config(dir.path());
    let reg = TestRegistry::start_in(dir, c).await;

    // The challenge clients follow.
    let d = sha256(b"layer");
    let r = monolithic(&reg, "alice/app", &d, "layer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}/token\",service=\"test-registry\",scope=\"repository:alice/app:pull,push\"",
            reg.base
        )
    );

    // Wrong password at the token endpoint.
    let r = reg
        .client
        .get(reg.url("/token?service=test-registry&scope=repository:alice/app:pull"))
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let push = token(
        &reg,
        Some(("alice", "alice-pw")),
        "repository:alice/app:pull,push",
    )
    .await;
    assert_eq!(
        granted(&push),
        serde_json::json!([{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}])
    );
    let r = monolithic(&reg, "alice/app", &d, "layer")
        .bearer_auth(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // The pull/push token does not allow delete.
    let r = refused(
        &reg,
        Method::DELETE,
        &format!("/v2/alice/app/blobs/{d}"),
        &push,
    )
    .await;
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));

    // Bob asks for alice's repository and gets a token without rights.
    let bobs = token(
        &reg,
        Some(("bob", "bob-pw")),
        "repository:alice/app:pull,push",
    )
    .await;
    assert_eq!(granted(&bobs), serde_json::json!([]));
    refused(
        &reg,
        Method::GET,
        &format!("/v2/alice/app/blobs/{d}"),
        &bobs,
    )
    .await;

    // A token for one repository does not open another.
    refused(
        &reg,
        Method::GET,
        &format!("/v2/alice/other/blobs/{d}"),
        &push,
    )
    .await;

    // Anonymous pull of public repositories, but no anonymous push.
    let anon = token(&reg, None, "repository:public/x:pull,push").await;
    assert_eq!(
        granted(&anon),
        serde_json::json!([{"type": "repository", "name": "public/x", "actions": ["pull"]}])
    );
    let r = reg
        .bearer(Method::GET, "/v2/public/x/tags/list", &anon)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "authorised, the repository just does not exist"
    );
    refused(&reg, Method::POST, "/v2/public/x/blobs/uploads/", &anon).await;

    // A forged token is rejected.
    let mut forged = push.clone();
    forged.pop();
    forged.push(if push.ends_with('A') { 'B' } else { 'A' });
    let r = refused(&reg, Method::GET, "/v2/", &forged).await;
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));

    // Catalog needs registry:catalog:*.
    refused(&reg, Method::GET, "/v2/_catalog", &push).await;
    let cat = token(&reg, Some(("alice", "alice-pw")), "registry:catalog:*").await;
    let r = reg.bearer(Method::GET, "/v2/_catalog", &cat).await;
    assert_eq!(r.status(), StatusCode::OK);
    let bob_cat = token(&reg, Some(("bob", "bob-pw")), "registry:catalog:*").await;
    refused(&reg, Method::GET, "/v2/_catalog", &bob_cat).await;
}

#[tokio::test]
async fn token_endpoint_accepts_the_oauth2_password_form() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = token_config(dir.path());
    let reg = TestRegistry::start_in(dir, c).await;
    let form = |password: &str| {
        format!(
            "grant_type=password&service=test-registry&client_id=test&username=alice&password={password}&scope=repository%3Aalice%2Fapp%3Apull"
        )
    };
    let post = |body: String| {
        reg.client
            .post(reg.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = post(form("alice-pw")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    let t = v["access_token"].as_str().unwrap();
    assert_eq!(
        granted(t),
        serde_json::json!([{"type": "repository", "name": "alice/app", "actions": ["pull"]}])
    );
    let r = post(form("wrong")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::config_for(dir.path());
    let mut reg = TestRegistry::start_in(dir, c.clone()).await;
    let (md, _, _) = reg.push_image("ro", "v1", "ro").await;
    reg.stop().await;
    let mut c = c;
    c.read_only = true;
    let dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
    let reg = TestRegistry::start_in(dir, c).await;
    let r = reg.get("/v2/ro/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    let r = reg.post("/v2/ro/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = reg.delete(&format!("/v2/ro/manifests/{md}")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = reg
        .put_manifest("/v2/ro/manifests/v2", common::OCI_MANIFEST, "{}")
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn tls_serves_https_with_the_configured_certificate() {
    let openssl = berth_testutil::require_peer("openssl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    berth_testutil::run_ok(
        std::process::Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let mut c = common::config_for(dir.path());
    c.tls = Some(berth_registry::config::TlsConfig {
        cert: cert.clone(),
        key,
    });
    let server = berth_registry::start(c).await.unwrap();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{}/v2/", server.addr().port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    // Plain HTTP on the TLS port does not get an API answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v2/", server.addr().port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    // A broken key file is a clear start-up error naming the file.
    let mut c = common::config_for(dir.path());
    c.tls = Some(berth_registry::config::TlsConfig {
        cert: cert.clone(),
        key: cert.clone(),
    });
    let err = berth_registry::start(c)
        .await
        .err()
        .expect("bad key must fail")
        .to_string();
    assert!(err.contains("cert.pem"), "{err}");
    server.shutdown(std::time::Duration::from_secs(1)).await;
}

/// With `metrics.token` set, `/metrics` answers only that bearer token;
/// everyone else gets the spec's UNAUTHORIZED error and a challenge.
#[tokio::test]
async fn metrics_token_guards_the_metrics_endpoint() {
    // A short (or empty) token is refused at start, naming the field.
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.metrics.token = Some(String::new());
    let err = berth_registry::start(c)
        .await
        .err()
        .expect("empty token refused");
    assert!(
        err.to_string()
            .contains("metrics.token must be at least 16 characters"),
        "{err}"
    );

    let token = "scrape-me-scrape-me";
    let reg = TestRegistry::start_with(|c| c.metrics.token = Some(token.into())).await;
    for header in [
        None,
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("Basic c2NyYXBlLW1lOg=="),
    ] {
        let mut req = reg.client.get(reg.url("/metrics"));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{header:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"metrics\"",
            "{header:?}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{header:?}");
    }
    let r = reg
        .client
        .get(reg.url("/metrics"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("berth_registry_requests_total"));
    // The registry API itself is unaffected (open auth here).
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

/// A cross-repository mount under token auth: the challenge also asks for
/// pull on the source, a token with it mounts (201), and a token without
/// it still gets an upload session (202) instead of a refusal.
#[tokio::test]
async fn token_challenge_for_a_mount_asks_for_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = token_config(dir.path());
    let reg = TestRegistry::start_in(dir, c).await;
    let d = sha256(b"shared layer");
    let push = token(
        &reg,
        Some(("alice", "alice-pw")),
        "repository:alice/app:pull,push",
    )
    .await;
    let r = monolithic(&reg, "alice/app", &d, "shared layer")
        .bearer_auth(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let mount = format!("/v2/public/x/blobs/uploads/?mount={d}&from=alice/app");
    let r = reg.client.post(reg.url(&mount)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("scope=\"repository:public/x:pull,push repository:alice/app:pull\""),
        "{challenge}"
    );

    let target_only = token(
        &reg,
        Some(("alice", "alice-pw")),
        "repository:public/x:pull,push",
    )
    .await;
    let r = reg.bearer(Method::POST, &mount, &target_only).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "no pull on the source");

    let both = token(
        &reg,
        Some(("alice", "alice-pw")),
        "repository:public/x:pull,push repository:alice/app:pull",
    )
    .await;
    let r = reg.bearer(Method::POST, &mount, &both).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/public/x/blobs/{d}").as_str()
    );
}

/// A blob mount must never read a repository the caller cannot pull. With
/// push on `alice/*` only, a mount of a blob that lives only in
/// `bob/secret` — without `from` (the automatic cross-mount), or with a
/// `from` the token does not cover — becomes an ordinary upload (202), just
/// as for a digest stored nowhere, and the blob stays unreadable from
/// alice's repository. (Before the fix the `from`-less mount answered 201
/// and linked bob's blob into alice/steal.)
#[tokio::test]
async fn a_mount_never_reads_a_repository_the_caller_cannot_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = token_config(dir.path());
    if let Some(t) = c.auth.token.as_mut() {
        t.rules.push(Rule {
            account: "bob".into(),
            repos: "bob/*".into(),
            actions: vec![Action::Pull, Action::Push],
        });
    }
    let reg = TestRegistry::start_in(dir, c).await;
    let secret = sha256(b"bob's secret layer");
    let bob = token(
        &reg,
        Some(("bob", "bob-pw")),
        "repository:bob/secret:pull,push",
    )
    .await;
    let r = monolithic(&reg, "bob/secret", &secret, "bob's secret layer")
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let alice = token(
        &reg,
        Some(("alice", "alice-pw")),
        "repository:alice/steal:pull,push repository:bob/secret:pull",
    )
    .await;
    assert_eq!(
        granted(&alice),
        serde_json::json!([{"type": "repository", "name": "alice/steal", "actions": ["pull", "push"]}]),
        "alice must get no pull on bob/secret"
    );
    let nowhere = sha256(b"stored nowhere");
    for query in [
        format!("mount={secret}"),
        format!("mount={secret}&from=bob/secret"),
        format!("mount={nowhere}"),
        format!("mount={nowhere}&from=bob/secret"),
    ] {
        let path = format!("/v2/alice/steal/blobs/uploads/?{query}");
        let r = reg.bearer(Method::POST, &path, &alice).await;
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "{query}: must be a plain upload"
        );
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/v2/alice/steal/blobs/uploads/"),
            "{query}"
        );
    }
    let r = reg
        .bearer(
            Method::GET,
            &format!("/v2/alice/steal/blobs/{secret}"),
            &alice,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "bob's blob leaked into alice/steal"
    );
}

/// Where every client may pull everything (htpasswd alone), the automatic
/// cross-mount still mounts: it reveals nothing a client could not read.
#[tokio::test]
async fn htpasswd_alone_keeps_the_automatic_cross_mount() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = AuthConfig {
        htpasswd: Some(htpasswd(dir.path())),
        token: None,
    };
    let reg = TestRegistry::start_in(dir, c).await;
    let d = sha256(b"common layer");
    let r = monolithic(&reg, "bob/base", &d, "common layer")
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .client
        .post(reg.url(&format!("/v2/alice/app/blobs/uploads/?mount={d}")))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// A hash that is not a whole bcrypt hash, or one whose cost no login
/// could afford (2^31 rounds would hold a worker for days, for any client
/// that merely names the user), is refused when the file is loaded, with
/// its line, rather than failing every login as a wrong password.
#[test]
fn htpasswd_hashes_are_checked_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let good = bcrypt::hash("pw", 4).unwrap();
    // Same salt and hash, cost 31.
    let costly = format!("$2y$31${}", &good[7..]);
    for (line, want) in [
        ("alice:$2y$10$truncated".to_string(), "not a bcrypt hash"),
        (format!("alice:{}", &good[..59]), "not a bcrypt hash"),
        (format!("alice:{costly}"), "cost 31"),
    ] {
        std::fs::write(&path, format!("bob:{good}\n{line}\n")).unwrap();
        let cfg = AuthConfig {
            htpasswd: Some(path.clone()),
            token: None,
        };
        let err = match berth_registry::auth::Auth::from_config(&cfg) {
            Ok(_) => panic!("{line} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("line 2") && err.contains("\"alice\"") && err.contains(want),
            "{err}"
        );
        assert!(err.contains("htpasswd -B"), "{err}");
    }
    std::fs::write(&path, format!("bob:{good}\n")).unwrap();
    let cfg = AuthConfig {
        htpasswd: Some(path.clone()),
        token: None,
    };
    assert!(berth_registry::auth::Auth::from_config(&cfg).is_ok());
}

/// Sends `request` as raw bytes (reqwest would percent-encode the quotes a
/// hostile client need not) to a registry in token mode; returns the answer.
async fn raw_answer_in_token_mode(request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config_for(dir.path());
    c.auth = token_config(dir.path());
    let reg = TestRegistry::start_in(dir, c).await;
    let addr = reg.base.strip_prefix("http://").unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

/// A path whose repository name is invalid is refused as NAME_INVALID
/// before the token challenge: echoed into the challenge's `scope`, a `"`
/// in the raw path would add parameters (another realm) to it.
#[tokio::test]
async fn an_invalid_repository_name_gets_no_token_challenge() {
    let answer = raw_answer_in_token_mode(
        b"GET /v2/public/a\",realm=\"http://evil.example/x/tags/list HTTP/1.1\r\n\
          Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("name_invalid"), "{answer}");
    assert!(!answer.contains("www-authenticate"), "{answer}");
    assert!(!answer.contains("evil.example/x:pull"), "{answer}");
}

/// The default token realm comes from the Host header; a Host that is not
/// host[:port] cannot add parameters to the challenge.
#[tokio::test]
async fn a_hostile_host_header_cannot_shape_the_token_challenge() {
    let answer = raw_answer_in_token_mode(
        b"GET /v2/public/a/tags/list HTTP/1.1\r\n\
          Host: evil\",scope=\"repository:alice/x:push\r\nConnection: close\r\n\r\n",
    )
    .await;
    let challenge = answer
        .lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .unwrap_or_else(|| panic!("no challenge in {answer}"));
    assert_eq!(
        challenge,
        "Bearer realm=\"http://localhost/token\",service=\"test-registry\",scope=\"repository:public/a:pull\""
    );
}

/// bcrypt runs off the runtime's threads: while a login with a wrong
/// password is being checked, other requests are served. (The test runs
/// the registry on a single-threaded runtime; checked on it, the login
/// would hold every other request until bcrypt ends.)
#[tokio::test]
async fn a_wrong_password_does_not_stall_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    // A cost-4 hash relabelled cost 14: a well formed hash that takes
    // 2^14 rounds to check (and matches no password).
    let quick = bcrypt::hash("pw", 4).unwrap();
    let slow = format!("$2y$14${}", &quick[7..]);
    std::fs::write(&path, format!("slow:{slow}\n")).unwrap();
    let mut c = common::config_for(dir.path());
    c.auth.htpasswd = Some(path);
    let reg = TestRegistry::start_in(dir, c).await;

    let login = reg
        .client
        .get(reg.url("/v2/"))
        .basic_auth("slow", Some("wrong"))
        .send();
    let login = tokio::spawn(login);
    loop {
        let metrics = reg.get("/metrics").await.text().await.unwrap();
        assert!(
            !login.is_finished(),
            "the login was checked before any other request was served"
        );
        let in_flight: i64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("berth_registry_requests_in_flight "))
            .unwrap()
            .parse()
            .unwrap();
        // This /metrics request and the login.
        if in_flight >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let r = reg.get("/healthz").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        login.await.unwrap().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
