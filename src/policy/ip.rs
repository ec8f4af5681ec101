//! `ip_control` (SPEC §4.1), trusted proxies and the client address.
//!
//! Address lists are compiled into sorted, merged ranges (one vector for IPv4,
//! one for IPv6) so that a lookup is a binary search whatever the list size.
//! IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as IPv4 everywhere:
//! in list entries, in the socket peer and in `X-Forwarded-For`.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `::ffff:0:0/96`, the IPv4-mapped block, as a `u128` range.
const MAPPED_START: u128 = 0xffff_u128 << 32;
const MAPPED_END: u128 = MAPPED_START | 0xffff_ffff;

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; every other address is returned as is.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A set of addresses: sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Builds a set from entries that are IPs or CIDRs (host bits of a CIDR are
    /// ignored: `10.1.2.3/8` means `10.0.0.0/8`). A bad entry is an error naming it.
    pub fn from_entries<'a, I: IntoIterator<Item = &'a str>>(entries: I) -> Result<IpSet, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries {
            let net = parse_entry(entry)?;
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    let (s, e) = (u128::from(n.network()), u128::from(n.broadcast()));
                    // The part of a v6 entry inside ::ffff:0:0/96 also matches the
                    // (normalised) IPv4 addresses it maps.
                    let (ms, me) = (s.max(MAPPED_START), e.min(MAPPED_END));
                    if ms <= me {
                        v4.push((ms as u32, me as u32));
                    }
                    v6.push((s, e));
                }
            }
        }
        Ok(IpSet {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` (normalised first) is in the set. O(log n).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalize(ip) {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, String> {
    let net = if entry.contains('/') {
        entry.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        entry.parse::<IpAddr>().ok().map(IpNet::from)
    };
    let net = net.ok_or_else(|| format!("invalid IP or CIDR {entry:?}"))?;
    // `::ffff:10.0.0.0/104` is written as `10.0.0.0/8`.
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.network().to_ipv4_mapped() {
                if let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return Ok(IpNet::V4(v4net));
                }
            }
        }
    }
    Ok(net)
}

fn merge<T: Copy + Ord + num::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent (last end + 1 == s, without overflowing).
            Some(last) if s <= last.1 || T::succ(last.1) == Some(s) => {
                if e > last.1 {
                    last.1 = e;
                }
            }
            _ => out.push((s, e)),
        }
    }
    out.shrink_to_fit();
    out
}

fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // First range whose start is > x; the candidate is the one before it.
    let i = ranges.partition_point(|&(s, _)| s <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// Tiny private helper trait: checked successor for the two integer widths.
mod num {
    pub trait One: Sized {
        fn succ(v: Self) -> Option<Self>;
    }
    impl One for u32 {
        fn succ(v: u32) -> Option<u32> {
            v.checked_add(1)
        }
    }
    impl One for u128 {
        fn succ(v: u128) -> Option<u128> {
            v.checked_add(1)
        }
    }
}

/// Splits an `ips` field: entries separated by `;`, `,` or newlines, trimmed,
/// empty entries skipped.
fn split_list(ips: &str) -> impl Iterator<Item = &str> {
    ips.split([';', ',', '\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpMode {
    /// Only listed sources pass.
    White,
    /// Listed sources are refused.
    Black,
}

/// A compiled `ip_control` plugin.
#[derive(Debug, Clone)]
pub struct IpPolicy {
    mode: IpMode,
    set: IpSet,
}

impl IpPolicy {
    /// `mode` is `white` or `black` (case-insensitive); `ips` lists IPs and CIDRs,
    /// IPv4 or IPv6, separated by `;` or newlines (`,` also accepted). A list with no
    /// entry is refused: a white list would block everyone and a black list nobody.
    pub fn parse(mode: &str, ips: &str) -> Result<IpPolicy, String> {
        let mode = match mode.trim().to_ascii_lowercase().as_str() {
            "white" => IpMode::White,
            "black" => IpMode::Black,
            other => {
                return Err(format!(
                    "ip_control mode must be white or black, not {other:?}"
                ))
            }
        };
        let set = IpSet::from_entries(split_list(ips))?;
        if set.is_empty() {
            return Err("ip_control lists no IP or CIDR".into());
        }
        Ok(IpPolicy { mode, set })
    }

    pub fn mode(&self) -> IpMode {
        self.mode
    }

    /// Whether a request from `ip` may pass (refusal is a 403).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let listed = self.set.contains(ip);
        match self.mode {
            IpMode::White => listed,
            IpMode::Black => !listed,
        }
    }
}

/// `[server] trusted_proxies`: peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    set: IpSet,
}

impl TrustedProxies {
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let set = IpSet::from_entries(entries.iter().map(|s| s.trim()))
            .map_err(|e| format!("trusted_proxies: {e}"))?;
        Ok(TrustedProxies { set })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.contains(ip)
    }
}

/// The client address (SPEC §4.1): the socket peer, unless the peer is a trusted
/// proxy; then `X-Forwarded-For` (every instance, in order, comma-separated) is
/// walked from the right, skipping trusted addresses, and the first untrusted one is
/// the client. An unparsable entry stops the walk at the last trusted hop (nothing
/// left of a garbage entry can be believed); when every entry is trusted, the
/// left-most one is returned. The result is normalised (`::ffff:a.b.c.d` → IPv4).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = normalize(peer);
    if !trusted.contains(current) {
        return current;
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return current;
        };
        for item in text.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(item.trim()) else {
                return current;
            };
            current = normalize(ip);
            if !trusted.contains(current) {
                return current;
            }
        }
    }
    current
}

/// An `X-Forwarded-For` element: a bare IP, or (as some proxies write it) an
/// `ip:port`, `[v6]` or `[v6]:port`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// Key for per-IP limits: IPv6 addresses masked to `/prefix` (clamped to 0..=128)
/// so that one client rotating through its /64 is counted once; IPv4 (including
/// IPv4-mapped IPv6) unchanged.
pub fn bucket_ipv6(ip: IpAddr, prefix: u8) -> IpAddr {
    match normalize(ip) {
        IpAddr::V6(v6) => {
            let prefix = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn white_list_cidr_edges() {
        let p = IpPolicy::parse("white", "10.0.0.0/8;127.0.0.1\n 192.168.1.0/24 ;;").unwrap();
        assert!(p.allows(ip("10.0.0.0")));
        assert!(p.allows(ip("10.255.255.255")));
        assert!(!p.allows(ip("9.255.255.255")));
        assert!(!p.allows(ip("11.0.0.0")));
        assert!(p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("127.0.0.2")));
        assert!(p.allows(ip("192.168.1.255")));
        assert!(!p.allows(ip("192.168.2.0")));
        assert!(!p.allows(ip("::1")));
    }

    #[test]
    fn black_list() {
        let p = IpPolicy::parse("BLACK", "1.2.3.4; 2001:db8::/32").unwrap();
        assert!(!p.allows(ip("1.2.3.4")));
        assert!(p.allows(ip("1.2.3.5")));
        assert!(!p.allows(ip("2001:db8::1")));
        assert!(!p.allows(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(p.allows(ip("2001:db9::")));
        assert_eq!(p.mode(), IpMode::Black);
    }

    #[test]
    fn whole_spaces_and_host_bits() {
        let p = IpPolicy::parse("white", "0.0.0.0/0").unwrap();
        assert!(p.allows(ip("0.0.0.0")));
        assert!(p.allows(ip("255.255.255.255")));
        assert!(!p.allows(ip("::2")));
        let p = IpPolicy::parse("white", "::/0").unwrap();
        assert!(p.allows(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        // ::/0 contains the mapped block, hence every IPv4 client too.
        assert!(p.allows(ip("8.8.8.8")));
        // Host bits are ignored.
        let p = IpPolicy::parse("white", "10.1.2.3/8").unwrap();
        assert!(p.allows(ip("10.200.0.1")));
        let p = IpPolicy::parse("white", "255.255.255.255/32").unwrap();
        assert!(p.allows(ip("255.255.255.255")));
        assert!(!p.allows(ip("255.255.255.254")));
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let p = IpPolicy::parse("white", "10.0.0.0/8").unwrap();
        assert!(p.allows(ip("::ffff:10.1.2.3")));
        assert!(!p.allows(ip("::ffff:11.1.2.3")));
        let p = IpPolicy::parse("white", "::ffff:192.168.0.0/112").unwrap();
        assert!(p.allows(ip("192.168.3.4")));
        assert!(p.allows(ip("::ffff:192.168.3.4")));
        assert!(!p.allows(ip("192.169.0.0")));
        let p = IpPolicy::parse("black", "::ffff:1.2.3.4").unwrap();
        assert!(!p.allows(ip("1.2.3.4")));
    }

    #[test]
    fn bad_entries_are_named() {
        let e = IpPolicy::parse("white", "10.0.0.1;10.0.0.300").unwrap_err();
        assert!(e.contains("10.0.0.300"), "{e}");
        let e = IpPolicy::parse("white", "10.0.0.0/33").unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(IpPolicy::parse("white", "example.com").is_err());
        assert!(IpPolicy::parse("white", "::1/129").is_err());
        assert!(IpPolicy::parse("grey", "1.1.1.1").is_err());
        assert!(IpPolicy::parse("white", " ; \n ").is_err());
    }

    #[test]
    fn ranges_merge() {
        let s = IpSet::from_entries(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "10.0.1.0/24"])
            .unwrap();
        assert_eq!(
            s.v4,
            vec![(
                u32::from(Ipv4Addr::new(10, 0, 0, 0)),
                u32::from(Ipv4Addr::new(10, 0, 1, 255))
            )]
        );
        let s = IpSet::from_entries(["255.255.255.255", "255.255.255.254", "0.0.0.0"]).unwrap();
        assert_eq!(s.v4.len(), 2);
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("0.0.0.0")));
        assert!(!s.contains(ip("0.0.0.1")));
    }

    #[test]
    fn large_list_lookup() {
        let entries: Vec<String> = (0..5000u32)
            .map(|i| {
                let a = Ipv4Addr::from(0x0b00_0000 + i * 4);
                format!("{a}/31")
            })
            .collect();
        let p = IpPolicy::parse("white", &entries.join(";")).unwrap();
        assert!(p.allows(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 4 * 1234 + 1))));
        assert!(!p.allows(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 4 * 1234 + 2))));
        assert_eq!(p.set.v4.len(), 5000);
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("8.8.8.8"), &h, &t), ip("8.8.8.8"));
        assert_eq!(client_ip(ip("::ffff:8.8.8.8"), &h, &t), ip("8.8.8.8"));
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &none), ip("10.0.0.1"));
    }

    #[test]
    fn spoofed_left_entries_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client sent "6.6.6.6" itself; our proxy appended the real peer.
        let h = xff(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.7"));
    }

    #[test]
    fn trusted_chain_is_skipped() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.1.1.1", "fd00::1 , 10.2.2.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.7"));
        // Everything trusted: the left-most entry.
        let h = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_at_last_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1, garbage, 10.3.3.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.3.3.3"));
        let h = xff(&["1.1.1.1, "]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
        let h = xff(&[""]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.1.1.1, \xff").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_entries_with_ports_and_v6() {
        let t = trusted(&["10.0.0.0/8", "::1"]);
        let h = xff(&["203.0.113.9:4711"]);
        assert_eq!(client_ip(ip("::1"), &h, &t), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::5]:443"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8::5"));
        let h = xff(&["[2001:db8::6]"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8::6"));
        let h = xff(&["::ffff:198.51.100.1"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &h, &t), ip("198.51.100.1"));
    }

    #[test]
    fn trusted_proxies_errors() {
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn ipv6_buckets() {
        assert_eq!(
            bucket_ipv6(ip("2001:db8:1:2:3:4:5:6"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            bucket_ipv6(ip("2001:db8:1:2:3:4:5:6"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(bucket_ipv6(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(bucket_ipv6(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(bucket_ipv6(ip("2001:db8::1"), 200), ip("2001:db8::1"));
        assert_eq!(bucket_ipv6(ip("1.2.3.4"), 64), ip("1.2.3.4"));
        assert_eq!(bucket_ipv6(ip("::ffff:1.2.3.4"), 64), ip("1.2.3.4"));
    }
}
