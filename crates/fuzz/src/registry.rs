//! Targets for berth-registry: name/tag/digest grammar, routing, `Range`
//! and `Content-Range`, auth headers, JWTs, the token endpoint, htpasswd
//! files and manifest PUTs.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use berth_registry::api::fuzzing::{self as api, Routed};
use berth_registry::auth::{Access, Action, Auth, AuthConfig, Rule, TokenConfig};
use berth_registry::digest::{self, is_tag, validate_name};
use berth_registry::storage::{Appender, ByteStream, Driver, Meta, Precondition, Version};
use berth_registry::store::Store;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::scratch;

/// A digest string, a repository name and a tag, all at once. Asserts that
/// a parsed digest prints as its input, and that the registry's name
/// grammar agrees with the image reference parser's (what `berth push`
/// accepts, the registry accepts, and the other way round).
pub fn registry_names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = digest::parse(text) {
        assert_eq!(d.to_string(), text, "a digest does not print as parsed");
    }
    let _ = is_tag(text);
    let name_ok = validate_name(text).is_ok();
    // "localhost/<name>" keeps the name as the path (no library/ prefix);
    // ':' and '@' would start a tag or digest there.
    if !text.contains([':', '@']) && text.len() <= 255 - "localhost/".len() {
        let reference = berth_image::Reference::parse(&format!("localhost/{text}"));
        assert_eq!(
            reference.is_ok(),
            name_ok,
            "registry and image reference grammars disagree on {text:?}: {reference:?}"
        );
    }
}

/// The path of a request rebuilt from its route.
fn rebuild(route: &Routed) -> Vec<String> {
    match route {
        Routed::Base => vec!["/v2".into(), "/v2/".into()],
        Routed::Catalog => vec!["/v2/_catalog".into()],
        Routed::Metrics => vec!["/metrics".into()],
        Routed::Token => vec!["/token".into()],
        Routed::Health => vec!["/healthz".into()],
        Routed::Ready => vec!["/readyz".into()],
        Routed::Tags(r) => vec![format!("/v2/{r}/tags/list")],
        Routed::Manifest(r, t) => vec![format!("/v2/{r}/manifests/{t}")],
        Routed::Blob(r, d) => vec![format!("/v2/{r}/blobs/{d}")],
        Routed::UploadStart(r) => vec![
            format!("/v2/{r}/blobs/uploads/"),
            format!("/v2/{r}/blobs/uploads"),
        ],
        Routed::Upload(r, i) => vec![format!("/v2/{r}/blobs/uploads/{i}")],
        Routed::Referrers(r, d) => vec![format!("/v2/{r}/referrers/{d}")],
    }
}

/// A request target `path[?query]`: routing, then what the handlers check
/// before touching storage (name grammar, digests, tags, the blob mount
/// source and `n`/`last` pagination). Asserts that a route keeps every
/// byte of the path (rebuilding it gives the input back).
pub fn registry_route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    if let Some(route) = api::parse_route(path) {
        assert!(
            rebuild(&route).iter().any(|p| p == path),
            "{path:?} routes to {route:?}, which loses part of it"
        );
        match &route {
            Routed::Tags(r) | Routed::UploadStart(r) | Routed::Upload(r, _) => {
                let _ = validate_name(r);
            }
            Routed::Manifest(r, t) => {
                let _ = validate_name(r);
                if t.contains(':') {
                    let _ = digest::parse(t);
                } else {
                    let _ = is_tag(t);
                }
            }
            Routed::Blob(r, d) | Routed::Referrers(r, d) => {
                let _ = validate_name(r);
                let _ = digest::parse(d);
            }
            Routed::Base
            | Routed::Catalog
            | Routed::Metrics
            | Routed::Token
            | Routed::Health
            | Routed::Ready => {}
        }
    }
    let _ = api::mount_source(query);
    let tags = ["1.0", "latest", "v1", "v2"].map(String::from).to_vec();
    if let Ok((status, _link)) = api::paginate(tags, query) {
        assert_eq!(status, 200);
    }
}

/// A `Range` header (against blobs of several sizes, including 0 and
/// `u64::MAX`) and an upload `Content-Range`. Asserts that a parsed range
/// lies inside the blob.
pub fn registry_range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for size in [0, 1, 2, 10, 4096, 1 << 40, u64::MAX - 1, u64::MAX] {
        if let Ok((start, end)) = api::parse_range(text, size) {
            assert!(
                start <= end && end < size,
                "Range {text:?} on {size} bytes gives {start}-{end}"
            );
        }
    }
    let _ = api::parse_content_range(text);
}

