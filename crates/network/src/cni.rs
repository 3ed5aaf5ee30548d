//! The CNI exec protocol (CNI spec 1.0): a network's conflist is run
//! plugin by plugin, each an executable found in [`PLUGIN_DIRS`] and named
//! by its `type`, given the command and the container in `CNI_*`
//! environment variables and its configuration on stdin (the list's name
//! and version, `runtimeConfig` for the capabilities it declares, and the
//! previous plugin's result as `prevResult`); it answers a result or an
//! error as JSON on stdout. ADD runs the plugins in order, DEL in
//! reverse and CHECK in order, both given the result ADD returned.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::ports::PortMapping;

/// Where the plugins are looked for, in order (Debian's
/// containernetworking-plugins, then the upstream default).
pub const PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// The CNI version berth's conflists are written in.
pub const CNI_VERSION: &str = "1.0.0";

/// The container side of one CNI call.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The container's id (`CNI_CONTAINERID`).
    pub container_id: &'a str,
    /// Its network namespace (`CNI_NETNS`).
    pub netns: &'a Path,
    /// The interface to create in it (`CNI_IFNAME`).
    pub ifname: &'a str,
    /// Ports for plugins with the `portMappings` capability.
    pub ports: &'a [PortMapping],
}

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach the container.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Check that the attachment is as ADD made it.
    Check,
}

impl CniCommand {
    fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// Runs ADD through `conflist`'s plugins; returns the last one's result.
pub fn add(conflist: &Value, target: &Target<'_>) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(conflist)? {
        let result = invoke(conflist, plugin, CniCommand::Add, target, prev.as_ref())?;
        prev = Some(result.ok_or_else(|| {
            plugin_error(conflist, plugin, CniCommand::Add, "it returned no result")
        })?);
    }
    prev.ok_or_else(|| {
        Error::invalid(
            format!("network {:?}", name(conflist)),
            "its conflist has no plugins",
        )
    })
}

/// Runs CHECK through `conflist`'s plugins with ADD's cached `result`.
pub fn check(conflist: &Value, target: &Target<'_>, result: &Value) -> Result<()> {
    for plugin in plugins(conflist)? {
        invoke(conflist, plugin, CniCommand::Check, target, Some(result))?;
    }
    Ok(())
}

/// Runs DEL through `conflist`'s plugins in reverse, with ADD's cached
/// `result` when there is one (a crash may have come before it). Every
/// plugin runs; the first error is returned.
pub fn del(conflist: &Value, target: &Target<'_>, result: Option<&Value>) -> Result<()> {
    let mut first = None;
    for plugin in plugins(conflist)?.iter().rev() {
        if let Err(e) = invoke(conflist, plugin, CniCommand::Del, target, result) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn name(conflist: &Value) -> &str {
    conflist["name"].as_str().unwrap_or("")
}

fn plugins(conflist: &Value) -> Result<&Vec<Value>> {
    conflist["plugins"].as_array().ok_or_else(|| {
        Error::invalid(
            format!("network {:?}", name(conflist)),
            "its conflist has no \"plugins\" list",
        )
    })
}

fn plugin_error(conflist: &Value, plugin: &Value, command: CniCommand, message: &str) -> Error {
    Error::Plugin {
        network: name(conflist).to_string(),
        plugin: plugin["type"].as_str().unwrap_or("?").to_string(),
        command: command.as_str().to_string(),
        message: message.to_string(),
    }
}

/// The executable of plugin type `kind`: a plain file name (no path),
/// looked up in [`PLUGIN_DIRS`].
pub fn find_plugin(kind: &str) -> Result<PathBuf> {
    let valid = !kind.is_empty()
        && !kind.starts_with('.')
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(Error::invalid(
            format!("CNI plugin type {kind:?}"),
            "must be a plain file name like \"bridge\"",
        ));
    }
    PLUGIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::invalid(
                format!("CNI plugin {kind:?}"),
                format!(
                    "not found in {} (install Debian's containernetworking-plugins)",
                    PLUGIN_DIRS.join(", ")
                ),
            )
        })
}

