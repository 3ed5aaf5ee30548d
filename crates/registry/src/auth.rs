//! Authentication and authorisation: open, htpasswd (bcrypt) Basic, and the
//! Docker token flow with a built-in token endpoint issuing HS256 JWTs that
//! carry per-repository `pull`/`push`/`delete` scopes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs and manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// List the catalog (`registry:catalog:*`).
    Catalog,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Catalog => "*",
        }
    }
    fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::Catalog),
            _ => None,
        }
    }
}

/// One access right a request needs: an action on a repository, or
/// `Catalog` (repository empty), or nothing beyond being authenticated
/// (`None` in [`Auth::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Repository name (empty for the catalog).
    pub repo: String,
    /// The action.
    pub action: Action,
}

/// A rule of the token service: `account` may do `actions` on repositories
/// matching `repos`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A user name, `*` for any authenticated user, or `anonymous`.
    pub account: String,
    /// A repository name, or a prefix ending in `*` (`team/*`, `*`).
    #[serde(default = "star")]
    pub repos: String,
    /// Allowed actions (`catalog` allows listing `/v2/_catalog`).
    pub actions: Vec<Action>,
}

fn star() -> String {
    "*".into()
}

/// Token service settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// URL clients fetch tokens from; default: this server's `/token`.
    #[serde(default)]
    pub realm: Option<String>,
    /// Service name (the token's audience).
    #[serde(default = "default_service")]
    pub service: String,
    /// HMAC key for HS256; default: a random key kept in the storage
    /// (`secrets/token`), shared by every replica on that storage.
    #[serde(default)]
    pub secret: Option<String>,
    /// Token lifetime in seconds.
    #[serde(default = "default_expiry")]
    pub expiry_secs: u64,
    /// Access rules; first-match is not needed: rights are the union of matching rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_service() -> String {
    "berth-registry".into()
}
fn default_expiry() -> u64 {
    300
}

/// Auth settings from the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// htpasswd file with bcrypt hashes. Alone: Basic auth, every user may do everything.
    /// With `token`: the users of the token endpoint.
    #[serde(default)]
    pub htpasswd: Option<std::path::PathBuf>,
    /// Token auth.
    #[serde(default)]
    pub token: Option<TokenConfig>,
}

/// Why a request was refused.
#[derive(Debug)]
pub struct Denial {
    /// `WWW-Authenticate` value, when the client should (re)authenticate.
    pub challenge: Option<String>,
    /// True when credentials were valid but not sufficient (403 DENIED in Basic mode).
    pub denied: bool,
    /// Human message.
    pub message: String,
}

/// Error loading auth settings.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The htpasswd file could not be read or parsed.
    #[error("htpasswd file {path}: {message}")]
    Htpasswd {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The configuration is inconsistent.
    #[error("auth config: {0}")]
    Config(String),
}

/// The highest bcrypt cost an htpasswd hash may have (`htpasswd -C`'s
/// range ends there; each step doubles the time of a login).
const MAX_BCRYPT_COST: u32 = 17;

