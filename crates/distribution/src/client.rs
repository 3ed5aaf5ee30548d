//! One registry, spoken to over HTTP(S): the `/v2/` probe, authentication
//! (Basic, or Bearer tokens fetched from the challenge's realm and cached
//! per scope), manifests, blobs (redirects followed by hand, so the
//! `Authorization` header never goes to another host) and uploads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::{self, Challenge, Credentials};
use crate::error::{Error, Result};

/// The manifest media types berth asks for, best first: OCI and Docker
/// schema 2, each as a single manifest and as an index / list.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or index berth reads (distribution and containerd
/// refuse larger ones too).
pub const MAX_MANIFEST: usize = 4 << 20;

/// How to reach registries: TLS, credentials.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registries (`host[:port]`) spoken to over plain HTTP or without TLS
    /// verification, besides those registries.conf marks `insecure = true`. `localhost`, `127.0.0.1` and `[::1]` are always
    /// allowed plain HTTP.
    pub insecure: Vec<String>,
    /// Every registry is insecure (`--tls-verify=false`).
    pub all_insecure: bool,
    /// Credentials given on the command line; they win over the auth files.
    pub credentials: Option<Credentials>,
    /// The auth file to use instead of the usual ones (`--authfile`).
    pub auth_file: Option<PathBuf>,
    /// Directories holding `HOST[:PORT]/*.crt` CA certificates; default
    /// `/etc/containers/certs.d` and `/etc/docker/certs.d`.
    pub cert_dirs: Vec<PathBuf>,
    /// The registries.conf to read instead of the usual ones.
    pub registries_conf: Option<PathBuf>,
}

impl Options {
    fn is_insecure(&self, host: &str) -> bool {
        self.all_insecure || self.insecure.iter().any(|h| h == host)
    }

    fn cert_dirs(&self) -> Vec<PathBuf> {
        if self.cert_dirs.is_empty() {
            vec![
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ]
        } else {
            self.cert_dirs.clone()
        }
    }
}

/// Whether `host` (with port) is the local machine, where plain HTTP is allowed.
pub fn is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(name, "localhost" | "[::1]")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host serving a registry's API: docker.io's is registry-1.docker.io.
fn api_host(host: &str) -> &str {
    if host == berth_image::reference::DEFAULT_DOMAIN {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// What a request is for: `repository:NAME:pull[,push]` (several joined by
/// spaces), the unit tokens are cached by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    /// `repository:repo:actions`.
    pub fn repository(repo: &str, actions: &str) -> Scope {
        Scope(format!("repository:{repo}:{actions}"))
    }

    /// This scope plus `repository:repo:pull` (to mount from `repo`).
    pub fn and_pull(&self, repo: &str) -> Scope {
        Scope(format!("{} repository:{repo}:pull", self.0))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Token {
    header: String,
    expires: Instant,
}

/// A manifest or index as the registry sent it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its media type (from `Content-Type`, else the document's own).
    pub media_type: String,
    /// The digest of the bytes received.
    pub digest: Digest,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A connection to one registry.
pub struct Registry {
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<Scope, Token>>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.base)
    }
}

/// The PEM certificates in the file at `path`.
fn pem_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::invalid(path.display().to_string(), why);
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("not a PEM certificate: no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Reads the CA certificates `DIR/HOST/*.crt` for `host`.
fn host_cas(host: &str, dirs: &[PathBuf]) -> Result<Vec<reqwest::Certificate>> {
    let mut out = Vec::new();
    for dir in dirs {
        let d = dir.join(host);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "crt") {
                out.extend(pem_certificates(&path)?);
            }
        }
    }
    Ok(out)
}

/// Where distributions keep the system's CA bundle (Debian and Arch,
/// Fedora and RHEL, openSUSE, Alpine).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trusted CAs: `$SSL_CERT_FILE` (an error if unreadable),
/// else the first system bundle that exists (skipped with a warning if it
/// does not parse). They are trusted besides webpki's Mozilla roots.
fn system_cas() -> Result<Vec<reqwest::Certificate>> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return pem_certificates(Path::new(&file));
    }
    for bundle in SYSTEM_BUNDLES {
        let path = Path::new(bundle);
        if path.exists() {
            return Ok(pem_certificates(path).unwrap_or_else(|e| {
                tracing::warn!("ignoring the system CA bundle: {e}");
                Vec::new()
            }));
        }
    }
    Ok(Vec::new())
}