/// One plugin's configuration for one call.
fn stdin_config(
    conflist: &Value,
    plugin: &Value,
    target: &Target<'_>,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    if plugin["capabilities"]["portMappings"] == json!(true) && !target.ports.is_empty() {
        conf["runtimeConfig"] = json!({"portMappings": target.ports});
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// Whether `plugin` has nothing to do for `target`: portmap only acts on
/// the `portMappings` it is given, so for a container without published
/// ports it is skipped on ADD, CHECK and DEL alike (the ports are kept
/// with the attachment, so DEL decides as ADD did). That saves a process
/// and, on DEL, its iptables runs.
fn idle(plugin: &Value, target: &Target<'_>) -> bool {
    plugin["type"] == "portmap" && target.ports.is_empty()
}

fn invoke(
    conflist: &Value,
    plugin: &Value,
    command: CniCommand,
    target: &Target<'_>,
    prev: Option<&Value>,
) -> Result<Option<Value>> {
    if idle(plugin, target) && prev.is_some() {
        return Ok(prev.cloned());
    }
    let kind = plugin["type"].as_str().unwrap_or_default();
    let exe = find_plugin(kind)?;
    let conf = stdin_config(conflist, plugin, target, prev);
    let fail = |message: String| plugin_error(conflist, plugin, command, &message);
    let started = std::time::Instant::now();
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", target.container_id)
        .env("CNI_NETNS", target.netns)
        .env("CNI_IFNAME", target.ifname)
        .env("CNI_PATH", PLUGIN_DIRS.join(":"))
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
    let data = serde_json::to_vec(&conf).map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading reports through its status.
        let _ = stdin.write_all(&data);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {}: {e}", exe.display())))?;
    // `berth -D` shows each plugin's time (bench/network.sh sums them).
    tracing::debug!(
        plugin = kind,
        command = command.as_str(),
        micros = started.elapsed().as_micros() as u64,
        "CNI plugin ran"
    );
    let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let message = match &answer {
            Some(a) if a["msg"].is_string() => {
                let details = a["details"].as_str().filter(|d| !d.is_empty());
                match details {
                    Some(d) => format!("{} ({d})", a["msg"].as_str().unwrap_or_default()),
                    None => a["msg"].as_str().unwrap_or_default().to_string(),
                }
            }
            _ => format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        return Err(fail(message));
    }
    if command != CniCommand::Add {
        return Ok(None);
    }
    match answer {
        Some(a) if a.is_object() => Ok(Some(a)),
        _ => Err(fail(format!(
            "its answer is not a CNI result: {:?}",
            String::from_utf8_lossy(&out.stdout)
        ))),
    }
}

/// The container's IPv4 address and gateway in an ADD result (the first
/// address of the interface in the container's namespace).
pub fn ipv4_of(result: &Value) -> Option<(std::net::Ipv4Addr, Option<std::net::Ipv4Addr>)> {
    let interfaces = result["interfaces"].as_array();
    result["ips"].as_array()?.iter().find_map(|ip| {
        let in_sandbox = match (ip["interface"].as_u64(), interfaces) {
            (Some(i), Some(ifs)) => ifs
                .get(i as usize)
                .is_some_and(|f| f["sandbox"].as_str().is_some_and(|s| !s.is_empty())),
            _ => true,
        };
        let addr = ip["address"].as_str()?.split('/').next()?.parse().ok()?;
        let gateway = ip["gateway"].as_str().and_then(|g| g.parse().ok());
        in_sandbox.then_some((addr, gateway))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_carries_name_version_capabilities_and_prev_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let ports = crate::ports::parse_publish("8080:80").unwrap();
        let target = Target {
            container_id: "c",
            netns: Path::new("/x"),
            ifname: "eth0",
            ports: &ports,
        };
        let prev = json!({"ips": []});
        let conf = stdin_config(&list, &list["plugins"][0], &target, Some(&prev));
        assert_eq!(conf["name"], "n");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(conf["prevResult"], prev);
        assert!(find_plugin("../bin/sh").is_err());
        assert!(find_plugin("").is_err());
    }

    #[test]
    fn the_address_is_the_one_in_the_sandbox() {
        let result = json!({"interfaces": [{"name": "br"}, {"name": "eth0", "sandbox": "/ns"}],
            "ips": [{"interface": 1, "address": "10.89.0.7/24", "gateway": "10.89.0.1"}]});
        let (ip, gw) = ipv4_of(&result).unwrap();
        assert_eq!(ip.to_string(), "10.89.0.7");
        assert_eq!(gw.unwrap().to_string(), "10.89.0.1");
    }
}