/// Users from an htpasswd file, with a cache of verified passwords so bcrypt
/// runs once per user and password, not once per request.
struct Users {
    hashes: HashMap<String, String>,
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl Users {
    fn load(path: &Path) -> Result<Users, AuthError> {
        let err = |message: String| AuthError::Htpasswd {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err(format!("line {}: expected user:bcrypt-hash", n + 1)))?;
            if !hash.starts_with("$2") {
                return Err(err(format!(
                    "line {}: user {user:?} has a non-bcrypt hash; create it with `htpasswd -B`",
                    n + 1
                )));
            }
            // A hash that cannot parse would fail every login as a wrong
            // password; one past htpasswd's highest cost (17) would make a
            // single login attempt run for hours.
            match hash.parse::<bcrypt::HashParts>() {
                Err(e) => {
                    return Err(err(format!(
                        "line {}: user {user:?} has a hash that is not a bcrypt hash ({e}); create it with `htpasswd -B`",
                        n + 1
                    )))
                }
                Ok(parts) if parts.get_cost() > MAX_BCRYPT_COST => {
                    return Err(err(format!(
                        "line {}: user {user:?} has a hash of bcrypt cost {}, more than {MAX_BCRYPT_COST}; create it with `htpasswd -B -C 10`",
                        n + 1,
                        parts.get_cost()
                    )))
                }
                Ok(_) => {}
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Users {
            hashes,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `password` is `user`'s. bcrypt runs on the blocking pool:
    /// on a runtime worker, a few clients sending wrong passwords would
    /// stall every other request (health checks included).
    async fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else {
            return false;
        };
        let fp: [u8; 32] = Sha256::digest(format!("{hash}\0{password}")).into();
        let cached = |cache: &HashMap<String, [u8; 32]>| cache.get(user) == Some(&fp);
        if cached(&self.verified.lock().unwrap_or_else(|p| p.into_inner())) {
            return true;
        }
        let (hash, password) = (hash.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user.to_string(), fp);
        }
        ok
    }
}

enum Mode {
    Open,
    Basic(Users),
    Token {
        cfg: TokenConfig,
        key: Vec<u8>,
        users: Option<Users>,
    },
}

/// The configured auth mode.
pub struct Auth {
    mode: Mode,
}

/// A bcrypt hash of `password` for an htpasswd line (cost 10).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    bcrypt::hash(password, bcrypt::DEFAULT_COST)
        .map_err(|e| AuthError::Config(format!("cannot hash the password: {e}")))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Refuses a configured secret shorter than 16 characters (an empty
/// `metrics.token` would let in any `Authorization: Bearer ` header),
/// naming its config field.
pub fn require_long_secret(field: &str, secret: &str) -> Result<(), AuthError> {
    if secret.chars().count() < 16 {
        return Err(AuthError::Config(format!(
            "{field} must be at least 16 characters"
        )));
    }
    Ok(())
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// True when `headers` carry `Authorization: Bearer TOKEN` with exactly
/// `token` (compared in constant time).
pub fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    bearer_token(headers).is_some_and(|given| ct_eq(given.as_bytes(), token.as_bytes()))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Grant {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Grant>,
}

fn scope_string(needed: &[Access]) -> String {
    let mut by_repo: Vec<(String, Vec<Action>)> = Vec::new();
    for a in needed {
        match by_repo.iter_mut().find(|(r, _)| *r == a.repo) {
            Some((_, acts)) => acts.push(a.action),
            None => by_repo.push((a.repo.clone(), vec![a.action])),
        }
    }
    by_repo
        .into_iter()
        .map(|(repo, mut acts)| {
            if repo.is_empty() {
                return "registry:catalog:*".to_string();
            }
            // Clients that push also need pull.
            if acts.contains(&Action::Push) && !acts.contains(&Action::Pull) {
                acts.push(Action::Pull);
            }
            acts.sort();
            acts.dedup();
            let acts: Vec<&str> = acts.iter().map(|a| a.as_str()).collect();
            format!("repository:{repo}:{}", acts.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn repo_matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repo.starts_with(prefix),
        None => pattern == repo,
    }
}

impl Auth {
    /// Open registry: everything allowed.
    pub fn open() -> Auth {
        Auth { mode: Mode::Open }
    }

    /// Whether every client that passes [`Auth::check`] may pull every
    /// repository (open, or htpasswd alone). Only then may a blob mount
    /// without `from` search the whole registry: under token scopes it
    /// would read, and reveal, blobs of repositories the caller cannot pull.
    pub fn grants_every_pull(&self) -> bool {
        matches!(self.mode, Mode::Open | Mode::Basic(_))
    }

    /// Builds the auth mode from its config.
    pub fn from_config(cfg: &AuthConfig) -> Result<Auth, AuthError> {
        let users = cfg.htpasswd.as_deref().map(Users::load).transpose()?;
        let mode = match (&cfg.token, users) {
            (None, None) => Mode::Open,
            (None, Some(u)) => Mode::Basic(u),
            (Some(t), users) => {
                let key = match &t.secret {
                    Some(s) => {
                        require_long_secret("auth.token.secret", s)?;
                        s.as_bytes().to_vec()
                    }
                    None => crate::storage::random_hex(32).into_bytes(),
                };
                Mode::Token {
                    cfg: t.clone(),
                    key,
                    users,
                }
            }
        };
        Ok(Auth { mode })
    }

    /// True unless the registry is open.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    /// Checks that the request's credentials allow everything in `needed`
    /// (an empty list: just being authenticated). A token challenge also
    /// asks for `wanted`, access the request can use but does without (a
    /// blob mount's source). `realm_base` is `scheme://host` for the
    /// default token realm.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        needed: &[Access],
        wanted: &[Access],
        realm_base: &str,
    ) -> Result<(), Denial> {
        match &self.mode {
            Mode::Open => Ok(()),
            Mode::Basic(users) => match basic_credentials(headers) {
                Some((u, p)) if users.verify(&u, &p).await => Ok(()),
                Some((u, _)) => Err(Denial {
                    challenge: Some("Basic realm=\"berth-registry\"".into()),
                    denied: false,
                    message: format!("wrong user name or password for {u:?}"),
                }),
                None => Err(Denial {
                    challenge: Some("Basic realm=\"berth-registry\"".into()),
                    denied: false,
                    message: "authentication required: log in with a user from the registry's htpasswd file".into(),
                }),
            },
            Mode::Token { cfg, key, .. } => {
                let realm = cfg
                    .realm
                    .clone()
                    .unwrap_or_else(|| format!("{realm_base}/token"));
                let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{}\"", cfg.service);
                if !needed.is_empty() {
                    let asked: Vec<Access> = needed.iter().chain(wanted).cloned().collect();
                    challenge.push_str(&format!(",scope=\"{}\"", scope_string(&asked)));
                }
                let Some(token) = bearer_token(headers) else {
                    return Err(Denial {
                        challenge: Some(challenge),
                        denied: false,
                        message: "authentication required: get a token from the realm".into(),
                    });
                };
                let claims = match verify_jwt(key, token, &cfg.service) {
                    Ok(c) => c,
                    Err(m) => {
                        return Err(Denial {
                            challenge: Some(format!("{challenge},error=\"invalid_token\"")),
                            denied: false,
                            message: format!("bearer token rejected: {m}"),
                        })
                    }
                };
                for need in needed {
                    let (kind, name, action) = if need.repo.is_empty() {
                        ("registry", "catalog", "*")
                    } else {
                        ("repository", need.repo.as_str(), need.action.as_str())
                    };
                    let ok = claims.access.iter().any(|g| {
                        g.kind == kind && g.name == name && g.actions.iter().any(|a| a == action || a == "*")
                    });
                    if !ok {
                        return Err(Denial {
                            challenge: Some(format!("{challenge},error=\"insufficient_scope\"")),
                            denied: true,
                            message: format!(
                                "token of {:?} does not grant {action} on {name}",
                                claims.sub
                            ),
                        });
                    }
                }
                Ok(())
            }
        }
    }

    /// Serves the token endpoint: `params` is the query of `GET
    /// /token?service=…&scope=…` or the form body of the OAuth2 `POST
    /// /token` (`grant_type=password&username=…&password=…&scope=…`).
    /// Returns the JSON body, or the denial.
    pub async fn issue_token(
        &self,
        headers: &HeaderMap,
        params: &str,
    ) -> Result<serde_json::Value, Denial> {
        let Mode::Token { cfg, key, users } = &self.mode else {
            return Err(Denial {
                challenge: None,
                denied: false,
                message: "this registry does not use token authentication".into(),
            });
        };
        // GET carries Basic credentials; the OAuth2 POST form (containerd)
        // carries grant_type=password with username and password.
        let form_credentials = || {
            let field = |name: &str| {
                form_urlencoded::parse(params.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            Some((field("username")?, field("password")?))
        };
        let account = match basic_credentials(headers).or_else(form_credentials) {
            Some((u, p)) => {
                let valid = match users {
                    Some(us) => us.verify(&u, &p).await,
                    None => false,
                };
                if valid {
                    Some(u)
                } else {
                    return Err(Denial {
                        challenge: Some("Basic realm=\"berth-registry-token\"".into()),
                        denied: false,
                        message: format!("wrong user name or password for {u:?}"),
                    });
                }
            }
            None => None,
        };
        let mut access: Vec<Grant> = Vec::new();
        for (k, v) in form_urlencoded::parse(params.as_bytes()) {
            if k != "scope" {
                continue;
            }
            for scope in v.split(' ') {
                let mut parts = scope.splitn(3, ':');
                let (Some(kind), Some(rest)) = (parts.next(), parts.next()) else {
                    continue;
                };
                // Names may contain ':' only before a port in a host, which
                // repository names never have; actions are the last field.
                let (name, acts) = match parts.next() {
                    Some(acts) => (rest, acts),
                    None => continue,
                };
                let granted: Vec<String> = acts
                    .split(',')
                    .filter_map(Action::parse)
                    .filter(|a| {
                        cfg.rules.iter().any(|r| {
                            let who = match r.account.as_str() {
                                "anonymous" => account.is_none(),
                                "*" => account.is_some(),
                                u => account.as_deref() == Some(u),
                            };
                            let what = match (kind, a) {
                                ("registry", Action::Catalog) => {
                                    name == "catalog" && r.actions.contains(&Action::Catalog)
                                }
                                ("repository", Action::Catalog) => false,
                                ("repository", a) => {
                                    repo_matches(&r.repos, name) && r.actions.contains(a)
                                }
                                _ => false,
                            };
                            who && what
                        })
                    })
                    .map(|a| a.as_str().to_string())
                    .collect();
                if !granted.is_empty() {
                    access.push(Grant {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        actions: granted,
                    });
                }
            }
        }
        let iat = now();
        let claims = Claims {
            iss: "berth-registry".into(),
            sub: account.unwrap_or_default(),
            aud: cfg.service.clone(),
            exp: iat + cfg.expiry_secs,
            nbf: iat.saturating_sub(5),
            iat,
            jti: crate::storage::random_hex(12),
            access,
        };
        let token = sign_jwt(key, &claims);
        Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": cfg.expiry_secs,
            "issued_at": rfc3339(iat),
        }))
    }
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp (days-to-civil
/// conversion from Howard Hinnant's calendar algorithms).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn sign_jwt(key: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, signing.as_bytes()));
    format!("{signing}.{sig}")
}

fn verify_jwt(key: &[u8], token: &str, service: &str) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (expected header.payload.signature)".into());
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed JWT header")?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err("JWT algorithm must be HS256".into());
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "malformed JWT signature")?;
    if !ct_eq(&sig, &hmac_sha256(key, format!("{h}.{p}").as_bytes())) {
        return Err("bad signature (token from another issuer or a restarted registry)".into());
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed JWT claims")?;
    let t = now();
    if claims.exp <= t {
        return Err("token expired; fetch a new one".into());
    }
    if claims.nbf > t + 5 {
        return Err("token not valid yet".into());
    }
    if claims.aud != service {
        return Err(format!(
            "token is for service {:?}, not {service:?}",
            claims.aud
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_814_973), "2026-11-27T21:29:33Z");
    }

    #[test]
    fn jwt_roundtrip_and_tamper() {
        let claims = Claims {
            iss: "i".into(),
            sub: "alice".into(),
            aud: "svc".into(),
            exp: now() + 60,
            nbf: now(),
            iat: now(),
            jti: "x".into(),
            access: vec![],
        };
        let t = sign_jwt(b"0123456789abcdef", &claims);
        assert_eq!(
            verify_jwt(b"0123456789abcdef", &t, "svc").unwrap().sub,
            "alice"
        );
        assert!(verify_jwt(b"0123456789abcdeX", &t, "svc").is_err());
        assert!(verify_jwt(b"0123456789abcdef", &t, "other").is_err());
    }

    #[test]
    fn scope_strings_add_pull_to_push() {
        let s = scope_string(&[
            Access {
                repo: "a/b".into(),
                action: Action::Push,
            },
            Access {
                repo: String::new(),
                action: Action::Catalog,
            },
        ]);
        assert_eq!(s, "repository:a/b:pull,push registry:catalog:*");
    }
}