/// The password of the htpasswd user `alice` (hashed with bcrypt cost 4,
/// so fuzzing Basic credentials stays fast).
const PASSWORD: &str = "alice-password";
/// The HS256 key of the token mode.
const SECRET: &str = "fuzzing-secret-0123456789";
/// The token service name.
const SERVICE: &str = "berth-fuzz";

/// The auth modes the header targets run against.
struct Modes {
    basic: Auth,
    token: Auth,
}

fn rules() -> Vec<Rule> {
    vec![
        Rule {
            account: "alice".into(),
            repos: "team/*".into(),
            actions: vec![Action::Pull, Action::Push, Action::Delete],
        },
        Rule {
            account: "anonymous".into(),
            repos: "public".into(),
            actions: vec![Action::Pull],
        },
        Rule {
            account: "*".into(),
            repos: "*".into(),
            actions: vec![Action::Catalog],
        },
    ]
}

/// Whether [`rules`] let `account` (empty: anonymous) do `action` on the
/// `kind:name` resource.
fn allowed(account: &str, kind: &str, name: &str, action: &str) -> bool {
    match (kind, action) {
        ("registry", "*") => name == "catalog" && !account.is_empty(),
        ("repository", "pull") if account.is_empty() => name == "public",
        ("repository", "pull" | "push" | "delete") => {
            account == "alice" && name.starts_with("team/")
        }
        _ => false,
    }
}

fn modes() -> &'static Modes {
    static MODES: OnceLock<Modes> = OnceLock::new();
    MODES.get_or_init(|| {
        let dir = scratch::dir();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt a password");
        scratch::write(&htpasswd, format!("alice:{hash}\n").as_bytes());
        let basic = Auth::from_config(&AuthConfig {
            htpasswd: Some(htpasswd.clone()),
            token: None,
        })
        .expect("Basic auth config");
        let token = Auth::from_config(&AuthConfig {
            htpasswd: Some(htpasswd),
            token: Some(TokenConfig {
                realm: None,
                service: SERVICE.into(),
                secret: Some(SECRET.into()),
                expiry_secs: 300,
                rules: rules(),
            }),
        })
        .expect("token auth config");
        Modes { basic, token }
    })
}

fn needs(repo: &str, action: Action) -> Vec<Access> {
    vec![Access {
        repo: repo.into(),
        action,
    }]
}

/// Runs `headers` through every check the API makes.
fn check_all(auth: &Auth, headers: &HeaderMap) {
    for needed in [
        Vec::new(),
        needs("team/app", Action::Pull),
        needs("public", Action::Push),
        needs("", Action::Catalog),
    ] {
        let _ = runtime().block_on(auth.check(
            headers,
            &needed,
            &needs("other", Action::Pull),
            "http://h",
        ));
    }
}

/// An `Authorization` header value against Basic (htpasswd) and token
/// auth: Basic credential decoding, bearer token extraction, JWT
/// verification, `bearer_is` (the `/metrics` token), and the token
/// endpoint's Basic login.
pub fn registry_auth_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let modes = modes();
    check_all(&modes.basic, &headers);
    check_all(&modes.token, &headers);
    let _ = berth_registry::auth::bearer_is(&headers, "metrics-token-0123456789");
    let _ = runtime().block_on(modes.token.issue_token(
        &headers,
        "service=berth-fuzz&scope=repository:team/app:pull",
    ));
}

/// HMAC-SHA256 (RFC 2104) with a key of at most 64 bytes.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// JWT claims (the payload JSON) in a token correctly signed with the
/// registry's key, so fuzzing gets past the signature: claims decoding,
/// expiry / not-before / audience checks and grant matching. The strings
/// `$NOW` and `$LATER` in the payload become the current time and an hour
/// later (so corpus tokens do not expire). Asserts that a token the
/// registry accepts for pulling `team/app` is unexpired, for this service,
/// and grants that pull.
pub fn registry_jwt_claims(data: &[u8]) {
    let payload = String::from_utf8_lossy(data)
        .replace("$NOW", &now().to_string())
        .replace("$LATER", &(now() + 3600).to_string());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload.as_bytes()));
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(SECRET.as_bytes(), signing.as_bytes()));
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {signing}.{sig}")) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let auth = &modes().token;
    check_all(auth, &headers);
    if runtime()
        .block_on(auth.check(&headers, &needs("team/app", Action::Pull), &[], "http://h"))
        .is_ok()
    {
        let claims: serde_json::Value =
            serde_json::from_str(&payload).expect("accepted claims are JSON");
        assert_eq!(claims["aud"], SERVICE, "accepted for another service");
        assert!(
            claims["exp"]
                .as_u64()
                .is_some_and(|e| e > now().saturating_sub(5)),
            "accepted an expired token: {claims}"
        );
        let grants = claims["access"].as_array().cloned().unwrap_or_default();
        assert!(
            grants.iter().any(|g| g["type"] == "repository"
                && g["name"] == "team/app"
                && g["actions"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "pull" || x == "*"))),
            "accepted a pull of team/app that the claims do not grant: {claims}"
        );
    }
}