impl Registry {
    /// Probes `host` (`host[:port]`, as in a reference) at `/v2/`: HTTPS,
    /// or for a local or insecure registry HTTPS then plain HTTP. Remembers
    /// the authentication challenge. Credentials come from `options`, else
    /// from the auth files.
    pub async fn connect(host: &str, options: &Options) -> Result<Registry> {
        let conf = crate::registries::RegistriesConf::load(options.registries_conf.as_deref())?;
        conf.check_blocked(host)?;
        let insecure = options.is_insecure(host) || conf.insecure(host);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(insecure);
        for ca in system_cas()?
            .into_iter()
            .chain(host_cas(host, &options.cert_dirs())?)
        {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().map_err(|e| Error::network(host, &e))?;
        let credentials = match &options.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(host, options.auth_file.as_deref())?,
        };
        let api = api_host(host);
        let schemes: &[&str] = if insecure || is_local(host) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut failures = Vec::new();
        for scheme in schemes {
            let base = Url::parse(&format!("{scheme}://{api}/"))
                .map_err(|e| Error::invalid(format!("registry {host:?}"), e.to_string()))?;
            let url = base.join("v2/").expect("a fixed path always joins");
            match http.get(url.clone()).send().await {
                Ok(resp) => {
                    let challenge = challenge_of(&resp);
                    let status = resp.status();
                    if !(status.is_success() || status == StatusCode::UNAUTHORIZED) {
                        return Err(status_error(&format!("GET {url}"), resp).await);
                    }
                    return Ok(Registry {
                        host: host.to_string(),
                        base,
                        http,
                        credentials,
                        challenge: Mutex::new(challenge),
                        tokens: Mutex::new(HashMap::new()),
                        fetching: tokio::sync::Mutex::new(()),
                    });
                }
                Err(e) => failures.push(format!("{url}: {}", berth_core::error_chain(&e))),
            }
        }
        let hint = if insecure || is_local(host) {
            String::new()
        } else {
            format!(" (if {host} speaks plain HTTP or has a certificate berth cannot verify, give its CA in certs.d/--cert-dir or use --tls-verify=false)")
        };
        Err(Error::Network {
            url: format!("registry {host}"),
            cause: format!("{}{hint}", failures.join("; ")),
        })
    }

