//! Which addresses a guest may reach when its policy keeps it to the public internet: the
//! check made on every address a name resolves to, just before connecting to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public, or `None` when it is: loopback, private, shared (CGNAT),
/// link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254 included), unspecified,
/// multicast, broadcast, reserved, and every IPv6 form that carries one of those IPv4
/// addresses (IPv4-mapped, IPv4-compatible, NAT64, 6to4) or can reach anything (Teredo).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if a == 198 && (18..20).contains(&b) {
        Some("benchmarking")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4).map(|_| "an IPv4-mapped form of a non-public address");
    }
    match segments {
        // ::a.b.c.d, IPv4-compatible (deprecated, still routed by some stacks).
        [0, 0, 0, 0, 0, 0, hi, lo] => non_public_v4(embedded(hi, lo))
            .map(|_| "an IPv4-compatible form of a non-public address"),
        // 64:ff9b::a.b.c.d, NAT64 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            non_public_v4(embedded(hi, lo)).map(|_| "a NAT64 form of a non-public address")
        }
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215).
        [0x64, 0xff9b, 1, ..] => Some("local-use NAT64"),
        // 2002:AABB:CCDD::/48, 6to4 (RFC 3056).
        [0x2002, hi, lo, ..] => {
            non_public_v4(embedded(hi, lo)).map(|_| "a 6to4 form of a non-public address")
        }
        // 2001:0::/32, Teredo: tunnels to any IPv4 address.
        [0x2001, 0, ..] => Some("Teredo"),
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("unique local (private)"),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("link-local"),
        [first, ..] if first & 0xffc0 == 0xfec0 => Some("site-local"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Option<&'static str> {
        non_public(text.parse().unwrap())
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(check(ip).is_some(), "{ip} passed as public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
        ] {
            assert_eq!(check(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_non_public_ipv4_addresses_are_refused() {
        for ip in [
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(check(ip).is_some(), "{ip} passed as public");
        }
        for ip in [
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(check(ip), None, "{ip}");
        }
    }
}