/// A token request: the first line is the `Authorization` header (empty:
/// none), the rest the query or form body (`service`, `scope`,
/// `grant_type=password&username=…&password=…`). Asserts that an issued
/// token verifies, and grants nothing the rules do not allow its account.
pub fn registry_token_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (auth_line, params) = text.split_once('\n').unwrap_or(("", &text));
    let mut headers = HeaderMap::new();
    if !auth_line.is_empty() {
        let Ok(value) = HeaderValue::from_str(auth_line) else {
            return;
        };
        headers.insert(header::AUTHORIZATION, value);
    }
    let auth = &modes().token;
    let Ok(body) = runtime().block_on(auth.issue_token(&headers, params)) else {
        return;
    };
    let token = body["token"].as_str().expect("a token in the reply");
    let mut bearer = HeaderMap::new();
    bearer.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value"),
    );
    runtime()
        .block_on(auth.check(&bearer, &[], &[], "http://h"))
        .unwrap_or_else(|d| panic!("an issued token is refused: {}", d.message));
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("issued claims decode");
    let account = claims["sub"].as_str().unwrap_or_default();
    for grant in claims["access"].as_array().into_iter().flatten() {
        let kind = grant["type"].as_str().unwrap_or_default();
        let name = grant["name"].as_str().unwrap_or_default();
        for action in grant["actions"].as_array().into_iter().flatten() {
            let action = action.as_str().unwrap_or_default();
            assert!(
                allowed(account, kind, name, action),
                "token for {account:?} grants {kind}:{name}:{action} (request {text:?})"
            );
        }
    }
}

/// An htpasswd file, loaded as `auth.htpasswd` alone (Basic mode) and as
/// the token endpoint's users; then an anonymous request and a Basic login
/// of a user no file can define (a name with a line break), so bcrypt
/// never runs on a fuzzed hash (a `$2b$31$` cost would take hours).
pub fn registry_htpasswd(data: &[u8]) {
    let dir = scratch::dir();
    let path = dir.path().join("htpasswd");
    scratch::write(&path, data);
    let basic = Auth::from_config(&AuthConfig {
        htpasswd: Some(path.clone()),
        token: None,
    });
    if let Ok(auth) = &basic {
        check_all(auth, &HeaderMap::new());
    }
    let _ = Auth::from_config(&AuthConfig {
        htpasswd: Some(path),
        token: Some(TokenConfig {
            realm: Some("https://auth.example/token".into()),
            service: SERVICE.into(),
            secret: Some(SECRET.into()),
            expiry_secs: 60,
            rules: rules(),
        }),
    });
    if let Ok(auth) = &basic {
        let mut headers = HeaderMap::new();
        let creds = STANDARD.encode("no\nsuch user:password");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {creds}")).expect("a header value"),
        );
        check_all(auth, &headers);
    }
}

/// A storage driver in memory in which every blob (but `absent`), blob
/// link and manifest revision that was never written "exists" (empty), so
/// a manifest's references are all satisfied and its PUT goes all the way
/// through.
struct YesDriver {
    objects: Mutex<BTreeMap<String, Bytes>>,
    /// The key of the manifest's own blob, which must really be written.
    absent: String,
}

