//! Credentials and challenges: `WWW-Authenticate` parsing, and the auth
//! files podman and docker users already have — containers' `auth.json`
//! (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`) and docker's `~/.docker/config.json`,
//! with `credHelpers`/`credsStore` credential helpers. `berth login` writes
//! the first of those files, as `podman login` does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` (the `--creds` form).
    pub fn parse(text: &str) -> Result<Credentials> {
        match text.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(Error::invalid(
                "--creds",
                "expected USER:PASSWORD with a non-empty user",
            )),
        }
    }

    /// The `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        format!("Basic {}", encode(&self.username, &self.password))
    }
}

fn encode(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: get a token from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` to ask the token for, if given.
        service: Option<String>,
        /// The scope the registry suggests, if given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (one challenge: `Scheme k="v", k=v`).
/// Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k="v", k2=v2` (quoted strings may hold commas and `\"`), keys lowercased.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

/// The auth files read, in order; the first is where `berth login` writes.
pub fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => out.push(PathBuf::from(dir).join("containers/auth.json")),
        None => out.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::getuid().as_raw()
        ))),
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(c) = config_home {
        out.push(c.join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => out.push(PathBuf::from(d).join("config.json")),
        None => out.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    out
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>> {
    match std::fs::read(path) {
        Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(Some(Map::new())),
        Ok(data) => match serde_json::from_slice::<Value>(&data) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(Error::invalid(
                path.display().to_string(),
                "not a JSON object; fix or remove the file",
            )),
            Err(e) => Err(Error::invalid(
                path.display().to_string(),
                format!("invalid JSON: {e}; fix or remove the file"),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The keys a registry may be stored under: `host`, `https://host`,
/// `http://host`, and docker's historical names for docker.io.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
        keys.push("registry-1.docker.io".into());
    }
    keys
}

/// Finds credentials for `registry` (`host[:port]`) in the auth files, in
/// order, asking a credential helper where a file names one.
pub fn lookup(registry: &str, explicit: Option<&Path>) -> Result<Option<Credentials>> {
    for path in auth_files(explicit) {
        let Some(doc) = read_json(&path)? else {
            continue;
        };
        let keys = keys_for(registry);
        if let Some(Value::Object(helpers)) = doc.get("credHelpers") {
            if let Some(helper) = keys
                .iter()
                .find_map(|k| helpers.get(k))
                .and_then(Value::as_str)
            {
                return helper_get(helper, registry);
            }
        }
        if let Some(Value::Object(auths)) = doc.get("auths") {
            if let Some(entry) = keys.iter().find_map(|k| auths.get(k)) {
                if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                    return decode_auth(auth, &path).map(Some);
                }
            }
        }
        if let Some(store) = doc.get("credsStore").and_then(Value::as_str) {
            if let Some(c) = helper_get(store, registry)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn decode_auth(auth: &str, path: &Path) -> Result<Credentials> {
    let bad = |reason: &str| Error::invalid(path.display().to_string(), reason.to_string());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad("an \"auth\" entry is not base64; run berth login again"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("an \"auth\" entry is not UTF-8"))?;
    match text.split_once(':') {
        Some((u, p)) => Ok(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }),
        None => Err(bad("an \"auth\" entry is not base64 of USER:PASSWORD")),
    }
}

/// Runs `docker-credential-HELPER get` with the registry on stdin.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::invalid(
            format!("credential helper {helper:?}"),
            "a helper name is letters, digits, - _ .",
        ));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(&program, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(registry.as_bytes()) {
            // A helper may answer without reading (e.g. "not found"): its
            // exit status and output decide.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.map_err(|e| Error::io(&program, e))?,
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(&program, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // docker's helpers say "credentials not found in native keychain".
        if stdout.contains("not found") {
            return Ok(None);
        }
        return Err(Error::invalid(
            format!("{program} get {registry}"),
            format!(
                "failed: {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::invalid(format!("{program} get"), format!("invalid JSON: {e}")))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Some(Credentials {
        username: field("Username"),
        password: field("Secret"),
    }))
}

/// Writes credentials for `registry` into the first auth file (0600,
/// atomically), keeping everything else in it.
pub fn store(registry: &str, creds: &Credentials, explicit: Option<&Path>) -> Result<PathBuf> {
    let path = auth_files(explicit).remove(0);
    let mut doc = read_json(&path)?.unwrap_or_default();
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(Error::invalid(
            path.display().to_string(),
            "\"auths\" is not an object; fix or remove the file",
        ));
    };
    auths.insert(
        registry.to_string(),
        serde_json::json!({ "auth": encode(&creds.username, &creds.password) }),
    );
    write_json(&path, &doc)?;
    Ok(path)
}

/// Removes the credentials for `registry` from the first auth file;
/// returns whether there were any.
pub fn remove(registry: &str, explicit: Option<&Path>) -> Result<bool> {
    let path = auth_files(explicit).remove(0);
    let Some(mut doc) = read_json(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(Value::Object(auths)) = doc.get_mut("auths") {
        for k in keys_for(registry) {
            removed |= auths.remove(&k).is_some();
        }
    }
    if removed {
        write_json(&path, &doc)?;
    }
    Ok(removed)
}

fn write_json(path: &Path, doc: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    let mut data = serde_json::to_vec_pretty(doc).expect("a JSON map always serialises");
    data.push(b'\n');
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg, x",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg, x".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm required");
    }

    #[test]
    fn login_store_lookup_remove() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"auths":{"other:1":{"auth":"dTpw"}},"x":1}"#).unwrap();
        let creds = Credentials::parse("alice:s3:cret").unwrap();
        store("127.0.0.1:5000", &creds, Some(&file)).unwrap();
        assert_eq!(lookup("127.0.0.1:5000", Some(&file)).unwrap(), Some(creds));
        assert_eq!(
            lookup("other:1", Some(&file)).unwrap().unwrap().password,
            "p"
        );
        assert!(remove("127.0.0.1:5000", Some(&file)).unwrap());
        assert_eq!(lookup("127.0.0.1:5000", Some(&file)).unwrap(), None);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\"x\": 1"), "other fields kept: {text}");
        std::fs::write(&file, "{oops").unwrap();
        let err = lookup("h", Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("auth.json") && err.contains("invalid JSON"),
            "{err}"
        );
    }
}