    /// The registry host as references name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry API paths always join")
    }

    /// The `Authorization` value for `scope`, fetching a token if needed.
    async fn authorization(&self, scope: &Scope) -> Result<Option<String>> {
        let challenge = self.challenge.lock().expect("auth state").clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(Credentials::basic)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                // One fetch at a time: concurrent requests of one scope
                // wait for the first one's token instead of each asking.
                let _fetching = self.fetching.lock().await;
                if let Some(t) = self.tokens.lock().expect("token cache").get(scope) {
                    if t.expires > Instant::now() {
                        return Ok(Some(t.header.clone()));
                    }
                }
                let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
                let header = token.header.clone();
                self.tokens
                    .lock()
                    .expect("token cache")
                    .insert(scope.clone(), token);
                Ok(Some(header))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<Token> {
        let mut url = Url::parse(realm).map_err(|e| {
            Error::invalid(
                format!("token realm {realm:?} of {}", self.host),
                e.to_string(),
            )
        })?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.base.scheme() == "http") {
            return Err(Error::invalid(
                format!("token realm {realm:?} of {}", self.host),
                "credentials are only sent to an https realm (or http for a plain-HTTP registry)",
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.0.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", s);
            }
        }
        let mut req = self.http.get(url.clone());
        if let Some(c) = &self.credentials {
            req = req.header(AUTHORIZATION, c.basic());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::network(url.as_str(), &e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(scope, resp.status()));
        }
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let body = read_limited(resp, 1 << 20, url.as_str()).await?;
        token_from_answer(&body, &url)
    }

    fn unauthorized(&self, scope: &Scope, status: StatusCode) -> Error {
        let detail = match &self.credentials {
            Some(c) => format!(
                "the registry refused the credentials of user {:?} ({status}); check them with `berth login {}`",
                c.username, self.host
            ),
            None => format!(
                "the registry needs credentials ({status}); run `berth login {}` or pass --creds USER:PASSWORD",
                self.host
            ),
        };
        Error::Unauthorized {
            registry: self.host.clone(),
            scope: if scope.0.is_empty() {
                "login".into()
            } else {
                scope.to_string()
            },
            detail,
        }
    }

    /// Sends a request to this registry with authentication: on a 401 the
    /// challenge is re-read, the token for `scope` dropped and the request
    /// sent once more (`body` is called again for it).
    pub async fn send(
        &self,
        scope: &Scope,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: &(dyn Fn() -> Result<Option<reqwest::Body>> + Sync),
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            let sent = self.authorization(scope).await?;
            if let Some(a) = &sent {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some(b) = body()? {
                req = req.body(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Error::network(url.as_str(), &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            {
                // Drop the refused token, unless a concurrent request has
                // already replaced it.
                let mut tokens = self.tokens.lock().expect("token cache");
                if tokens.get(scope).map(|t| &t.header) == sent.as_ref() {
                    tokens.remove(scope);
                }
            }
            if attempt == 0 {
                if let Some(fresh) = challenge_of(&resp) {
                    *self.challenge.lock().expect("auth state") = Some(fresh);
                }
                continue;
            }
            return Err(self.unauthorized(scope, resp.status()));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Checks the credentials: `/v2/` with authentication (for a token
    /// registry, a token for no particular scope).
    pub async fn check_login(&self) -> Result<()> {
        let url = self.url("v2/");
        let scope = Scope(String::new());
        let resp = self
            .send(&scope, Method::GET, url.clone(), HeaderMap::new(), &|| {
                Ok(None)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        Ok(())
    }

    /// GETs a manifest or index by tag or digest. With `expected`, the
    /// bytes must hash to it.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Manifest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let scope = Scope::repository(repo, "pull");
        let resp = self
            .send(&scope, Method::GET, url.clone(), headers, &|| Ok(None))
            .await?;
        let what = format!("manifest {}/{repo}:{reference}", self.host);
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::Status {
                what: format!("{what} (no such image: check the name and tag)"),
                status: 404,
                message: registry_message(resp).await,
            });
        }
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let data = read_limited(resp, MAX_MANIFEST, url.as_str()).await?;
        if content_type.starts_with("application/vnd.docker.distribution.manifest.v1+") {
            return Err(Error::invalid(
                what,
                "the registry only has a Docker schema1 manifest, which berth does not support; re-push the image with a current docker, podman or skopeo",
            ));
        }
        let algorithm = expected
            .map(|d| d.algorithm().clone())
            .unwrap_or(oci_spec::image::DigestAlgorithm::Sha256);
        let digest = berth_core::digest::digest_of(&algorithm, &data)
            .map_err(|e| Error::invalid(&what, e.to_string()))?;
        if let Some(e) = expected {
            if &digest != e {
                return Err(Error::invalid(
                    what,
                    format!("the registry sent content with digest {digest}, not {e}; refused"),
                ));
            }
        }
        let media_type = media_type_of(&content_type, &data);
        Ok(Manifest {
            media_type,
            digest,
            data,
        })
    }

    /// GETs a blob from `offset` on (a `Range` request when `offset > 0`),
    /// following redirects: the `Authorization` header goes only to this
    /// registry's own host, and never from HTTPS down to HTTP. Returns the
    /// response and whether it is partial (206).
    pub async fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<(Response, bool)> {
        let mut url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let scope = Scope::repository(repo, "pull");
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                reqwest::header::RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-"))
                    .expect("digits are a valid header"),
            );
        }
        let mut resp = self
            .send(&scope, Method::GET, url.clone(), headers.clone(), &|| {
                Ok(None)
            })
            .await?;
        for _ in 0..8 {
            if !resp.status().is_redirection() {
                break;
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Error::invalid(format!("GET {url}"), "a redirect without Location")
                })?;
            let next = url.join(location).map_err(|e| {
                Error::invalid(
                    format!("redirect from {url}"),
                    format!("bad Location {location:?}: {e}"),
                )
            })?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(Error::invalid(
                    format!("redirect from {url}"),
                    format!("to {next} would leave HTTPS; refused"),
                ));
            }
            url = next;
            resp = if url.origin() == self.base.origin() {
                self.send(&scope, Method::GET, url.clone(), headers.clone(), &|| {
                    Ok(None)
                })
                .await?
            } else {
                self.http
                    .get(url.clone())
                    .headers(headers.clone())
                    .send()
                    .await
                    .map_err(|e| Error::network(url.as_str(), &e))?
            };
        }
        match resp.status() {
            StatusCode::OK => Ok((resp, false)),
            StatusCode::PARTIAL_CONTENT if offset > 0 => Ok((resp, true)),
            StatusCode::NOT_FOUND => Err(Error::Status {
                what: format!("blob {digest} of {}/{repo}", self.host),
                status: 404,
                message: registry_message(resp).await,
            }),
            _ => Err(status_error(&format!("GET {url}"), resp).await),
        }
    }

    /// Whether the repository has the blob (HEAD).
    pub async fn has_blob(&self, repo: &str, digest: &Digest, scope: &Scope) -> Result<bool> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(scope, Method::HEAD, url.clone(), HeaderMap::new(), &|| {
                Ok(None)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&format!("HEAD {url}"), resp).await),
        }
    }

    /// Starts an upload, or mounts `digest` from repository `from` (of the
    /// same registry). Returns `None` when mounted, else the upload URL.
    pub async fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
        scope: &Scope,
    ) -> Result<Option<Url>> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        if let Some((digest, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", digest.as_ref())
                .append_pair("from", from);
        }
        let resp = self
            .send(scope, Method::POST, url.clone(), HeaderMap::new(), &|| {
                Ok(None)
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(&url, &resp)?)),
            _ => Err(status_error(&format!("POST {url}"), resp).await),
        }
    }

    /// The `Location` of an upload answer, resolved against `url`.
    pub fn location(&self, url: &Url, resp: &Response) -> Result<Url> {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::invalid(format!("{url}"), "the registry sent no upload Location")
            })?;
        let next = url.join(location).map_err(|e| {
            Error::invalid(format!("{url}"), format!("bad Location {location:?}: {e}"))
        })?;
        if next.origin() != self.base.origin() {
            return Err(Error::invalid(
                format!("{url}"),
                format!("the upload Location {next} is on another host; refused"),
            ));
        }
        Ok(next)
    }

    /// PUTs a manifest or index under `reference` (tag or digest); returns
    /// the answer's headers (`OCI-Subject` says the registry indexed the
    /// manifest's subject for the referrers API).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<HeaderMap> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| {
                Error::invalid(
                    "manifest media type",
                    format!("{media_type:?} is not a header value"),
                )
            })?,
        );
        let scope = Scope::repository(repo, "pull,push");
        let body = data.to_vec();
        let resp = self
            .send(&scope, Method::PUT, url.clone(), headers, &|| {
                Ok(Some(body.clone().into()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("PUT {url}"), resp).await);
        }
        Ok(resp.headers().clone())
    }

    /// GETs `/v2/<repo>/referrers/<subject>` (with `artifactType` as a
    /// filter the registry may apply). `None` when the registry has no
    /// referrers API (404), else the index's bytes and whether the registry
    /// applied the filter (`OCI-Filters-Applied`).
    pub async fn referrers_api(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<(Vec<u8>, bool)>> {
        let mut url = self.url(&format!("v2/{repo}/referrers/{subject}"));
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        let scope = Scope::repository(repo, "pull");
        let resp = self
            .send(&scope, Method::GET, url.clone(), headers, &|| Ok(None))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let filtered = resp
            .headers()
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
        let data = read_limited(resp, MAX_MANIFEST, url.as_str()).await?;
        Ok(Some((data, filtered)))
    }
}

