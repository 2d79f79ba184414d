//! A program's network rules: which ports it may listen on, which peers it may reach.
//!
//! The system description gives them per program as two lists of strings:
//!
//! - `net_listen = ["8080", "9000-9010"]`: a port or an inclusive range of ports (1..=65535)
//!   the program may listen on (TCP) or bind (UDP);
//! - `net_connect = ["10.0.2.2/32:8000-8100", "10.0.2.0/24:53", "0.0.0.0/0:*"]`: an IPv4
//!   address with an optional prefix length (`/32` if left out), a colon, and a port, an
//!   inclusive range, or `*` for every port. The program may open TCP connections and send UDP
//!   datagrams to a peer inside the prefix on one of those ports.
//!
//! Anything else is refused with a [`RuleError`] saying what is wrong: no silent widening (an
//! address with bits set past its prefix, like `10.0.2.5/24`, is an error rather than read as
//! `10.0.2.0/24`). An empty list allows nothing.

use alloc::vec::Vec;
use core::fmt;

/// An inclusive range of ports, `lo..=hi`, never including 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// Peers inside `addr/prefix` on ports `ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRule {
    pub addr: [u8; 4],
    /// 0..=32.
    pub prefix: u8,
    pub ports: PortRange,
}

/// A program's rules. Empty lists allow nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetRules {
    pub listen: Vec<PortRange>,
    pub connect: Vec<PeerRule>,
}

/// Why a rule did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// A port is not a number in 1..=65535.
    BadPort,
    /// A range's first port is above its last.
    EmptyRange,
    /// The address is not four dotted numbers 0..=255.
    BadAddress,
    /// The prefix length is not a number in 0..=32.
    BadPrefix,
    /// The address has bits set beyond its prefix.
    HostBits,
    /// A peer rule has no `:PORTS` part.
    MissingPorts,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleError::BadPort => "a port must be a number from 1 to 65535",
            RuleError::EmptyRange => "a port range must be LOW-HIGH with LOW <= HIGH",
            RuleError::BadAddress => "an address must be four numbers 0-255 separated by dots",
            RuleError::BadPrefix => "a prefix length must be a number from 0 to 32",
            RuleError::HostBits => "the address has bits set beyond its prefix length",
            RuleError::MissingPorts => "a peer rule is ADDRESS[/PREFIX]:PORTS (PORTS: N, LOW-HIGH or *)",
        })
    }
}

impl PortRange {
    /// One port.
    pub const fn one(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// Every port.
    pub const ALL: PortRange = PortRange { lo: 1, hi: u16::MAX };

    pub fn contains(&self, port: u16) -> bool {
        port != 0 && self.lo <= port && port <= self.hi
    }

    /// `N` or `LOW-HIGH`.
    pub fn parse(s: &str) -> Result<PortRange, RuleError> {
        let s = s.trim();
        let r = match s.split_once('-') {
            Some((lo, hi)) => PortRange { lo: port(lo)?, hi: port(hi)? },
            None => PortRange::one(port(s)?),
        };
        if r.lo > r.hi {
            return Err(RuleError::EmptyRange);
        }
        Ok(r)
    }
}

fn port(s: &str) -> Result<u16, RuleError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RuleError::BadPort);
    }
    match s.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(RuleError::BadPort),
    }
}

/// A dotted IPv4 address.
pub fn parse_addr(s: &str) -> Result<[u8; 4], RuleError> {
    let mut out = [0u8; 4];
    let mut parts = s.trim().split('.');
    for o in &mut out {
        let p = parts.next().ok_or(RuleError::BadAddress)?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RuleError::BadAddress);
        }
        *o = p.parse::<u8>().map_err(|_| RuleError::BadAddress)?;
    }
    if parts.next().is_some() {
        return Err(RuleError::BadAddress);
    }
    Ok(out)
}

/// The network mask of a prefix length (0..=32).
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32) as u32) }
}

impl PeerRule {
    /// `ADDRESS[/PREFIX]:PORTS`.
    pub fn parse(s: &str) -> Result<PeerRule, RuleError> {
        let (net, ports) = s.trim().rsplit_once(':').ok_or(RuleError::MissingPorts)?;
        let ports = if ports.trim() == "*" { PortRange::ALL } else { PortRange::parse(ports)? };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => {
                let p = p.trim();
                if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RuleError::BadPrefix);
                }
                let p: u8 = p.parse().map_err(|_| RuleError::BadPrefix)?;
                if p > 32 {
                    return Err(RuleError::BadPrefix);
                }
                (parse_addr(a)?, p)
            }
            None => (parse_addr(net)?, 32),
        };
        if u32::from_be_bytes(addr) & !mask(prefix) != 0 {
            return Err(RuleError::HostBits);
        }
        Ok(PeerRule { addr, prefix, ports })
    }

    /// Whether `addr:port` is inside the rule.
    pub fn allows(&self, addr: [u8; 4], port: u16) -> bool {
        let m = mask(self.prefix);
        u32::from_be_bytes(addr) & m == u32::from_be_bytes(self.addr) & m && self.ports.contains(port)
    }
}

