//! The registry's configuration: command-line basics plus an optional YAML
//! or TOML file for everything else.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;

/// Error reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML/TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the field).
        message: String,
    },
}

/// Full registry configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address (`HOST:PORT`).
    #[serde(default = "default_addr")]
    pub addr: String,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Refuse every write and delete (405 UNSUPPORTED).
    #[serde(default)]
    pub read_only: bool,
    /// Serve HTTPS with these PEM files.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Online garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// Limits against huge or slow clients.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

fn default_addr() -> String {
    "127.0.0.1:5000".into()
}

/// The longest duration a `*_secs` setting takes: ten years. Larger values
/// would overflow the deadlines computed from them (checked by
/// [`Config::load`]).
pub const MAX_SECONDS: u64 = 10 * 365 * 86_400;

/// The shortest token lifetime (`auth.token.expiry_secs`): clients keep
/// a token for at least this long.
pub const MIN_TOKEN_SECONDS: u64 = 60;

/// Where content lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Filesystem root directory (unused with `s3`).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Store everything in an S3-compatible bucket instead.
    #[serde(default)]
    pub s3: Option<crate::storage::S3Config>,
}

fn default_root() -> PathBuf {
    PathBuf::from("/var/lib/berth/registry")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            root: default_root(),
            s3: None,
        }
    }
}

/// TLS certificate and key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
}

/// Online GC settings (zot's model: runs while serving).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Run GC periodically.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between runs.
    #[serde(default = "hour")]
    pub interval_secs: u64,
    /// Unreferenced blobs younger than this (seconds since last reference or
    /// upload) are kept, so pushes in progress never lose a blob.
    #[serde(default = "day")]
    pub grace_secs: u64,
    /// Upload sessions idle for longer than this are removed.
    #[serde(default = "day")]
    pub upload_grace_secs: u64,
    /// Also delete manifests that no tag, index or subject reaches (after the grace period).
    #[serde(default)]
    pub delete_untagged: bool,
}

fn yes() -> bool {
    true
}
fn hour() -> u64 {
    3600
}
fn day() -> u64 {
    86400
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval_secs: hour(),
            grace_secs: day(),
            upload_grace_secs: day(),
            delete_untagged: false,
        }
    }
}

/// Request limits. Every one applies by default (`crates/registry/README.md`,
/// "Request limits", explains each default):
///
/// - `max_blob_size`: largest blob, 16 GiB;
/// - manifests: at most 4 MiB (fixed: clients refuse larger ones too), 413
///   SIZE_INVALID otherwise, checked on `Content-Length` first;
/// - `max_uploads_per_repo`: upload sessions open at once per repository, 1000;
/// - `upload_idle_timeout_secs`: an upload session no request used for an
///   hour is removed;
/// - `header_timeout_secs`, `body_idle_timeout_secs`, `request_timeout_secs`:
///   slow clients; `max_in_flight`: requests served at once (unlimited).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest blob accepted, in bytes (default 16 GiB; `null` for no
    /// limit). A monolithic POST, PATCH or PUT whose `Content-Length`
    /// (plus what its session holds) is larger gets 413 SIZE_INVALID at
    /// once, before `100 Continue` and without its body being read; a body
    /// without a length is cut off with 413 when it grows past the limit,
    /// and its session is dropped.
    #[serde(default = "default_max_blob_size")]
    pub max_blob_size: Option<u64>,
    /// Upload sessions one repository may have open at once (default
    /// 1000); a POST beyond gets 429 TOOMANYREQUESTS. Finished, cancelled
    /// and expired sessions free their slot.
    #[serde(default = "default_max_uploads_per_repo")]
    pub max_uploads_per_repo: u64,
    /// Seconds an upload session may go without a request before it is
    /// abandoned (default 3600): a sweep in the serving process removes its
    /// data, and later requests to it get 404 BLOB_UPLOAD_UNKNOWN. A
    /// session a request is streaming into is never idle.
    #[serde(default = "hour")]
    pub upload_idle_timeout_secs: u64,
    /// Seconds a client may take to send its request headers.
    #[serde(default = "thirty")]
    pub header_timeout_secs: u64,
    /// Seconds a request body may stall before the request is aborted.
    #[serde(default = "sixty")]
    pub body_idle_timeout_secs: u64,
    /// Seconds a manifest PUT's body, or a `POST /token` form, may take to arrive.
    #[serde(default = "sixty")]
    pub request_timeout_secs: u64,
    /// Requests served at once; more get 429 TOOMANYREQUESTS (no limit by default).
    #[serde(default)]
    pub max_in_flight: Option<u64>,
}

