//! containers' `registries.conf` (v2 TOML), the parts berth applies:
//! `[[registry]]` entries with `insecure = true` (plain HTTP or an
//! unverified certificate allowed), `blocked = true` (refused), a
//! `location` other than the `prefix` (the prefix's images are pulled from
//! there) and `[[registry.mirror]]` locations (tried in order before the
//! registry itself, for pulls); `unqualified-search-registries` with
//! `short-name-mode`, and `[aliases]`, for short names such as `busybox`.
//! A `prefix` may be a wildcard, `*.example.com`: it matches any host under
//! example.com (`a.example.com`, `a.b.example.com:5000`), with an empty
//! `location` (names are used as they are; only the other settings apply)
//! or a location the host is replaced by. Of the entries that match a name
//! the one with the longest prefix wins, a plain prefix before a wildcard
//! of the same length.
//! Read from `--registries-conf`, else `$CONTAINERS_REGISTRIES_CONF` (that
//! file alone), else the first of `~/.config/containers/registries.conf`
//! and `/etc/containers/registries.conf` that exists, with the `*.conf`
//! drop-ins of `/etc/containers/registries.conf.d` and
//! `~/.config/containers/registries.conf.d` merged over it (podman's
//! `shortnames.conf` aliases among them). Without any file (or without
//! search registries) a short name is docker.io's, as docker normalises it.
use std::path::{Path, PathBuf};

use berth_image::Reference;

use crate::error::{Error, Result};

/// One `[[registry]]` entry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    /// `host[:port]` (a path after it is allowed and ignored here).
    #[serde(default)]
    pub location: String,
    /// `prefix` (defaults to `location`): `host[:port][/path]`, or a
    /// wildcard `*.host` matching every host under `host`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Plain HTTP / unverified TLS allowed.
    #[serde(default)]
    pub insecure: bool,
    /// Pulls and pushes refused.
    #[serde(default)]
    pub blocked: bool,
    /// Mirrors, tried in order before `location` when pulling.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    /// `host[:port][/path]`: the prefix's images are under this path.
    pub location: String,
    /// Plain HTTP / unverified TLS allowed for this mirror.
    #[serde(default)]
    pub insecure: bool,
    /// `all` (default), `digest-only` or `tag-only`: which pulls may use it.
    #[serde(default)]
    pub pull_from_mirror: Option<String>,
}

/// Somewhere to pull a reference from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `host[:port]`.
    pub host: String,
    /// The repository there.
    pub repo: String,
    /// A mirror (else the registry the name points to, or its `location`).
    pub mirror: bool,
}

