//! Egress policy: where an instance's traffic may go.
//!
//! A destination is written `CIDR[:PORT]`: `10.1.2.0/24`, `10.1.2.0/24:5432`,
//! `203.0.113.7` (a bare address is one host, `/32` or `/128`). An IPv6 network
//! with a port is bracketed, `[fd00::/8]:443`; without one the brackets are
//! optional (`fd00::/8`, `[fd00::/8]`). A port covers TCP and UDP. Parsing is
//! strict: a prefix too long for the family, a port 0 or above 65535, leading
//! zeros, host names, spaces or anything else are refused with a message naming the
//! value ([`destination_pattern`] is the same language as a regular expression). Host
//! bits past the prefix are cleared, as iptables does (`10.1.2.3/24` is `10.1.2.0/24`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

const V4: &str = r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)";
const H: &str = "[0-9a-fA-F]{1,4}";

/// The destinations [`Destination::parse`] accepts, as an ECMA-262 regular expression
/// (for the OpenAPI document).
pub fn destination_pattern() -> String {
    let (v4, h) = (V4, H);
    // IPv6: eight groups, or fewer around one `::`, or six (fewer around `::`) before an IPv4 tail.
    let mut v6 = vec![format!("({h}:){{7}}{h}"), format!("({h}:){{6}}{v4}"), format!("::({h}:){{0,5}}{v4}")];
    v6.push(format!("::({h}:){{0,6}}{h}"));
    v6.push("::".to_string());
    v6.push(format!("({h}:){{7}}:"));
    for before in 1..=6 {
        v6.push(format!("({h}:){{{before}}}:({h}(:{h}){{0,{}}})?", 6 - before));
        if before <= 5 {
            v6.push(format!("({h}:){{{before}}}:({h}:){{0,{}}}{v4}", 5 - before));
        }
    }
    let v6 = format!("({})", v6.join("|"));
    let p4 = r"(/(3[0-2]|[12]?\d))?";
    let p6 = r"(/(12[0-8]|1[01]\d|[1-9]?\d))?";
    let port = r"(:([1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5]))?";
    format!("^({v4}{p4}{port}|\\[{v4}{p4}\\]{port}|{v6}{p6}|\\[{v6}{p6}\\]{port})$")
}

/// Most destinations one instance's `allow` list may hold.
pub const MAX_ALLOW: usize = 64;

/// An IP network: an address with every bit past `prefix` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// A network, refused when `prefix` is too long for the family. Host bits past
    /// the prefix are cleared (`10.1.2.3/24` is `10.1.2.0/24`), as iptables does.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        Ok(Cidr { addr: mask(addr, prefix), prefix })
    }

    /// Whether this is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let digits = no_leading_zero(p) && p.len() <= 3;
                let prefix: u8 =
                    p.parse().ok().filter(|_| digits).ok_or_else(|| format!("`{p}` is not a prefix length"))?;
                (a, Some(prefix))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Cidr::new(addr, prefix)
    }
}

/// Decimal digits without a leading zero (`0` itself is fine).
fn no_leading_zero(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
}

/// A destination: a network and optionally one port (TCP and UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub net: Cidr,
    pub port: Option<u16>,
}

impl Destination {
    /// Parses `CIDR[:PORT]` (see the module docs); the error names `s`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_inner(s).map_err(|why| format!("`{s}` is not CIDR[:PORT]: {why}"))
    }

    fn parse_inner(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace".into());
        }
        let (net, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or("`[` without `]`")?;
            match after {
                "" => (inner, None),
                _ => (inner, Some(after.strip_prefix(':').ok_or("expected `:PORT` after `]`")?)),
            }
        } else if s.matches(':').count() == 1 {
            let (n, p) = s.split_once(':').unwrap_or((s, ""));
            (n, Some(p))
        } else {
            // No colon (IPv4), or an IPv6 network without a port.
            (s, None)
        };
        let net: Cidr = net.parse()?;
        let port = match port {
            None => None,
            Some(p) => {
                let digits = no_leading_zero(p) && p.len() <= 5;
                let n: u32 = p.parse().ok().filter(|_| digits).ok_or_else(|| format!("`{p}` is not a port"))?;
                if !(1..=65535).contains(&n) {
                    return Err(format!("port {n} is not within 1-65535"));
                }
                Some(n as u16)
            }
        };
        Ok(Destination { net, port })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net.is_ipv6()) {
            (None, _) => write!(f, "{}", self.net),
            (Some(p), false) => write!(f, "{}:{p}", self.net),
            (Some(p), true) => write!(f, "[{}]:{p}", self.net),
        }
    }
}

