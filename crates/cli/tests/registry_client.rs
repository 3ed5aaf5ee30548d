//! The registry client against real servers started on 127.0.0.1, beyond
//! plain pull and push: referrers (`berth artifact`), token auth in front of
//! Debian's docker-registry, registries.conf, redirects, chunked-upload
//! resume, credential helpers.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use berth_testutil::require_peer;
use common::registry::*;
use common::Env;
use serde_json::Value;

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

    let (out, err) = env.ok_both(&[
        "artifact",
        "attach",
        "--artifact-type",
        "application/spdx+json",
        "--annotation",
        "made-by=test",
        &image,
        &format!("{}:application/spdx+json", sbom.display()),
    ]);
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

    // The files come back by the artifact's digest, under their names.
    let out_dir = env.path("fetched");
    let written = env.ok(&[
        "artifact",
        "pull",
        "-q",
        "-o",
        out_dir.to_str().unwrap(),
        &format!("{addr}/test/bb@{sbom_digest}"),
    ]);
    assert_eq!(written.trim(), out_dir.join("sbom.json").to_str().unwrap());
    assert_eq!(
        std::fs::read(out_dir.join("sbom.json")).unwrap(),
        br#"{"spdxVersion":"SPDX-2.3"}"#
    );
    // A file name that would leave the directory is refused.
    let mut evil = m.clone();
    evil["layers"][0]["annotations"]["org.opencontainers.image.title"] = "../evil".into();
    let evil = serde_json::to_vec(&evil).unwrap();
    let (status, _, body) = http(
        addr,
        "PUT",
        "/v2/test/bb/manifests/evil",
        &[("Content-Type", OCI_MANIFEST)],
        &evil,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let err = env.fails(&[
        "artifact",
        "pull",
        "-o",
        out_dir.to_str().unwrap(),
        &format!("{addr}/test/bb:evil"),
    ]);
    assert!(
        err.contains("\"../evil\"") && err.contains("not a plain file name"),
        "{err}"
    );
    assert!(!env.path("evil").exists());

    // Bad input is refused before anything is sent.
    let err = env.fails(&[
        "artifact",
        "attach",
        "--artifact-type",
        "nonsense",
        &image,
        sig.to_str().unwrap(),
    ]);
    assert!(
        err.contains("\"nonsense\"") && err.contains("TYPE/SUBTYPE"),
        "{err}"
    );
    let err = env.fails(&[
        "artifact",
        "attach",
        "--artifact-type",
        "a/b",
        &image,
        "/no/such/file",
    ]);
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

/// Reads one HTTP request head from `stream`; empty for a TLS handshake
/// (berth tries HTTPS first), which closes the connection at once.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 || (head.is_empty() && byte[0] == 0x16) {
            return String::new();
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// `%XX` decoding of a query value (`+` is a space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// One token request: the user (if any) and the scopes asked for.
#[derive(Debug, Clone)]
struct TokenRequest {
    user: Option<String>,
    scopes: Vec<String>,
}

/// A token issuer for docker-registry's `auth: token`: RS256 JWTs signed
/// (by the `openssl` command) with a self-signed certificate that the
/// registry trusts as its `rootcertbundle`. alice:s3cret gets every action
/// she asks for; anonymous requests get a token granting nothing; wrong
/// passwords a 401.
struct TokenServer {
    realm: String,
    cert: PathBuf,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    /// The next token issued is already expired (beyond the registry's leeway).
    expire_next: Arc<AtomicBool>,
}

const ISSUER: &str = "berth-test-issuer";
const SERVICE: &str = "berth-test-registry";

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new(require_peer("openssl"))
            .current_dir(dir)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=berth-test-issuer",
            ]));
        run(Command::new("openssl").current_dir(dir).args([
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ]));
        let der = std::fs::read(dir.join("cert.der")).unwrap();
        let key = dir.join("key.pem");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let expire_next = Arc::new(AtomicBool::new(false));
        let (seen, expire) = (log.clone(), expire_next.clone());
        std::thread::spawn(move || {
            let header = serde_json::json!({
                "typ": "JWT", "alg": "RS256",
                "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)],
            });
            for (n, client) in listener.incoming().enumerate() {
                let Ok(mut client) = client else { return };
                let head = read_head(&mut client);
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(percent_decode)
                    .collect();
                let basic = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .and_then(|v| v.strip_prefix("Basic ").map(str::to_string))
                    .map(|b| {
                        let raw = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                        String::from_utf8(raw).unwrap()
                    });
                let user = basic
                    .as_ref()
                    .map(|b| b.split(':').next().unwrap().to_string());
                seen.lock().unwrap().push(TokenRequest {
                    user: user.clone(),
                    scopes: scopes.clone(),
                });
                if basic.as_ref().is_some_and(|b| b != "alice:s3cret") {
                    let _ = client.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let access: Vec<Value> = if user.is_some() {
                    scopes
                        .iter()
                        .filter_map(|s| {
                            let mut parts = s.splitn(3, ':');
                            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                            Some(serde_json::json!({
                                "type": t, "name": name,
                                "actions": actions.split(',').collect::<Vec<_>>(),
                            }))
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let exp = if expire.swap(false, Ordering::SeqCst) {
                    now - 600
                } else {
                    now + 300
                };
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": user.clone().unwrap_or_default(), "aud": SERVICE,
                    "exp": exp, "nbf": now - 600, "iat": now - 600, "jti": format!("t{n}"),
                    "access": access,
                });
                let b64 = |v: &Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(serde_json::to_vec(v).unwrap())
                };
                let input = format!("{}.{}", b64(&header), b64(&claims));
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let sig = sign.wait_with_output().unwrap().stdout;
                let token = format!(
                    "{input}.{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
                );
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                let _ = client.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        TokenServer {
            realm,
            cert: dir.join("cert.pem"),
            log,
            expire_next,
        }
    }

    /// The `auth:` section of docker-registry's configuration.
    fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }

    /// The requests since the last call.
    fn take(&self) -> Vec<TokenRequest> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[test]
fn token_auth_in_front_of_docker_registry() {
    let env = Env::new();
    let tokens = TokenServer::start(&env.path("issuer"));
    let reg = DockerRegistry::start_with(&env.path(""), &tokens.registry_config());
    env.import_busybox("bb", &[]);
    let image = format!("{}/test/bb:1", reg.addr);

    // Anonymous: a token that grants nothing, so the registry refuses.
    let err = env.fails(&["push", "bb", &image]);
    assert!(
        err.contains("401") && err.contains("needs credentials"),
        "{err}"
    );
    tokens.take();

    // With credentials: one token for the push's scope, reused for every
    // HEAD, upload and manifest of the push.
    env.ok(&["push", "--creds", "alice:s3cret", "bb", &image]);
    let asked = tokens.take();
    assert_eq!(asked.len(), 1, "one token per scope: {asked:?}");
    assert_eq!(asked[0].user.as_deref(), Some("alice"));
    assert_eq!(asked[0].scopes, ["repository:test/bb:pull,push"]);

    let other = Env::new();
    let err = other.fails(&["pull", &image]);
    assert!(err.contains("401") && err.contains("test/bb"), "{err}");
    let err = other.fails(&["pull", "--creds", "alice:wrong", &image]);
    assert!(
        err.contains("refused the credentials of user \"alice\""),
        "{err}"
    );
    tokens.take();
    other.ok(&["pull", "--creds", "alice:s3cret", &image]);
    let asked = tokens.take();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].scopes, ["repository:test/bb:pull"]);
    let out = other.ok(&["run", "--rm", "--pull", "never", &image, "echo", "token"]);
    assert_eq!(out, "token\n");

    // Artifacts through the fallback tag, with tokens.
    let note = env.path("note.txt");
    std::fs::write(&note, b"note").unwrap();
    let digest = env
        .ok(&[
            "artifact",
            "attach",
            "-q",
            "--creds",
            "alice:s3cret",
            "--artifact-type",
            "application/vnd.test.note",
            &image,
            note.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let listed = env.ok(&["artifact", "ls", "-q", "--creds", "alice:s3cret", &image]);
    assert_eq!(listed.trim(), digest);

    // `berth login` checks the credentials with a token for no scope.
    let authfile = env.path("auth.json");
    let login = |password: &str| {
        let mut child = env
            .command(&["login", "-u", "alice", "--password-stdin", "--authfile"])
            .arg(&authfile)
            .arg(&reg.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("wrong");
    assert!(!out.status.success(), "{}", env.describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credentials"));
    let out = login("s3cret");
    assert!(out.status.success(), "{}", env.describe(&out));
    tokens.take();
    let fifth = Env::new();
    fifth.ok(&["pull", "--authfile", authfile.to_str().unwrap(), &image]);
    assert_eq!(tokens.take()[0].user.as_deref(), Some("alice"));

    // An expired token: the registry answers 401, berth fetches a fresh one.
    tokens.expire_next.store(true, Ordering::SeqCst);
    let third = Env::new();
    third.ok(&["pull", "--creds", "alice:s3cret", &image]);
    let asked = tokens.take();
    assert_eq!(
        asked.len(),
        2,
        "the expired token was replaced once: {asked:?}"
    );
}

#[test]
fn registries_conf_mirrors_search_registries_and_aliases() {
    let env = Env::new();
    let primary = Serve::start(&env.path("primary"), &[]);
    let mirror = DockerRegistry::start(&env.path(""), None);
    env.import_busybox("from-primary", &["ENV FROM=primary"]);
    env.import_busybox("from-mirror", &["ENV FROM=mirror"]);
    for tag in ["1", "2"] {
        env.ok(&[
            "push",
            "from-primary",
            &format!("{}/seed/bb:{tag}", primary.addr),
        ]);
    }
    // The mirror has tag 1 only, under its own namespace.
    env.ok(&[
        "push",
        "from-mirror",
        &format!("{}/hub/seed/bb:1", mirror.addr),
    ]);
    // A port nothing listens on: the first mirror fails, the next is tried.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let conf = env.path("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{p}\"\n[[registry.mirror]]\nlocation = \"{dead}/x\"\n\
             [[registry.mirror]]\nlocation = \"{m}/hub\"\n",
            p = primary.addr,
            m = mirror.addr
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let echo_from = |env: &Env, image: &str| {
        env.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            image,
            "sh",
            "-c",
            "echo $FROM",
        ])
    };

    let other = Env::new();
    let one = format!("{}/seed/bb:1", primary.addr);
    other.ok(&["pull", "--registries-conf", conf, &one]);
    assert_eq!(
        echo_from(&other, &one),
        "mirror\n",
        "tag 1 came from the mirror"
    );
    let two = format!("{}/seed/bb:2", primary.addr);
    other.ok(&["pull", "--registries-conf", conf, &two]);
    assert_eq!(
        echo_from(&other, &two),
        "primary\n",
        "tag 2 from the registry itself"
    );
    let err = other.fails(&[
        "pull",
        "--registries-conf",
        conf,
        &format!("{}/seed/bb:3", primary.addr),
    ]);
    assert!(
        err.contains(&dead) && err.contains(&mirror.addr) && err.contains(&primary.addr),
        "every source named: {err}"
    );

    // Short names: one search registry resolves them; several are refused.
    let search = env.path("search.conf");
    std::fs::write(
        &search,
        format!(
            "unqualified-search-registries = [\"{p}\"]\n[aliases]\n\"mybb\" = \"{p}/seed/bb\"\n",
            p = primary.addr
        ),
    )
    .unwrap();
    let search = search.to_str().unwrap();
    let third = Env::new();
    let out = third.ok(&[
        "run",
        "--rm",
        "--registries-conf",
        search,
        "seed/bb:2",
        "sh",
        "-c",
        "echo $FROM",
    ]);
    assert_eq!(out, "primary\n");
    assert!(third
        .ok(&["images"])
        .contains(&format!("{}/seed/bb", primary.addr)));
    // The short name finds the pulled image locally too.
    let out = third.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--registries-conf",
        search,
        "seed/bb:2",
        "true",
    ]);
    assert_eq!(out, "");
    third.ok(&["pull", "--registries-conf", search, "mybb:1"]);
    assert_eq!(
        echo_from(&third, &one),
        "primary\n",
        "the alias, not the mirror"
    );

    let both = env.path("both.conf");
    std::fs::write(
        &both,
        format!(
            "unqualified-search-registries = [\"{}\", \"{}\"]\n",
            primary.addr, mirror.addr
        ),
    )
    .unwrap();
    let err = Env::new().fails(&[
        "pull",
        "--registries-conf",
        both.to_str().unwrap(),
        "seed/bb:1",
    ]);
    assert!(
        err.contains(&format!("{}/seed/bb:1", primary.addr))
            && err.contains(&format!("{}/seed/bb:1", mirror.addr))
            && err.contains("short-name-mode enforcing")
            && err.contains("[aliases]"),
        "{err}"
    );
    std::fs::write(
        &both,
        format!(
            "short-name-mode = \"permissive\"\nunqualified-search-registries = [\"{}\", \"{}\"]\n",
            mirror.addr, primary.addr
        ),
    )
    .unwrap();
    // Permissive: each is tried in order (the mirror lacks seed/bb outside /hub).
    let fourth = Env::new();
    fourth.ok(&[
        "pull",
        "--registries-conf",
        both.to_str().unwrap(),
        "seed/bb:1",
    ]);
    assert_eq!(echo_from(&fourth, &one), "primary\n");
}

/// What a [`Proxy`] does with one request.
enum Action {
    /// Send it upstream and the answer back.
    Forward,
    /// Send it upstream with this header line added (e.g. credentials).
    ForwardWith(String),
    /// Send it upstream, then drop the client's connection unanswered.
    ForwardThenCut,
    /// Answer with these raw bytes.
    Answer(Vec<u8>),
}

/// An HTTP proxy on `bind` in front of `upstream`, one request per
/// connection (`Connection: close` added), logging every request head.
struct Proxy {
    addr: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(
        bind: &str,
        upstream: String,
        decide: impl Fn(&str) -> Action + Send + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let head = read_head(&mut client);
                if head.is_empty() {
                    continue;
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if client.read_exact(&mut body).is_err() {
                    continue;
                }
                log.lock().unwrap().push(head.clone());
                let action = decide(&head);
                let forward = |extra: &str| {
                    let request =
                        head.replacen("\r\n", &format!("\r\nConnection: close\r\n{extra}"), 1);
                    let mut up = TcpStream::connect(&upstream).ok()?;
                    up.write_all(request.as_bytes()).ok()?;
                    up.write_all(&body).ok()?;
                    let mut response = Vec::new();
                    up.read_to_end(&mut response).ok()?;
                    Some(response)
                };
                let answer = match action {
                    Action::Forward => forward(""),
                    Action::ForwardWith(line) => forward(&format!("{line}\r\n")),
                    Action::ForwardThenCut => {
                        forward("");
                        None
                    }
                    Action::Answer(raw) => Some(raw),
                };
                if let Some(a) = answer {
                    let _ = client.write_all(&a);
                }
            }
        });
        Proxy { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn has_authorization(head: &str) -> bool {
    head.to_ascii_lowercase().contains("\r\nauthorization:")
}

#[test]
fn a_redirect_to_another_host_drops_the_authorization_header() {
    let env = Env::new();
    let htpasswd = alice_htpasswd(&env.path(""));
    let reg = DockerRegistry::start(&env.path(""), Some(&htpasswd));
    env.import_busybox("bb", &[]);
    env.ok(&[
        "push",
        "--creds",
        "alice:s3cret",
        "bb",
        &format!("{}/test/bb:1", reg.addr),
    ]);
    // The blob host (another loopback address, so another origin) fetches
    // from the registry with its own credentials, as a CDN would.
    let basic = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let cdn = Proxy::start("127.0.0.2:0", reg.addr.clone(), move |_| {
        Action::ForwardWith(basic.clone())
    });
    let cdn_addr = cdn.addr.clone();
    let front = Proxy::start("127.0.0.1:0", reg.addr.clone(), move |head| {
        let path = head.split(' ').nth(1).unwrap_or("");
        if head.starts_with("GET ") && path.contains("/blobs/sha256:") {
            let location = format!("http://{cdn_addr}{path}");
            Action::Answer(
                format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .into_bytes(),
            )
        } else {
            Action::Forward
        }
    });

    let other = Env::new();
    let image = format!("{}/test/bb:1", front.addr);
    other.ok(&["pull", "--creds", "alice:s3cret", &image]);
    let out = other.ok(&["run", "--rm", "--pull", "never", &image, "echo", "via cdn"]);
    assert_eq!(out, "via cdn\n");
    let front_heads = front.heads();
    assert!(
        front_heads
            .iter()
            .any(|h| h.contains("/manifests/") && has_authorization(h)),
        "the registry itself got the credentials: {front_heads:?}"
    );
    let cdn_heads = cdn.heads();
    assert!(
        cdn_heads.len() >= 2,
        "config and layer came from the blob host: {cdn_heads:?}"
    );
    assert!(
        cdn_heads.iter().all(|h| !has_authorization(h)),
        "no Authorization to another host: {cdn_heads:?}"
    );
}

/// A proxy in front of `upstream` that forwards the first PATCH but drops
/// its answer; `other` answers the rest (`None`: forward).
fn losing_the_first_patch_answer(
    upstream: &str,
    other: impl Fn(&str) -> Option<Action> + Send + 'static,
) -> Proxy {
    let cut = AtomicBool::new(false);
    Proxy::start("127.0.0.1:0", upstream.to_string(), move |head| {
        if head.starts_with("PATCH ") && !cut.swap(true, Ordering::SeqCst) {
            Action::ForwardThenCut
        } else {
            other(head).unwrap_or(Action::Forward)
        }
    })
}

#[test]
fn a_chunked_push_resumes_where_the_registry_says() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    // The registry receives the first chunk, but its answer is lost.
    let proxy = losing_the_first_patch_answer(&reg.addr, |_| None);
    env.import_busybox("bb", &[]);
    let image = format!("{}/test/chunked:1", proxy.addr);
    env.ok(&["push", "--chunk-size", "65536", "bb", &image]);

    let ranges: Vec<String> = proxy
        .heads()
        .iter()
        .filter_map(|h| {
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("patch ") {
                let range = lower.split("\r\ncontent-range: ").nth(1)?;
                Some(format!("PATCH {}", range.lines().next()?.trim()))
            } else if lower.starts_with("get ") && lower.contains("/blobs/uploads/") {
                Some("GET".to_string())
            } else {
                None
            }
        })
        .collect();
    assert!(
        ranges.len() > 3 && ranges[0] == "PATCH 0-65535" && ranges[1] == "GET",
        "the first chunk's answer was lost, then the upload's state asked: {ranges:?}"
    );
    assert_eq!(
        ranges[2], "PATCH 65536-131071",
        "resumed after the chunk the registry holds, not from 0: {ranges:?}"
    );
    let other = Env::new();
    let direct = format!("{}/test/chunked:1", reg.addr);
    let out = other.ok(&["run", "--rm", &direct, "echo", "whole"]);
    assert_eq!(out, "whole\n");
}

#[test]
fn an_upload_state_claiming_more_than_the_blob_is_refused() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    // The first chunk's answer is lost, and the upload's state then claims
    // u64::MAX bytes: an error naming the claim, not an overflow.
    let proxy = losing_the_first_patch_answer(&reg.addr, |head| {
        (head.starts_with("GET ") && head.contains("/blobs/uploads/")).then(|| {
            Action::Answer(
                b"HTTP/1.1 204 No Content\r\nRange: 0-18446744073709551615\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        })
    });
    env.import_busybox("bb", &[]);
    let image = format!("{}/test/claims:1", proxy.addr);
    let err = env.fails(&["push", "--chunk-size", "65536", "bb", &image]);
    assert!(
        err.contains("the registry claims 18446744073709551615 bytes of a"),
        "{err}"
    );
}

#[test]
fn a_config_claiming_gigabytes_is_refused_before_it_is_fetched() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    let zero = format!("sha256:{}", "0".repeat(64));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": zero, "size": 10u64 << 30},
        "layers": [],
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}",
        manifest.len()
    );
    let proxy = Proxy::start("127.0.0.1:0", reg.addr.clone(), move |head| {
        if head.contains("/manifests/") {
            Action::Answer(answer.clone().into_bytes())
        } else {
            Action::Forward
        }
    });
    let err = env.fails(&["pull", &format!("{}/test/big:1", proxy.addr)]);
    assert!(err.contains("claims 10737418240 bytes"), "{err}");
    assert!(
        !proxy.heads().iter().any(|h| h.contains("/blobs/")),
        "the config was asked for: {:?}",
        proxy.heads()
    );
}

