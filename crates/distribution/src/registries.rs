//! containers' `registries.conf` (v2 TOML), the parts berth applies:
//! `[[registry]]` entries with `insecure = true` (plain HTTP or an
//! unverified certificate allowed) and `blocked = true` (refused). Read
//! from `$CONTAINERS_REGISTRIES_CONF`, else
//! `~/.config/containers/registries.conf` and
//! `/etc/containers/registries.conf` (the first that exists).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One `[[registry]]` entry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    /// `host[:port]` (a path after it is allowed and ignored here).
    #[serde(default)]
    pub location: String,
    /// `prefix` (defaults to `location`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Plain HTTP / unverified TLS allowed.
    #[serde(default)]
    pub insecure: bool,
    /// Pulls and pushes refused.
    #[serde(default)]
    pub blocked: bool,
}

/// The settings read from registries.conf.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConf {
    /// `[[registry]]` entries.
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
}

impl RegistriesConf {
    /// Parses a registries.conf; `path` names it in errors. Fields berth
    /// does not apply (mirrors, short-name settings) are accepted and ignored.
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf> {
        toml::from_str(text).map_err(|e| {
            Error::invalid(
                path.display().to_string(),
                format!("invalid registries.conf: {e}"),
            )
        })
    }

    /// Reads the first registries.conf that exists (none: empty settings).
    pub fn load() -> Result<RegistriesConf> {
        for path in conf_paths() {
            match std::fs::read_to_string(&path) {
                Ok(text) => return RegistriesConf::parse(&text, &path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(RegistriesConf::default())
    }

    fn entry(&self, host: &str) -> Option<&RegistryEntry> {
        self.registry.iter().find(|r| {
            let key = r.prefix.as_deref().unwrap_or(&r.location);
            key.split('/').next() == Some(host)
        })
    }

    /// Whether `host` is marked insecure.
    pub fn insecure(&self, host: &str) -> bool {
        self.entry(host).is_some_and(|r| r.insecure)
    }

    /// Refuses a blocked `host`.
    pub fn check_blocked(&self, host: &str) -> Result<()> {
        match self.entry(host) {
            Some(r) if r.blocked => Err(Error::invalid(
                format!("registry {host}"),
                "blocked in registries.conf (blocked = true)",
            )),
            _ => Ok(()),
        }
    }
}

fn conf_paths() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config_home {
        out.push(c.join("containers/registries.conf"));
    }
    out.push(PathBuf::from("/etc/containers/registries.conf"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_and_blocked_entries() {
        let conf = RegistriesConf::parse(
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "reg.local:5000"
insecure = true
[[registry]]
prefix = "evil.example/ns"
location = "evil.example"
blocked = true
[[registry.mirror]]
location = "mirror.example"
"#,
            Path::new("test.conf"),
        )
        .unwrap();
        assert!(conf.insecure("reg.local:5000") && !conf.insecure("reg.local"));
        assert!(conf.check_blocked("reg.local:5000").is_ok());
        let err = conf.check_blocked("evil.example").unwrap_err().to_string();
        assert!(
            err.contains("evil.example") && err.contains("blocked"),
            "{err}"
        );
        let err = RegistriesConf::parse("[[registry]]\ninsecure = 3", Path::new("x.conf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.conf"), "{err}");
    }
}
