//! The iptables rules a bridge network needs, installed once per network
//! rather than per container (as podman's netavark does): masquerading of
//! what leaves the subnet (not for an internal network) and FORWARD
//! accepts for the bridge, for hosts whose FORWARD policy drops. Each rule
//! carries the comment `berth:<bridge>` (bridge names are unique on the
//! host). They replace the bridge plugin's `ipMasq` and the firewall
//! plugin, which add and remove rules for every container: the dearest
//! part of a container's attachment. A marker under [`MARKERS`] (a
//! tmpfs, like the rules: both go at reboot) says they are in place.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::store::Network;

/// Where a network's marker lives while its rules are installed.
pub const MARKERS: &str = "/run/berth/rules";

/// The rules of `net`: table, chain, whether inserted first, the match.
fn rules(net: &Network) -> Vec<(&'static str, &'static str, bool, Vec<String>)> {
    let comment = format!("berth:{}", net.bridge);
    let tag = |mut r: Vec<String>| {
        r.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            comment.clone(),
        ]);
        r
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let subnet = net.subnet.to_string();
    let mut out = vec![
        (
            "filter",
            "FORWARD",
            true,
            tag(s(&[
                "-o",
                &net.bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ])),
        ),
        ("filter", "FORWARD", true, tag(s(&["-i", &net.bridge]))),
    ];
    if !net.internal {
        out.push((
            "nat",
            "POSTROUTING",
            false,
            tag(s(&["-s", &subnet, "!", "-d", &subnet])),
        ));
    }
    out
}

fn target(table: &str) -> &'static str {
    if table == "nat" {
        "MASQUERADE"
    } else {
        "ACCEPT"
    }
}

/// Runs `iptables -w ARGS`; Ok(false) when it exits 1 (a rule not found).
fn iptables(args: &[String]) -> Result<bool> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| Error::io("iptables (install the iptables package)", e))?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(Error::invalid(
            format!("iptables {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}

fn marker(net: &Network) -> std::path::PathBuf {
    Path::new(MARKERS).join(&net.bridge)
}

/// Installs `net`'s rules unless its marker says they are in place.
pub fn ensure(net: &Network) -> Result<()> {
    let marker = marker(net);
    if marker.exists() {
        return Ok(());
    }
    for (table, chain, first, rule) in rules(net) {
        let with = |op: &str| {
            let mut a = vec!["-t".to_string(), table.into(), op.into(), chain.into()];
            a.extend(rule.iter().cloned());
            a.extend(["-j".into(), target(table).into()]);
            a
        };
        if !iptables(&with("-C"))? {
            iptables(&with(if first { "-I" } else { "-A" }))?;
        }
    }
    std::fs::create_dir_all(MARKERS).map_err(|e| Error::io(MARKERS, e))?;
    std::fs::write(&marker, net.conflist.display().to_string()).map_err(|e| Error::io(&marker, e))
}

/// Removes `net`'s rules (every copy) and its marker.
pub fn remove(net: &Network) -> Result<()> {
    for (table, chain, _, rule) in rules(net) {
        let mut a = vec!["-t".to_string(), table.into(), "-D".into(), chain.into()];
        a.extend(rule);
        a.extend(["-j".into(), target(table).into()]);
        while iptables(&a)? {}
    }
    match std::fs::remove_file(marker(net)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(marker(net), e)),
    }
}