/// The settings read from registries.conf.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConf {
    /// `[[registry]]` entries.
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
    /// Registries a short name is looked for in, in order.
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    /// `enforcing` (default: a short name matching several search
    /// registries is refused, as podman does without a terminal),
    /// `permissive` or `disabled` (each is tried in order).
    #[serde(default)]
    pub short_name_mode: Option<String>,
    /// Short name → fully qualified repository.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// The file these came from (for messages).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl RegistriesConf {
    /// Parses a registries.conf; `path` names it in errors. Fields berth
    /// does not apply (mirrors, short-name settings) are accepted and ignored.
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf> {
        let bad = |reason: String| Error::invalid(path.display().to_string(), reason);
        let mut conf: RegistriesConf =
            toml::from_str(text).map_err(|e| bad(format!("invalid registries.conf: {e}")))?;
        conf.path = Some(path.to_path_buf());
        if let Some(mode) = &conf.short_name_mode {
            if !matches!(mode.as_str(), "enforcing" | "permissive" | "disabled") {
                return Err(bad(format!(
                    "short-name-mode {mode:?}: use enforcing, permissive or disabled"
                )));
            }
        }
        for (i, r) in conf.registry.iter().enumerate() {
            check_prefix(r).map_err(|e| bad(format!("[[registry]] entry {}: {e}", i + 1)))?;
            for m in &r.mirror {
                check_location(&m.location).map_err(|e| bad(format!("mirror {e}")))?;
                if let Some(p) = &m.pull_from_mirror {
                    if !matches!(p.as_str(), "all" | "digest-only" | "tag-only") {
                        return Err(bad(format!(
                            "pull-from-mirror {p:?} of mirror {}: use all, digest-only or tag-only",
                            m.location
                        )));
                    }
                }
            }
            if !r.location.is_empty() {
                check_location(&r.location).map_err(|e| bad(format!("registry {e}")))?;
            }
        }
        for (short, full) in &conf.aliases {
            if is_short_name(full) || Reference::parse(full).is_err() {
                return Err(bad(format!(
                    "alias {short:?} = {full:?}: the value must be a fully qualified name such as quay.io/org/app"
                )));
            }
        }
        for r in &conf.unqualified_search_registries {
            check_location(r).map_err(|e| bad(format!("unqualified-search-registries: {e}")))?;
        }
        Ok(conf)
    }

    /// Reads `path`, else the first registries.conf that exists (none:
    /// empty settings).
    pub fn load(path: Option<&Path>) -> Result<RegistriesConf> {
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            return RegistriesConf::parse(&text, p);
        }
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            return RegistriesConf::load(Some(Path::new(&p)));
        }
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        let mut files = Vec::new();
        let mut dropins = vec![PathBuf::from("/etc/containers/registries.conf.d")];
        if let Some(c) = config_home {
            files.push(c.join("containers/registries.conf"));
            dropins.push(c.join("containers/registries.conf.d"));
        }
        files.push(PathBuf::from("/etc/containers/registries.conf"));
        RegistriesConf::load_from(&files, &dropins)
    }

    /// The first of `files` that exists, then every `*.conf` of `dropins`
    /// (each directory in name order) merged over it, as podman reads
    /// `registries.conf.d`.
    fn load_from(files: &[PathBuf], dropins: &[PathBuf]) -> Result<RegistriesConf> {
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => RegistriesConf::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        };
        let mut conf = RegistriesConf::default();
        for path in files {
            if let Some(c) = read(path)? {
                conf = c;
                break;
            }
        }
        for dir in dropins {
            let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(dir, e)),
            };
            paths.sort();
            for path in paths {
                if let Some(c) = read(&path)? {
                    conf.merge(c);
                }
            }
        }
        Ok(conf)
    }

    /// Applies a drop-in: its `[[registry]]` entries replace those of the
    /// same prefix, its search registries and mode (when set) replace
    /// these, its aliases are added.
    fn merge(&mut self, other: RegistriesConf) {
        for entry in other.registry {
            match self
                .registry
                .iter_mut()
                .find(|r| key_of(r) == key_of(&entry))
            {
                Some(existing) => *existing = entry,
                None => self.registry.push(entry),
            }
        }
        if !other.unqualified_search_registries.is_empty() {
            self.unqualified_search_registries = other.unqualified_search_registries;
        }
        if other.short_name_mode.is_some() {
            self.short_name_mode = other.short_name_mode;
        }
        self.aliases.extend(other.aliases);
        if self.path.is_none() {
            self.path = other.path;
        }
    }

    /// The entry for the registry `host` (`host[:port]`): the first whose
    /// prefix is that host, else the longest wildcard matching it, else the
    /// first with a prefix on that host and a path.
    fn entry(&self, host: &str) -> Option<&RegistryEntry> {
        self.registry
            .iter()
            .rev()
            .filter_map(|r| {
                let key = key_of(r);
                let score = match key.strip_prefix('*') {
                    Some(domain) => wildcard_match(domain, host).map(|_| (1, key.len())),
                    None if key == host => Some((2, 0)),
                    None if key.split('/').next() == Some(host) => Some((0, 0)),
                    None => None,
                };
                score.map(|s| (r, s))
            })
            .max_by_key(|(_, score)| *score)
            .map(|(r, _)| r)
    }

    /// Whether `host` is marked insecure (as a registry or as a mirror).
    pub fn insecure(&self, host: &str) -> bool {
        self.entry(host).is_some_and(|r| r.insecure)
            || self.registry.iter().any(|r| {
                r.mirror
                    .iter()
                    .any(|m| m.insecure && m.location.split('/').next() == Some(host))
            })
    }

    /// The entry whose prefix matches `name` (`host/path`): a plain prefix
    /// `name` starts with at a `/` boundary, or a wildcard matching its host;
    /// the longest prefix wins, a plain one before a wildcard. Also returns
    /// how much of `name` the prefix matched (what a `location` replaces).
    fn entry_for(&self, name: &str) -> Option<(&RegistryEntry, usize)> {
        self.registry
            .iter()
            .filter_map(|r| {
                let key = key_of(r);
                let matched = match key.strip_prefix('*') {
                    Some(domain) => wildcard_match(domain, name),
                    None => (!key.is_empty()
                        && name.starts_with(key)
                        && (name.len() == key.len() || name.as_bytes()[key.len()] == b'/'))
                        .then_some(key.len()),
                };
                matched.map(|len| (r, len))
            })
            .max_by_key(|(r, _)| rank(key_of(r)))
    }

    /// Where to pull `reference` from, in order: its registry entry's
    /// mirrors (those its `pull-from-mirror` allows), then the registry
    /// (its `location` when that differs from the prefix).
    pub fn pull_sources(&self, reference: &Reference) -> Vec<Source> {
        let name = format!("{}/{}", reference.domain(), reference.path());
        let primary = Source {
            host: reference.domain().to_string(),
            repo: reference.path().to_string(),
            mirror: false,
        };
        let Some((entry, len)) = self.entry_for(&name) else {
            return vec![primary];
        };
        let rest = &name[len..];
        let at = |location: &str, mirror: bool| {
            let full = format!("{}{rest}", location.trim_end_matches('/'));
            let (host, repo) = full.split_once('/').unwrap_or((&full, ""));
            Source {
                host: host.to_string(),
                repo: repo.to_string(),
                mirror,
            }
        };
        let mut out: Vec<Source> = entry
            .mirror
            .iter()
            .filter(|m| match m.pull_from_mirror.as_deref() {
                Some("digest-only") => reference.digest().is_some(),
                Some("tag-only") => reference.digest().is_none(),
                _ => true,
            })
            .map(|m| at(&m.location, true))
            .filter(|s| !s.repo.is_empty())
            .collect();
        let location = if entry.location.is_empty() {
            primary
        } else {
            at(&entry.location, false)
        };
        out.push(location);
        out
    }

    /// The fully qualified names `input` may mean: itself when it names a
    /// registry; for a short name its alias, else its search registries
    /// (several only when `short-name-mode` is not enforcing), else
    /// docker.io's.
    pub fn resolve(&self, input: &str) -> Result<Vec<Reference>> {
        if !is_short_name(input) {
            return Ok(vec![Reference::parse(input)?]);
        }
        let (name, suffix) = split_suffix(input);
        if let Some(full) = self.aliases.get(name) {
            return Ok(vec![Reference::parse(&format!("{full}{suffix}"))?]);
        }
        let candidates: Vec<Reference> = self
            .unqualified_search_registries
            .iter()
            .map(|r| Reference::parse(&format!("{r}/{input}")))
            .collect::<std::result::Result<_, _>>()?;
        match candidates.len() {
            0 => Ok(vec![Reference::parse(input)?]),
            1 => Ok(candidates),
            _ if self.short_name_mode.as_deref().unwrap_or("enforcing") == "enforcing" => {
                let names: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
                let file = self
                    .path
                    .as_ref()
                    .map(|p| format!(" of {}", p.display()))
                    .unwrap_or_default();
                Err(Error::invalid(
                    format!("short name {input:?}"),
                    format!(
                        "it could be any of {} (unqualified-search-registries{file}, short-name-mode enforcing); give the full name, or add an alias under [aliases]",
                        names.join(", ")
                    ),
                ))
            }
            _ => Ok(candidates),
        }
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

/// Whether `input` names no registry (`busybox`, `library/busybox:1`):
/// its first `/` component has no `.` or `:` and is not `localhost`.
pub fn is_short_name(input: &str) -> bool {
    let name = input.split('@').next().unwrap_or(input);
    match name.split_once('/') {
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
        None => true,
    }
}

/// `name` and its `:tag` / `@digest` suffix.
fn split_suffix(input: &str) -> (&str, &str) {
    let end = input.find('@').unwrap_or(input.len());
    let slash = input[..end].rfind('/').map(|i| i + 1).unwrap_or(0);
    let end = input[slash..end]
        .find(':')
        .map(|i| slash + i)
        .unwrap_or(end);
    input.split_at(end)
}

/// An entry's prefix (its location when it has none or an empty one),
/// without a final `/`.
fn key_of(entry: &RegistryEntry) -> &str {
    entry
        .prefix
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(&entry.location)
        .trim_end_matches('/')
}

/// How a matching prefix ranks: the longer first, a plain prefix before a
/// wildcard of the same length.
fn rank(key: &str) -> (usize, bool) {
    (key.len(), !key.starts_with('*'))
}

/// Whether the host name of `name` (`host[:port][/path]`) ends with
/// `domain` (`.example.com`, from the wildcard `*.example.com`) after at
/// least one label of its own, whatever the port; the length of
/// `host[:port]`, the part a `location` replaces.
fn wildcard_match(domain: &str, name: &str) -> Option<usize> {
    let host_end = name.find('/').unwrap_or(name.len());
    let host = &name[..host_end];
    let hostname = host.split(':').next().unwrap_or(host);
    let sub = hostname.strip_suffix(domain)?;
    (!sub.is_empty() && !sub.ends_with('.')).then_some(host_end)
}

/// Checks an entry's prefix: a wildcard is `*.` and a host name (no port,
/// path, tag or digest); a `*` anywhere else is refused; an entry needs a
/// location or a prefix.
fn check_prefix(entry: &RegistryEntry) -> std::result::Result<(), String> {
    let Some(prefix) = entry.prefix.as_deref().filter(|p| !p.is_empty()) else {
        return match entry.location.is_empty() {
            true => Err("neither location nor prefix is set; give at least one".into()),
            false => Ok(()),
        };
    };
    if !prefix.contains('*') {
        return Ok(());
    }
    let wrong = || {
        format!(
            "prefix {prefix:?}: a wildcard prefix is *.DOMAIN (e.g. *.example.com), with the * only at the start and no port, path, tag or digest"
        )
    };
    let domain = prefix.strip_prefix("*.").ok_or_else(wrong)?;
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if domain.is_empty() || domain.len() > 253 || !labels_ok {
        return Err(wrong());
    }
    Ok(())
}

/// A registries.conf location: `host[:port][/path]` as references spell it.
fn check_location(location: &str) -> std::result::Result<(), String> {
    let host = location.split('/').next().unwrap_or("");
    if Reference::parse(&format!("{}/x", location.trim_end_matches('/'))).is_ok()
        && !is_short_name(&format!("{host}/x"))
    {
        Ok(())
    } else {
        Err(format!(
            "location {location:?}: give HOST[:PORT][/PATH], e.g. mirror.example.com:5000/dockerhub"
        ))
    }
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

    #[test]
    fn mirrors_aliases_and_short_names() {
        let conf = RegistriesConf::parse(
            r#"
unqualified-search-registries = ["one.example", "two.example:5000"]
[aliases]
"app" = "quay.example/org/app"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
[[registry.mirror]]
location = "digests.example"
pull-from-mirror = "digest-only"
[[registry]]
prefix = "old.example/team"
location = "new.example/team"
"#,
            Path::new("r.conf"),
        )
        .unwrap();
        let r = |s: &str| Reference::parse(s).unwrap();
        let hosts = |s: &str| -> Vec<String> {
            conf.pull_sources(&r(s))
                .iter()
                .map(|x| format!("{}/{}", x.host, x.repo))
                .collect()
        };
        assert_eq!(
            hosts("docker.io/library/busybox:1"),
            [
                "mirror.example:5000/hub/library/busybox",
                "docker.io/library/busybox"
            ]
        );
        let at = format!("docker.io/library/busybox@sha256:{}", "a".repeat(64));
        assert_eq!(hosts(&at)[1], "digests.example/library/busybox");
        assert_eq!(hosts("old.example/team/x:1"), ["new.example/team/x"]);
        assert_eq!(hosts("old.example/teamx/y:1"), ["old.example/teamx/y"]);

        assert_eq!(
            conf.resolve("app:2").unwrap(),
            [r("quay.example/org/app:2")]
        );
        assert_eq!(conf.resolve("q.example/a").unwrap(), [r("q.example/a")]);
        let err = conf.resolve("busybox").unwrap_err().to_string();
        assert!(
            err.contains("one.example/busybox:latest")
                && err.contains("two.example:5000/busybox:latest")
                && err.contains("r.conf"),
            "{err}"
        );
        let one = RegistriesConf::parse(
            "unqualified-search-registries = [\"one.example\"]",
            Path::new("r"),
        )
        .unwrap();
        assert_eq!(one.resolve("busybox").unwrap(), [r("one.example/busybox")]);
        assert_eq!(
            RegistriesConf::default().resolve("busybox").unwrap(),
            [r("docker.io/library/busybox")]
        );
        for (short, yes) in [
            ("busybox", true),
            ("a/b:1", true),
            ("localhost/a", false),
            ("h:5/a", false),
        ] {
            assert_eq!(is_short_name(short), yes, "{short}");
        }
        assert_eq!(split_suffix("a/b:1"), ("a/b", ":1"));
        assert_eq!(split_suffix("a@sha256:x"), ("a", "@sha256:x"));
        for bad in [
            "[aliases]\n\"x\" = \"short\"",
            "short-name-mode = \"lax\"",
            "[[registry]]\nlocation = \"r.example\"\n[[registry.mirror]]\nlocation = \"no spaces\"",
        ] {
            let err = RegistriesConf::parse(bad, Path::new("bad.conf"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("bad.conf"), "{err}");
        }
    }

    #[test]
    fn wildcard_prefixes_match_subdomains_and_the_longest_prefix_wins() {
        let conf = RegistriesConf::parse(
            r#"
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local/cache"
[[registry]]
prefix = "*.b.example.com"
location = "deep.local"
[[registry]]
prefix = "x.example.com/team"
location = "team.local/t"
[[registry]]
prefix = "p.example.com"
location = "plain.local"
[[registry]]
prefix = "*.blocked.test"
blocked = true
"#,
            Path::new("w.conf"),
        )
        .unwrap();
        let hosts = |s: &str| -> Vec<String> {
            conf.pull_sources(&Reference::parse(s).unwrap())
                .iter()
                .map(|x| format!("{}/{}", x.host, x.repo))
                .collect()
        };
        // An empty location: the name as it is, after the entry's mirrors.
        assert_eq!(
            hosts("a.example.com/ns/app:1"),
            ["mirror.local/cache/ns/app", "a.example.com/ns/app"]
        );
        assert_eq!(
            hosts("a.example.com:5000/app"),
            ["mirror.local/cache/app", "a.example.com:5000/app"]
        );
        // Any depth of subdomains; the longer wildcard wins.
        assert_eq!(hosts("c.a.example.com/app")[1], "c.a.example.com/app");
        assert_eq!(hosts("a.b.example.com/app"), ["deep.local/app"]);
        // A longer plain prefix wins over the wildcard; a plain prefix of
        // the same length too.
        assert_eq!(hosts("x.example.com/team/app"), ["team.local/t/app"]);
        assert_eq!(hosts("x.example.com/other/app").len(), 2);
        assert_eq!(hosts("p.example.com/app"), ["plain.local/app"]);
        // Not the domain itself, nor a look-alike.
        for other in [
            "example.com/app",
            "notexample.com/app",
            "a.example.com.evil.org/app",
            "evil.org/a.example.com/app",
        ] {
            assert_eq!(hosts(other), [other], "{other}");
        }
        assert!(conf.insecure("a.example.com") && conf.insecure("a.c.example.com:5000"));
        // The longer wildcard's entry, which is not insecure, wins.
        assert!(!conf.insecure("a.b.example.com"));
        assert!(!conf.insecure("example.com") && !conf.insecure("x.example.com.org"));
        let err = conf
            .check_blocked("r.blocked.test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("r.blocked.test") && err.contains("blocked"),
            "{err}"
        );
        assert!(conf.check_blocked("blocked.test").is_ok());
    }

    #[test]
    fn invalid_wildcards_are_refused_naming_the_file_and_entry() {
        for (prefix, entry) in [
            ("example.*.com", 2),
            ("*.example.com/foo", 2),
            ("*.example.com:5000", 2),
            ("*.example.com:5000/foo/bar:baz", 2),
            ("*example.com", 2),
            ("**.example.com", 2),
            ("*.", 2),
            ("*", 2),
            ("*.a..b", 2),
            ("*.-a.com", 2),
        ] {
            let text = format!(
                "[[registry]]\nlocation = \"ok.example\"\n[[registry]]\nprefix = \"{prefix}\"\n"
            );
            let err = RegistriesConf::parse(&text, Path::new("/etc/w.conf"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/etc/w.conf")
                    && err.contains(&format!("[[registry]] entry {entry}"))
                    && err.contains(&format!("{prefix:?}"))
                    && err.contains("*.example.com"),
                "{prefix}: {err}"
            );
        }
        let err = RegistriesConf::parse("[[registry]]\ninsecure = true", Path::new("n.conf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n.conf") && err.contains("entry 1") && err.contains("neither"),
            "{err}"
        );
        // An empty prefix is the location's.
        let conf = RegistriesConf::parse(
            "[[registry]]\nprefix = \"\"\nlocation = \"r.test\"\ninsecure = true\n",
            Path::new("e.conf"),
        )
        .unwrap();
        assert!(conf.insecure("r.test"));
        // A wildcard may also have a location, which replaces the host.
        let conf = RegistriesConf::parse(
            "[[registry]]\nprefix = \"*.corp.test\"\nlocation = \"127.0.0.1:5000/corp\"\n",
            Path::new("l.conf"),
        )
        .unwrap();
        let sources = conf.pull_sources(&Reference::parse("r.corp.test:443/app:1").unwrap());
        assert_eq!(
            (sources[0].host.as_str(), sources[0].repo.as_str()),
            ("127.0.0.1:5000", "corp/app")
        );
    }

    #[test]
    fn dropins_merge_over_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        std::fs::write(
            &main,
            "unqualified-search-registries = [\"a.example\"]\n[aliases]\n\"x\" = \"a.example/x\"\n\
             [[registry]]\nlocation = \"r.example\"\ninsecure = true\n",
        )
        .unwrap();
        let d = dir.path().join("registries.conf.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("10-names.conf"),
            "[aliases]\n\"y\" = \"b.example/y\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("20-reg.conf"),
            "[[registry]]\nlocation = \"r.example\"\nblocked = true\n",
        )
        .unwrap();
        std::fs::write(d.join("ignored.txt"), "not toml").unwrap();
        let missing = dir.path().join("none.conf");
        let conf = RegistriesConf::load_from(&[missing, main], std::slice::from_ref(&d)).unwrap();
        let r = |s: &str| Reference::parse(s).unwrap();
        assert_eq!(conf.resolve("x").unwrap(), [r("a.example/x")]);
        assert_eq!(conf.resolve("y:1").unwrap(), [r("b.example/y:1")]);
        assert_eq!(conf.resolve("z").unwrap(), [r("a.example/z")]);
        assert!(conf.check_blocked("r.example").is_err() && !conf.insecure("r.example"));
        std::fs::write(d.join("30-bad.conf"), "[[registry]]\ninsecure = 3").unwrap();
        let err = RegistriesConf::load_from(&[], &[d])
            .unwrap_err()
            .to_string();
        assert!(err.contains("30-bad.conf"), "{err}");
    }
}
