//! `linux.netDevices`: host network interfaces moved into the container's
//! network namespace at create, optionally renamed, with their permanent
//! global addresses kept and the link set up (Runtime Spec, "Network
//! Devices"). Nothing moves them back: when the namespace goes, the kernel
//! returns physical devices to the initial namespace and destroys virtual
//! ones, as the spec requires (a runtime MUST NOT move them out itself).
//!
//! A few rtnetlink requests over a NETLINK_ROUTE socket: one in the
//! runtime's namespace (read addresses, set down, move and rename in one
//! RTM_NEWLINK) and one opened inside the container's namespace (set up,
//! add the addresses back).

use std::os::fd::{AsRawFd, OwnedFd};

use berth_core::rtnetlink::{attr, ifinfo, Rtnl};
use oci_spec::runtime::Linux;

use crate::error::{Error, Result};

/// Whether `name` is an interface name the kernel takes (dev_valid_name):
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white space.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

/// Checks `linux.netDevices`: valid host and container names, and a network
/// namespace of the container's own to move them to.
pub(crate) fn check(linux: &Linux, own_netns: bool) -> std::result::Result<(), String> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    if !own_netns {
        return Err("field `linux.netDevices`: devices can only move into a network namespace of the container's own; add {\"type\": \"network\"} to linux.namespaces".into());
    }
    let mut names: Vec<&String> = devices.keys().collect();
    names.sort();
    let mut targets = std::collections::HashSet::new();
    for host in names {
        if !valid_name(host) {
            return Err(format!("field `linux.netDevices`: {host:?} is not a network interface name (1 to 15 bytes, no '/', ':' or spaces)"));
        }
        let target = devices[host].name().clone().unwrap_or_else(|| host.clone());
        if !valid_name(&target) {
            return Err(format!("field `linux.netDevices.{host}.name`: {target:?} is not a network interface name (1 to 15 bytes, no '/', ':' or spaces; %d asks the kernel for a free number)"));
        }
        if !target.contains("%d") && !targets.insert(target.clone()) {
            return Err(format!(
                "field `linux.netDevices.{host}.name`: {target:?} is given to two devices"
            ));
        }
    }
    Ok(())
}

/// An RTM_NEWADDR body for link `index` from a dumped address `a`: its
/// ifaddrmsg and its address attributes only (not the label, which names
/// the host's interface, nor the cache info).
fn readd_body(a: &[u8], index: i32) -> Vec<u8> {
    let mut body = a[..8].to_vec();
    body[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    let mut off = 8;
    while off + 4 <= a.len() {
        let len = u16::from_ne_bytes([a[off], a[off + 1]]) as usize;
        let typ = u16::from_ne_bytes([a[off + 2], a[off + 3]]);
        if len < 4 || off + len > a.len() {
            break;
        }
        if matches!(
            typ,
            libc::IFA_ADDRESS | libc::IFA_LOCAL | libc::IFA_BROADCAST
        ) {
            attr(&mut body, typ, &a[off + 4..off + len]);
        }
        off += len.next_multiple_of(4);
    }
    body
}

/// The permanent, global-scope addresses of link `index` (the ones the spec
/// says a move keeps), as dumped.
fn permanent_addresses(rtnl: &Rtnl, index: i32) -> std::io::Result<Vec<Vec<u8>>> {
    let all = rtnl.request(
        libc::RTM_GETADDR,
        libc::NLM_F_DUMP as u16,
        &[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0],
        libc::RTM_NEWADDR,
    )?;
    Ok(all
        .into_iter()
        .filter(|a| {
            a.len() >= 8
                && u32::from_ne_bytes([a[4], a[5], a[6], a[7]]) == index as u32
                && a[3] == libc::RT_SCOPE_UNIVERSE
                && a[2] as u32 & libc::IFA_F_PERMANENT != 0
        })
        .collect())
}

/// The index of interface `name` in the runtime's namespace.
fn if_index(name: &str) -> Option<i32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a live NUL-terminated string the call only reads.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index as i32)
}

/// Moves every device of `linux.netDevices` into the network namespace of
/// process `pid`, renamed as asked, up, with its permanent addresses.
pub(crate) fn move_all(linux: &Linux, pid: i32) -> Result<()> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    let fail = |what: String| {
        move |e: std::io::Error| Error::Init(format!("linux.netDevices: {what}: {e}"))
    };
    let ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(fail("cannot open the container's network namespace".into()))?
        .into();
    let host = Rtnl::open().map_err(fail("netlink socket".into()))?;
    let inside =
        Rtnl::open_in(&ns).map_err(fail("netlink socket in the container's namespace".into()))?;
    let mut names: Vec<&String> = devices.keys().collect();
    names.sort();
    for name in names {
        let target = devices[name].name().clone().unwrap_or_else(|| name.clone());
        let index = if_index(name).ok_or_else(|| {
            Error::Init(format!(
                "linux.netDevices: no network interface {name:?} in the runtime's network namespace (see `ip link`)"
            ))
        })?;
        let addrs = permanent_addresses(&host, index)
            .map_err(fail(format!("reading the addresses of {name}")))?;
        host.request(
            libc::RTM_NEWLINK,
            0,
            &ifinfo(index, 0, libc::IFF_UP as u32),
            0,
        )
        .map_err(fail(format!("setting {name} down")))?;
        let mut body = ifinfo(index, 0, 0);
        let mut ifname = target.clone().into_bytes();
        ifname.push(0);
        attr(&mut body, libc::IFLA_IFNAME, &ifname);
        attr(
            &mut body,
            libc::IFLA_NET_NS_FD,
            &(ns.as_raw_fd() as u32).to_ne_bytes(),
        );
        host.request(libc::RTM_NEWLINK, 0, &body, 0).map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::EEXIST) {
                format!("the container already has an interface named {target:?} (end the name with %d to let the kernel number it)")
            } else {
                "moving it into the container's network namespace".into()
            };
            Error::Init(format!("linux.netDevices: {name}: {why}: {e}"))
        })?;
        // The kernel keeps the index when it is free in the new namespace,
        // and a new namespace has only lo.
        inside
            .request(
                libc::RTM_NEWLINK,
                0,
                &ifinfo(index, libc::IFF_UP as u32, libc::IFF_UP as u32),
                0,
            )
            .map_err(fail(format!("setting {target} up in the container")))?;
        for a in addrs {
            inside
                .request(
                    libc::RTM_NEWADDR,
                    (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
                    &readd_body(&a, index),
                    0,
                )
                .map_err(fail(format!(
                    "adding an address of {name} back in the container"
                )))?;
        }
    }
    Ok(())
}