impl FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Destination::parse(s)
    }
}

/// An instance's egress policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Egress {
    /// The public internet (the server's default policy): no private, link-local,
    /// loopback, multicast or CGNAT ranges, not the host, not other instances.
    #[default]
    Internet,
    /// Nothing at all, not even DNS (replies to connections made to it still flow).
    None,
    /// Only these destinations, plus DNS to the host's resolvers. They may be private
    /// or the host itself (the server's own ports excepted).
    Allow(Vec<Destination>),
}

impl Egress {
    /// `internet`, `none` or `allow`.
    pub fn kind(&self) -> &'static str {
        match self {
            Egress::Internet => "internet",
            Egress::None => "none",
            Egress::Allow(_) => "allow",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Word(String),
    Allow { allow: Vec<String> },
}

impl Serialize for Egress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Egress::Internet => Repr::Word("internet".into()),
            Egress::None => Repr::Word("none".into()),
            Egress::Allow(list) => Repr::Allow { allow: list.iter().map(|d| d.to_string()).collect() },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Repr::deserialize(d)? {
            Repr::Word(w) if w == "internet" => Ok(Egress::Internet),
            Repr::Word(w) if w == "none" => Ok(Egress::None),
            Repr::Word(w) => Err(D::Error::custom(format!("unknown egress `{w}`"))),
            Repr::Allow { allow } => allow
                .iter()
                .map(|s| Destination::parse(s))
                .collect::<Result<_, _>>()
                .map(Egress::Allow)
                .map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Destination::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn destinations_parse_and_print_canonically() {
        assert_eq!(ok("10.1.2.0/24:5432"), "10.1.2.0/24:5432");
        assert_eq!(ok("10.1.2.0/24"), "10.1.2.0/24");
        assert_eq!(ok("10.1.2.3/24"), "10.1.2.0/24");
        assert_eq!(ok("fd00::1/8"), "fd00::/8");
        for v6 in [
            "1:2:3:4:5:6:7::",
            "1::",
            "::",
            "1:2:3:4:5:6:1.2.3.4",
            "::ffff:1.2.3.4",
            "1::2:3:4:5:6:7",
            "1:2::3:1.2.3.4",
        ] {
            ok(v6);
        }
        assert_eq!(ok("203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok("203.0.113.7:80"), "203.0.113.7/32:80");
        assert_eq!(ok("[10.0.0.0/8]:1"), "10.0.0.0/8:1");
        assert_eq!(ok("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(ok("fd00::/8"), "fd00::/8");
        assert_eq!(ok("[fd00::/8]"), "fd00::/8");
        assert_eq!(ok("[fd00::/8]:443"), "[fd00::/8]:443");
        assert_eq!(ok("[2001:db8::1]:65535"), "[2001:db8::1/128]:65535");
        assert_eq!(ok("::1"), "::1/128");
        let d = Destination::parse("[fd00::/8]:443").unwrap();
        assert!(d.net.is_ipv6() && d.port == Some(443) && d.net.prefix == 8);
        assert!(d.net.contains("fd12::1".parse().unwrap()));
        assert!(!d.net.contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn bad_destinations_are_refused_naming_the_value() {
        for bad in [
            "",
            "10.0.0.0/08",
            "10.0.0.0/8:080",
            "010.0.0.0/8",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/8:0",
            "10.0.0.0/8:65536",
            "10.0.0.0/8:",
            "10.0.0.0/8:http",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0/8",
            "example.com",
            "[fd00::/8]443",
            "[fd00::/8:443",
            "fd00::/8:443x",
            "10.0.0.0/8 ",
            " 10.0.0.0/8",
            "10.0.0.0/8:+80",
            "1.2.3.4:5:6",
        ] {
            let err = Destination::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn policies_round_trip_as_json() {
        for (json, want) in [
            (r#""internet""#, Egress::Internet),
            (r#""none""#, Egress::None),
            (
                r#"{"allow":["10.0.0.0/8:5432","[fd00::/8]:443"]}"#,
                Egress::Allow(vec![
                    Destination::parse("10.0.0.0/8:5432").unwrap(),
                    Destination::parse("[fd00::/8]:443").unwrap(),
                ]),
            ),
        ] {
            let got: Egress = serde_json::from_str(json).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), json);
        }
        assert!(serde_json::from_str::<Egress>(r#""all""#).is_err());
        assert!(serde_json::from_str::<Egress>(r#"{"allow":["nope"]}"#).is_err());
    }
}