impl YesDriver {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fuzzing driver's object version: a hash of the content.
fn version_of(data: &[u8]) -> Version {
    Version(hex::encode(Sha256::digest(data)))
}

fn unsupported() -> io::Error {
    io::Error::other("not supported by the fuzzing driver")
}

#[async_trait::async_trait]
impl Driver for YesDriver {
    async fn stat(&self, path: &str) -> io::Result<Option<Meta>> {
        let meta = |size| Meta {
            size,
            modified: SystemTime::now(),
        };
        if let Some(data) = self.objects().get(path) {
            return Ok(Some(meta(data.len() as u64)));
        }
        let prefix = format!("{path}/");
        if self.objects().keys().any(|k| k.starts_with(&prefix)) {
            return Ok(Some(meta(0)));
        }
        let assumed = (path.starts_with("blobs/") && path != self.absent)
            || path.contains("/_layers/")
            || path.contains("/_manifests/revisions/");
        Ok(assumed.then(|| meta(0)))
    }
    async fn get(&self, path: &str) -> io::Result<Option<Bytes>> {
        Ok(self.objects().get(path).cloned())
    }
    async fn put(&self, path: &str, data: Bytes) -> io::Result<()> {
        self.objects().insert(path.to_string(), data);
        Ok(())
    }
    async fn reader(&self, _path: &str, _offset: u64, _len: u64) -> io::Result<ByteStream> {
        Err(unsupported())
    }
    async fn appender(&self, _path: &str) -> io::Result<Box<dyn Appender>> {
        Err(unsupported())
    }
    async fn get_versioned(&self, path: &str) -> io::Result<Option<(Bytes, Version)>> {
        Ok(self.objects().get(path).map(|d| (d.clone(), version_of(d))))
    }
    async fn put_if(
        &self,
        path: &str,
        data: Bytes,
        cond: &Precondition,
    ) -> io::Result<Option<Version>> {
        let mut objects = self.objects();
        let holds = match (cond, objects.get(path)) {
            (Precondition::Absent, None) => true,
            (Precondition::Matches(v), Some(old)) => *v == version_of(old),
            _ => false,
        };
        if !holds {
            return Ok(None);
        }
        let version = version_of(&data);
        objects.insert(path.to_string(), data);
        Ok(Some(version))
    }
    async fn concat(&self, _from: &[String], _to: &str) -> io::Result<()> {
        Err(unsupported())
    }
    async fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{path}/");
        let mut names: Vec<String> = self
            .objects()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        Ok(names)
    }
    async fn delete(&self, path: &str) -> io::Result<()> {
        let prefix = format!("{path}/");
        self.objects()
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }
    async fn touch(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A manifest PUT body (media type from the body, or
/// `application/vnd.oci.image.manifest.v1+json` as Content-Type when it
/// has none) on a store where every referenced blob exists: JSON and
/// oci-spec parsing, schema1 refusal, subjects and referrers, tags. Asserts
/// that a stored manifest reads back byte for byte under its tag and
/// digest, is listed among its subject's referrers, and leaves them when
/// deleted.
pub fn registry_manifest(data: &[u8]) {
    let driver = YesDriver {
        objects: Mutex::default(),
        absent: format!("blobs/sha256/{}", hex::encode(Sha256::digest(data))),
    };
    let store = Store::new(Arc::new(driver));
    let body = Bytes::copy_from_slice(data);
    let content_type = Some("application/vnd.oci.image.manifest.v1+json");
    runtime().block_on(async {
        let Ok(put) = store
            .manifest_put("repo", "latest", content_type, body.clone(), &["v1".into()])
            .await
        else {
            return;
        };
        for reference in [
            "latest".to_string(),
            "v1".to_string(),
            put.digest.to_string(),
        ] {
            let got = store
                .manifest_get("repo", &reference)
                .await
                .unwrap_or_else(|e| panic!("stored manifest not found by {reference}: {e}"));
            assert_eq!(
                got.body, body,
                "manifest {reference} reads back different bytes"
            );
            assert_eq!(got.digest, put.digest);
        }
        let Some(subject) = &put.subject else {
            return;
        };
        let subject = digest::parse(subject).expect("a stored subject is a valid digest");
        let listed = |all: Vec<serde_json::Value>| {
            all.iter()
                .any(|d| d["digest"].as_str() == Some(put.digest.to_string().as_str()))
        };
        let referrers = store
            .referrers("repo", &subject, None)
            .await
            .expect("list referrers");
        assert!(
            listed(referrers),
            "manifest missing from its subject's referrers"
        );
        store
            .manifest_delete("repo", put.digest.as_ref())
            .await
            .expect("delete a stored manifest");
        let referrers = store
            .referrers("repo", &subject, None)
            .await
            .expect("list referrers");
        assert!(!listed(referrers), "a deleted manifest is still a referrer");
    });
}