/// The challenge in a 401 answer's `WWW-Authenticate`.
fn challenge_of(resp: &Response) -> Option<Challenge> {
    if resp.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    resp.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(auth::parse_challenge)
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}

/// The media type of a manifest: `Content-Type` if it names one, else the
/// document's `mediaType`, else OCI's by shape.
fn media_type_of(content_type: &str, data: &[u8]) -> String {
    if content_type.starts_with("application/vnd.") {
        return content_type.to_string();
    }
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return mt.to_string();
    }
    if v.get("manifests").is_some() {
        "application/vnd.oci.image.index.v1+json".into()
    } else {
        "application/vnd.oci.image.manifest.v1+json".into()
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(mut resp: Response, limit: usize, url: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::network(url, &e))? {
        if out.len() + chunk.len() > limit {
            return Err(Error::invalid(
                url,
                format!("the answer is larger than {limit} bytes; refused"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The registry's error message (`{"errors":[{"code","message"}]}`), or
/// the start of the body.
async fn registry_message(resp: Response) -> String {
    let url = resp.url().to_string();
    let body = read_limited(resp, 64 << 10, &url).await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        return e
            .errors
            .iter()
            .map(|x| {
                format!(
                    "{} {}",
                    x.code.as_deref().unwrap_or(""),
                    x.message.as_deref().unwrap_or("")
                )
                .trim()
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string()
}

/// An unexpected status, with the registry's message.
pub(crate) async fn status_error(what: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    Error::Status {
        what: what.to_string(),
        status,
        message: registry_message(resp).await,
    }
}

/// Whether an error is worth retrying (the connection, or a 5xx / 429).
pub(crate) fn transient(err: &Error) -> bool {
    match err {
        Error::Network { .. } => true,
        Error::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// Opens a file for an upload body.
pub(crate) fn file_body(path: &Path) -> Result<reqwest::Body> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file = tokio::fs::File::from_std(file);
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 1 << 20),
    ))
}

/// The cached token of a token realm's answer (`token` or `access_token`,
/// and `expires_in`, which the realm chooses: anything beyond a day is cut
/// to a day, so no answer can overflow the expiry).
fn token_from_answer(body: &[u8], url: &Url) -> Result<Token> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let t: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("token from {url}"), format!("invalid JSON: {e}")))?;
    let token = t
        .token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid(format!("token from {url}"), "no \"token\" in the answer"))?;
    // Refresh a little early; 60 s is the spec's default lifetime.
    let life = t.expires_in.unwrap_or(60).clamp(10, 86_400) - 5;
    Ok(Token {
        header: format!("Bearer {token}"),
        expires: Instant::now() + Duration::from_secs(life),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_and_media_types() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:80", "[::1]:5000"] {
            assert!(is_local(h), "{h}");
        }
        for h in ["docker.io", "127.example:5000", "localhost.evil.com"] {
            assert!(!is_local(h), "{h}");
        }
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(
            media_type_of("application/json", br#"{"manifests":[]}"#),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_of(
                "application/vnd.docker.distribution.manifest.v2+json",
                b"{}"
            ),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }

    #[test]
    fn a_token_realm_chooses_the_lifetime_within_a_day() {
        let url = Url::parse("https://auth.example/token").unwrap();
        let life = |body: &str| {
            let t = token_from_answer(body.as_bytes(), &url).unwrap();
            assert_eq!(t.header, "Bearer t");
            t.expires.duration_since(Instant::now()).as_secs()
        };
        // A hostile or careless realm's u64::MAX must not overflow the expiry.
        assert!(
            (86_000..86_400).contains(&life(r#"{"token":"t","expires_in":18446744073709551615}"#))
        );
        assert!(life(r#"{"access_token":"t","expires_in":300}"#) >= 290);
        assert!(life(r#"{"token":"t","expires_in":0}"#) <= 5);
        assert!(life(r#"{"token":"t"}"#) >= 50);
        let Err(err) = token_from_answer(br#"{"token":""}"#, &url) else {
            panic!("an empty token was accepted");
        };
        assert!(err.to_string().contains("no \"token\""), "{err}");
    }
}