impl NetRules {
    /// Rules from the system description's two lists; the first bad entry is the error, with
    /// its index in its list.
    pub fn parse<'a>(
        listen: impl IntoIterator<Item = &'a str>,
        connect: impl IntoIterator<Item = &'a str>,
    ) -> Result<NetRules, (RuleList, usize, RuleError)> {
        let mut rules = NetRules::default();
        for (i, s) in listen.into_iter().enumerate() {
            rules.listen.push(PortRange::parse(s).map_err(|e| (RuleList::Listen, i, e))?);
        }
        for (i, s) in connect.into_iter().enumerate() {
            rules.connect.push(PeerRule::parse(s).map_err(|e| (RuleList::Connect, i, e))?);
        }
        Ok(rules)
    }

    /// Whether the program may listen on (TCP) or bind (UDP) `port`.
    pub fn may_listen(&self, port: u16) -> bool {
        self.listen.iter().any(|r| r.contains(port))
    }

    /// Whether the program may reach `addr:port`.
    pub fn may_connect(&self, addr: [u8; 4], port: u16) -> bool {
        self.connect.iter().any(|r| r.allows(addr, port))
    }
}

/// Which list a bad rule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleList {
    /// `net_listen`.
    Listen,
    /// `net_connect`.
    Connect,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(PortRange::parse("80"), Ok(PortRange::one(80)));
        assert_eq!(PortRange::parse(" 8000-8100 "), Ok(PortRange { lo: 8000, hi: 8100 }));
        assert_eq!(PortRange::parse("65535"), Ok(PortRange::one(65535)));
        for bad in ["0", "65536", "", "-", "80-", "-80", "+80", "8o", "1-2-3", "99999999999"] {
            assert!(PortRange::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PortRange::parse("90-80"), Err(RuleError::EmptyRange));
        assert!(!PortRange::ALL.contains(0));
        assert!(PortRange { lo: 10, hi: 20 }.contains(20));
        assert!(!PortRange { lo: 10, hi: 20 }.contains(21));
    }

    #[test]
    fn peer_rules() {
        let r = PeerRule::parse("10.0.2.2/32:8000-8100").unwrap();
        assert_eq!(r, PeerRule { addr: [10, 0, 2, 2], prefix: 32, ports: PortRange { lo: 8000, hi: 8100 } });
        assert!(r.allows([10, 0, 2, 2], 8050));
        assert!(!r.allows([10, 0, 2, 3], 8050));
        assert!(!r.allows([10, 0, 2, 2], 7999));
        let r = PeerRule::parse("10.0.2.2:53").unwrap();
        assert_eq!(r.prefix, 32);
        let r = PeerRule::parse("10.0.0.0/8:*").unwrap();
        assert!(r.allows([10, 200, 3, 4], 1));
        assert!(!r.allows([11, 0, 0, 1], 1));
        assert!(!r.allows([10, 0, 0, 1], 0), "port 0 is never allowed");
        let any = PeerRule::parse("0.0.0.0/0:443").unwrap();
        assert!(any.allows([1, 2, 3, 4], 443));
        assert!(!any.allows([1, 2, 3, 4], 444));
    }

    #[test]
    fn bad_peer_rules_say_why() {
        assert_eq!(PeerRule::parse("10.0.2.2"), Err(RuleError::MissingPorts));
        assert_eq!(PeerRule::parse("10.0.2.2/32"), Err(RuleError::MissingPorts));
        assert_eq!(PeerRule::parse("nothing"), Err(RuleError::MissingPorts));
        assert_eq!(PeerRule::parse("10.0.2.5/24:80"), Err(RuleError::HostBits));
        assert_eq!(PeerRule::parse("10.0.2.0/33:80"), Err(RuleError::BadPrefix));
        assert_eq!(PeerRule::parse("10.0.2.0/:80"), Err(RuleError::BadPrefix));
        assert_eq!(PeerRule::parse("10.0.2.0/-1:80"), Err(RuleError::BadPrefix));
        assert_eq!(PeerRule::parse("10.0.2:80"), Err(RuleError::BadAddress));
        assert_eq!(PeerRule::parse("10.0.2.2.1:80"), Err(RuleError::BadAddress));
        assert_eq!(PeerRule::parse("256.0.0.1:80"), Err(RuleError::BadAddress));
        assert_eq!(PeerRule::parse("10.0.2.2:0"), Err(RuleError::BadPort));
        assert_eq!(PeerRule::parse("10.0.2.2:80-70"), Err(RuleError::EmptyRange));
        assert_eq!(PeerRule::parse("10.0.2.2:**"), Err(RuleError::BadPort));
        assert!(RuleError::HostBits.to_string().contains("prefix"));
    }

    #[test]
    fn rule_lists() {
        let r = NetRules::parse(["8080", "9000-9010"], ["10.0.2.2/32:8000-8100"]).unwrap();
        assert!(r.may_listen(8080) && r.may_listen(9005) && !r.may_listen(8081));
        assert!(r.may_connect([10, 0, 2, 2], 8000) && !r.may_connect([10, 0, 2, 2], 80));
        assert_eq!(NetRules::parse(["80", "x"], []), Err((RuleList::Listen, 1, RuleError::BadPort)));
        assert_eq!(NetRules::parse([], ["1.2.3.4:5", "1.2.3.4/8:5"]), Err((RuleList::Connect, 1, RuleError::HostBits)));
        let none = NetRules::default();
        assert!(!none.may_listen(80) && !none.may_connect([1, 2, 3, 4], 80));
    }
}