fn default_max_blob_size() -> Option<u64> {
    Some(16 << 30)
}
fn default_max_uploads_per_repo() -> u64 {
    1000
}
fn thirty() -> u64 {
    30
}
fn sixty() -> u64 {
    60
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_size: default_max_blob_size(),
            max_uploads_per_repo: default_max_uploads_per_repo(),
            upload_idle_timeout_secs: hour(),
            header_timeout_secs: thirty(),
            body_idle_timeout_secs: sixty(),
            request_timeout_secs: sixty(),
            max_in_flight: None,
        }
    }
}

/// `/metrics` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` answers only requests carrying
    /// `Authorization: Bearer TOKEN` (Prometheus: `authorization:
    /// {credentials: TOKEN}`); unset, it is open to anyone who can reach
    /// the port.
    #[serde(default)]
    pub token: Option<String>,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Write one JSON line per request (time, method, path, status, bytes, micros) to stdout.
    #[serde(default = "yes")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { access: true }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: default_addr(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            read_only: false,
            tls: None,
            gc: GcConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Config {
    /// Reads a YAML file, or TOML when the name ends in `.toml`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_yaml::from_str(&text).map_err(|e| e.to_string())
        };
        let config: Config = parsed.map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        config
            .check_ranges()
            .map_err(|message| ConfigError::Parse {
                path: path.display().to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Refuses, naming it, a `*_secs` setting above [`MAX_SECONDS`], a
    /// zero limit, or a token lifetime under [`MIN_TOKEN_SECONDS`].
    fn check_ranges(&self) -> Result<(), String> {
        let mut settings = vec![
            ("gc.interval_secs", self.gc.interval_secs),
            ("gc.grace_secs", self.gc.grace_secs),
            ("gc.upload_grace_secs", self.gc.upload_grace_secs),
            (
                "limits.upload_idle_timeout_secs",
                self.limits.upload_idle_timeout_secs,
            ),
            (
                "limits.header_timeout_secs",
                self.limits.header_timeout_secs,
            ),
            (
                "limits.body_idle_timeout_secs",
                self.limits.body_idle_timeout_secs,
            ),
            (
                "limits.request_timeout_secs",
                self.limits.request_timeout_secs,
            ),
        ];
        if let Some(token) = &self.auth.token {
            settings.push(("auth.token.expiry_secs", token.expiry_secs));
        }
        if let Some(s3) = &self.storage.s3 {
            settings.push(("storage.s3.timeout_secs", s3.timeout_secs));
        }
        if let Some((name, secs)) = settings.into_iter().find(|(_, secs)| *secs > MAX_SECONDS) {
            return Err(format!(
                "{name} is {secs} seconds, more than ten years ({MAX_SECONDS}): give a smaller number"
            ));
        }
        // A zero limit is a common way to write "no limit"; here it would
        // refuse every request, upload or non-empty blob.
        let zero = [
            (
                "limits.max_in_flight",
                self.limits.max_in_flight,
                "every request",
                "give a positive number, or null for no limit",
            ),
            (
                "limits.max_uploads_per_repo",
                Some(self.limits.max_uploads_per_repo),
                "every upload",
                "give a positive number",
            ),
            (
                "limits.max_blob_size",
                self.limits.max_blob_size,
                "every blob but the empty one",
                "give a positive number, or null for no limit",
            ),
        ]
        .into_iter()
        .find(|(_, v, _, _)| *v == Some(0));
        if let Some((name, _, refused, fix)) = zero {
            return Err(format!("{name} is 0, which would refuse {refused}: {fix}"));
        }
        // Clients (Docker, containers/image) use a token for at least a
        // minute whatever `expires_in` says: a shorter-lived one is refused
        // part way through their pulls and pushes.
        match &self.auth.token {
            Some(t) if t.expiry_secs < MIN_TOKEN_SECONDS => Err(format!(
                "auth.token.expiry_secs is {} seconds, less than {MIN_TOKEN_SECONDS}: clients keep using a token for at least a minute, so give {MIN_TOKEN_SECONDS} or more",
                t.expiry_secs
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_toml_configs_parse_and_unknown_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("c.yml");
        std::fs::write(
            &y,
            "addr: 0.0.0.0:6000\nread_only: true\ngc:\n  grace_secs: 5\n",
        )
        .unwrap();
        let c = Config::load(&y).unwrap();
        assert_eq!(c.addr, "0.0.0.0:6000");
        assert!(c.read_only && c.gc.grace_secs == 5 && c.gc.enabled);
        let t = dir.path().join("c.toml");
        std::fs::write(
            &t,
            "[storage]\nroot = \"/x\"\n[limits]\nmax_blob_size = 10\n",
        )
        .unwrap();
        let c = Config::load(&t).unwrap();
        assert_eq!(c.storage.root, PathBuf::from("/x"));
        assert_eq!(c.limits.max_blob_size, Some(10));
        // Limits apply without a config; `null` lifts the blob size limit.
        let d = Config::default().limits;
        assert_eq!(d.max_blob_size, Some(16 << 30));
        assert_eq!(
            (d.max_uploads_per_repo, d.upload_idle_timeout_secs),
            (1000, 3600)
        );
        std::fs::write(
            &y,
            "limits:\n  max_blob_size: null\n  max_uploads_per_repo: 5\n  upload_idle_timeout_secs: 2\n",
        )
        .unwrap();
        let c = Config::load(&y).unwrap();
        assert_eq!(c.limits.max_blob_size, None);
        assert_eq!(
            (
                c.limits.max_uploads_per_repo,
                c.limits.upload_idle_timeout_secs
            ),
            (5, 2)
        );
        std::fs::write(&y, "bogus: 1\n").unwrap();
        let e = Config::load(&y).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("c.yml"), "{e}");
    }

    #[test]
    fn a_duration_beyond_ten_years_is_refused_with_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("c.yml");
        for section in [
            "gc:\n  interval_secs",
            "gc:\n  grace_secs",
            "gc:\n  upload_grace_secs",
            "limits:\n  upload_idle_timeout_secs",
            "limits:\n  header_timeout_secs",
            "limits:\n  body_idle_timeout_secs",
            "limits:\n  request_timeout_secs",
            "auth:\n  token:\n    expiry_secs",
            "storage:\n  s3:\n    endpoint: http://127.0.0.1:1\n    bucket: b\n    access_key_id: a\n    secret_access_key: s\n    timeout_secs",
        ] {
            std::fs::write(&y, format!("{section}: 18446744073709551615\n")).unwrap();
            let err = Config::load(&y).unwrap_err().to_string();
            let field = section.rsplit(' ').next().unwrap();
            assert!(
                err.contains("more than ten years") && err.contains(&format!(".{field} is ")),
                "{section}: {err}"
            );
            std::fs::write(&y, format!("{section}: {MAX_SECONDS}\n")).unwrap();
            Config::load(&y).unwrap_or_else(|e| panic!("{section}: {e}"));
        }
    }

    #[test]
    fn a_zero_limit_is_refused_with_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("c.yml");
        for field in ["max_in_flight", "max_uploads_per_repo", "max_blob_size"] {
            std::fs::write(&y, format!("limits:\n  {field}: 0\n")).unwrap();
            let err = Config::load(&y).unwrap_err().to_string();
            assert!(
                err.contains(&format!("limits.{field} is 0, which would refuse"))
                    && err.contains("give a positive number"),
                "{err}"
            );
            std::fs::write(&y, format!("limits:\n  {field}: 1\n")).unwrap();
            Config::load(&y).unwrap();
        }
    }

    #[test]
    fn a_token_lifetime_under_a_minute_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("c.yml");
        for secs in [0, 1, 59] {
            std::fs::write(&y, format!("auth:\n  token:\n    expiry_secs: {secs}\n")).unwrap();
            let err = Config::load(&y).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "auth.token.expiry_secs is {secs} seconds, less than 60"
                )),
                "{err}"
            );
        }
        std::fs::write(&y, "auth:\n  token:\n    expiry_secs: 60\n").unwrap();
        Config::load(&y).unwrap();
    }
}
