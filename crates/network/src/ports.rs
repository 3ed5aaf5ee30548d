//! Published ports (`-p [IP:]HOST:CONTAINER[/tcp|udp]`, ranges as
//! `8000-8002:80-82`), in the shape the portmap plugin's `portMappings`
//! capability takes.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One host port forwarded to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Only this host address (all of the host's addresses when absent).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// Whether this mapping and `other` want the same host port (same
    /// protocol, and the same address or one of them on all addresses:
    /// none given, or 0.0.0.0, which portmap takes as none).
    pub fn clashes(&self, other: &PortMapping) -> bool {
        let all = |ip: Option<Ipv4Addr>| ip.is_none_or(|ip| ip.is_unspecified());
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && (all(self.host_ip) || all(other.host_ip) || self.host_ip == other.host_ip)
    }
}

/// Refuses mappings whose host port a socket of the host holds (a
/// listening TCP socket, a bound UDP one: its traffic would go to the
/// container instead) or whose host address is not one of the host's.
/// The port is bound for an instant, as a server would bind it (TCP with
/// SO_REUSEADDR, so connections closing in TIME_WAIT do not count).
pub fn check_host_free(ports: &[PortMapping]) -> Result<()> {
    for p in ports {
        let addr = (p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
        let bound = match p.protocol {
            Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
            Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
        };
        let what = || {
            let ip = p.host_ip.map(|ip| format!("{ip}:")).unwrap_or_default();
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            format!("-p {ip}{}:{}/{proto}", p.host_port, p.container_port)
        };
        match bound {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(Error::invalid(
                    what(),
                    format!(
                    "host port {} is in use by a process of the host (choose another host port)",
                    p.host_port
                ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(Error::invalid(
                    what(),
                    "the host address is not one of this host's (see `ip addr`)",
                ))
            }
            Err(e) => return Err(Error::io(format!("binding {}:{}", addr.0, addr.1), e)),
        }
    }
    Ok(())
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

/// Parses one `-p` value into its mappings (one per port of a range).
pub fn parse_publish(text: &str) -> Result<Vec<PortMapping>> {
    let bad = |why: &str| Error::invalid(format!("-p {text:?}"), why.to_string());
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, "tcp")) => (s, Protocol::Tcp),
        Some((s, "udp")) => (s, Protocol::Udp),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (text, Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => {
            return Err(bad(
                "expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (HOST_PORT may be a range like 8000-8002)",
            ))
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address of the host")))?,
        ),
    };
    let hosts = range(host).map_err(|why| bad(&format!("host port: {why}")))?;
    let containers = range(container).map_err(|why| bad(&format!("container port: {why}")))?;
    if hosts.len() != containers.len() {
        return Err(bad(&format!(
            "the host range has {} ports and the container range {}: they must be as long",
            hosts.len(),
            containers.len()
        )));
    }
    Ok(hosts
        .zip(containers)
        .map(|(host_port, container_port)| PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        })
        .collect())
}

/// `N` or `N-M` (1 to 65535, N ≤ M).
fn range(text: &str) -> std::result::Result<std::ops::RangeInclusive<u16>, String> {
    let port = |s: &str| match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1 to 65535)")),
    };
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if a > b {
        return Err(format!("{text:?}: the range runs backwards"));
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_on_0_0_0_0_clashes_with_one_on_any_address() {
        let one = |spec: &str| parse_publish(spec).unwrap()[0];
        let all = one("0.0.0.0:8080:80");
        assert!(all.clashes(&one("127.0.0.1:8080:81")));
        assert!(one("127.0.0.1:8080:81").clashes(&all));
        assert!(all.clashes(&one("8080:82")));
        assert!(!all.clashes(&one("127.0.0.1:8081:80")));
        assert!(!all.clashes(&one("127.0.0.1:8080:80/udp")));
        assert!(!one("127.0.0.1:8080:80").clashes(&one("127.0.0.2:8080:80")));
    }

    #[test]
    fn ports_and_ranges_parse_as_podmans() {
        let one = parse_publish("127.0.0.1:8080:80").unwrap();
        assert_eq!(
            one,
            [PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: Some(Ipv4Addr::LOCALHOST)
            }]
        );
        let json = serde_json::to_value(one[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
        let udp = parse_publish("5353:53/udp").unwrap();
        assert_eq!((udp[0].protocol, udp[0].host_ip), (Protocol::Udp, None));
        let r = parse_publish("8000-8002:80-82").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host_port, r[2].container_port), (8002, 82));
        for bad in [
            "80",
            "0:80",
            "8000-8001:80",
            "x:80",
            "1.2.3:80:80",
            "80:80/sctp",
            "9-8:9-8",
        ] {
            let err = parse_publish(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
