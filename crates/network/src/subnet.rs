//! IPv4 subnets (`10.89.0.0/24`): parsing with the checks a network
//! needs, overlap tests, and the host's routes they must not collide with.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The blocks no network may overlap: addresses a host never gives an
/// interface of a bridge network (RFC 6890).
const SPECIAL: [(Subnet, &str); 3] = [
    (
        Subnet {
            addr: Ipv4Addr::new(0, 0, 0, 0),
            prefix: 8,
        },
        "\"this network\"",
    ),
    (
        Subnet {
            addr: Ipv4Addr::new(127, 0, 0, 0),
            prefix: 8,
        },
        "the loopback addresses",
    ),
    (
        Subnet {
            addr: Ipv4Addr::new(224, 0, 0, 0),
            prefix: 3,
        },
        "the multicast and reserved addresses",
    ),
];

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The network `addr/prefix`; `addr`'s host bits must be zero and the
    /// prefix leave room for a gateway and containers (8 to 30).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet> {
        let what = || format!("subnet {addr}/{prefix}");
        if !(8..=30).contains(&prefix) {
            return Err(Error::invalid(
                what(),
                "the prefix length must be between 8 and 30 (room for a gateway and containers)",
            ));
        }
        let net = Subnet { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            let base = Ipv4Addr::from(u32::from(addr) & net.mask());
            return Err(Error::invalid(
                what(),
                format!("host bits are set: did you mean {base}/{prefix}?"),
            ));
        }
        Ok(net)
    }

    /// Refuses a subnet overlapping addresses no bridge can have
    /// (loopback, 0.0.0.0/8, multicast and reserved), for a new network;
    /// those of existing networks are read as they are, so that they can
    /// still be listed and removed.
    pub fn check_usable(&self) -> Result<()> {
        match SPECIAL.iter().find(|(block, _)| self.overlaps(block)) {
            Some((block, kind)) => Err(Error::invalid(
                format!("subnet {self}"),
                format!("it overlaps {block}, {kind}: no bridge can have such addresses"),
            )),
            None => Ok(()),
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether this network and `other` share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The `n`th address of the network (1: the usual gateway).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    /// Whether `ip` can be a host of this network (not the network or
    /// broadcast address).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let broadcast = u32::from(self.addr) | !self.mask();
        self.contains(ip) && ip != self.addr && u32::from(ip) != broadcast
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subnet> {
        let bad = || {
            Error::invalid(
                format!("subnet {s:?}"),
                "expected an IPv4 CIDR like 10.89.0.0/24",
            )
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Subnet::new(addr, prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The host's IPv4 routes other than the default one, with their
/// interfaces (`/proc/net/route`): a new network must not overlap them.
pub fn host_routes() -> Result<Vec<(String, Subnet)>> {
    let path = "/proc/net/route";
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<(String, Subnet)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            let prefix = mask.count_ones() as u8;
            // The default route (and host routes) say nothing about subnets.
            let addr = Ipv4Addr::from(dest);
            let net = Subnet { addr, prefix };
            (prefix > 0 && prefix < 32 && dest & !net.mask() == 0).then(|| (f[0].to_string(), net))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_what_cannot_be_a_network() {
        let s: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.89.0.0/24");
        assert_eq!(s.host(1), Ipv4Addr::new(10, 89, 0, 1));
        assert!(s.is_host(Ipv4Addr::new(10, 89, 0, 254)));
        assert!(!s.is_host(Ipv4Addr::new(10, 89, 0, 255)));
        let err = "10.89.0.1/24".parse::<Subnet>().unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.89.0.0/24"),
            "{err}"
        );
        assert!("10.89.0.0/31".parse::<Subnet>().is_err());
        assert!("10.89.0.0".parse::<Subnet>().is_err());
        assert!("fd00::/64".parse::<Subnet>().is_err());
        for special in [
            "127.0.0.0/8",
            "127.89.0.0/24",
            "0.0.0.0/8",
            "224.0.0.0/24",
            "239.255.0.0/16",
            "240.0.0.0/8",
            "255.255.255.0/24",
        ] {
            let err = special
                .parse::<Subnet>()
                .unwrap()
                .check_usable()
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("no bridge can have such addresses"),
                "{special}: {err}"
            );
        }
        for usable in ["126.0.0.0/8", "223.255.255.0/24", "10.89.0.0/24"] {
            assert!(usable.parse::<Subnet>().unwrap().check_usable().is_ok());
        }
        let wide: Subnet = "10.88.0.0/16".parse().unwrap();
        assert!(wide.overlaps(&"10.88.3.0/24".parse().unwrap()));
        assert!(!wide.overlaps(&s));
    }

    #[test]
    fn routes_come_from_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(
            routes,
            vec![("eth0".to_string(), "192.0.2.0/24".parse().unwrap())]
        );
    }
}