#[test]
fn a_credential_helper_gives_the_credentials() {
    let env = Env::new();
    let htpasswd = alice_htpasswd(&env.path(""));
    let reg = DockerRegistry::start(&env.path(""), Some(&htpasswd));
    env.import_busybox("bb", &[]);
    let image = format!("{}/test/bb:1", reg.addr);
    env.ok(&["push", "--creds", "alice:s3cret", "bb", &image]);

    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = env.path("helper-asked");
    let helper = bin.join("docker-credential-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\necho \"$server\" >> {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}' \"$server\"\n",
            asked.display()
        ),
    )
    .unwrap();
    let empty = bin.join("docker-credential-empty");
    std::fs::write(
        &empty,
        "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n",
    )
    .unwrap();
    for f in [&helper, &empty] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let docker = env.path("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pull = |config: Value| {
        std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
        let other = Env::new();
        let out = other
            .command(&["pull", &image])
            .env("PATH", &path)
            .env("DOCKER_CONFIG", &docker)
            .env("HOME", env.path("home"))
            .env("XDG_RUNTIME_DIR", env.path("runtime"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (other, out)
    };

    let (other, out) = pull(serde_json::json!({"credHelpers": {reg.addr.clone(): "test"}}));
    assert!(out.status.success(), "{}", other.describe(&out));
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap(),
        format!("{}\n", reg.addr),
        "the helper was asked for this registry"
    );
    // A credsStore that has nothing for the registry: no credentials, a 401.
    let (other, out) = pull(serde_json::json!({"credsStore": "empty"}));
    assert!(!out.status.success(), "{}", other.describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("needs credentials"),
        "{err}"
    );
    // The store is used when there is no helper for the registry itself.
    let (other, out) = pull(serde_json::json!({"credsStore": "test"}));
    assert!(out.status.success(), "{}", other.describe(&out));
}

#[test]
fn a_detached_run_pulls_a_missing_image() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    env.import_busybox("bb", &[]);
    let image = format!("{}/test/detached:1", reg.addr);
    env.ok(&["push", "bb", &image]);
    let other = Env::new();
    let id = other
        .ok(&["run", "-d", &image, "sh", "-c", "exit 7"])
        .trim()
        .to_string();
    assert_eq!(other.ok(&["wait", &id]).trim(), "7");
    assert!(other
        .ok(&["images"])
        .contains(&format!("{}/test/detached", reg.addr)));
    other.ok(&["rm", &id]);
    let err = Env::new().fails(&["run", "-d", "--pull", "never", &image, "true"]);
    assert!(err.contains(&image), "{err}");
}
