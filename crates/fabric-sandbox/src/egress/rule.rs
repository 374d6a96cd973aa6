//! Egress rules: `scheme://host[:port]`, what an operator writes to allow a destination,
//! and the one function that decides whether a request's scheme, host and port match it.

use std::fmt;
use std::net::IpAddr;

/// The schemes a rule may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// The host part of a rule or of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// `*.suffix`: any name of one or more labels followed by `.suffix`.
    Wildcard(String),
    /// An IP address literal (`127.0.0.1`, `[::1]`).
    Ip(IpAddr),
}

/// One allowed destination: a request matches when its scheme and port are exactly these
/// and its host matches [`Host`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

/// A destination a request names: what a rule is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Wildcard(suffix) => write!(f, "*.{suffix}"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl Rule {
    /// Parses `scheme://host[:port]`. The scheme is `http` or `https`; the host a DNS
    /// name, `*.` and a DNS name, an IPv4 address or a bracketed IPv6 address; the port
    /// 1 to 65535, the scheme's default when absent. No user, path, query or fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = |why: &str| format!("egress rule {text:?}: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| fail("expected scheme://host[:port]"))?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| fail("the scheme must be http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(fail("a rule names no path, query or fragment"));
        }
        if rest.contains('@') {
            return Err(fail("a rule names no user or password"));
        }
        let (host, port) = split_port(rest).map_err(|why| fail(&why))?;
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            Host::Wildcard(dns_name(suffix).map_err(|why| fail(&why))?)
        } else {
            parse_host(host).map_err(|why| fail(&why))?
        };
        Ok(Rule {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// Whether a request to `to` is allowed by this rule: the same scheme and port, and
    /// the same name (a wildcard: a name ending in `.suffix` with at least one label
    /// before it) or the same IP literal. A name never matches an IP rule, nor the
    /// reverse, whatever the name resolves to.
    pub fn matches(&self, to: &Destination) -> bool {
        if self.scheme != to.scheme || self.port != to.port {
            return false;
        }
        match (&self.host, &to.host) {
            (Host::Name(rule), Host::Name(name)) => rule == name,
            (Host::Wildcard(suffix), Host::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
            (Host::Ip(rule), Host::Ip(ip)) => rule == ip,
            _ => false,
        }
    }
}

impl Destination {
    /// The destination of a request from its scheme and authority (`host[:port]`, as a
    /// guest set it). Refused, with the reason, when the scheme is not http or https, the
    /// authority carries a user (`allowed@evil`), or the host is not a DNS name or an IP
    /// literal (numeric spellings such as `2130706433` or `0x7f.1` included).
    pub fn parse(scheme: &str, authority: &str) -> Result<Self, String> {
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| format!("the scheme {scheme:?} is neither http nor https"))?;
        if authority.contains('@') {
            return Err("the authority carries a user name".into());
        }
        let (host, port) = split_port(authority)?;
        Ok(Destination {
            scheme,
            host: parse_host(host)?,
            port: port.unwrap_or(scheme.default_port()),
        })
    }
}

/// `host[:port]` into the host and the port, if any; a bracketed IPv6 host keeps its
/// brackets.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return Err(format!("unexpected {rest:?} after the IPv6 address")),
                }
            }
            None => return Err("an IPv6 address without its closing ]".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(format!("the port {text:?} is not 1 to 65535")),
        },
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<Host, String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("{host:?} is not an IPv6 address"));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    dns_name(host).map(Host::Name)
}

/// A DNS name in lower case without its trailing dot: labels of 1 to 63 letters, digits
/// and hyphens (not at either end), 253 bytes at most, and a last label that starts with
/// a letter, so that no numeric IPv4 spelling (`2130706433`, `0x7f000001`, `0177.1`),
/// which resolvers would take for an address, passes for a name.
fn dns_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let bad = |why: &str| Err(format!("{text:?} is not a host name: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("empty or over 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("a label is empty or over 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with a hyphen");
        }
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if !last.as_bytes()[0].is_ascii_alphabetic() {
        return bad("its last label does not start with a letter (a numeric address?)");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(url: &str) -> Destination {
        let (scheme, authority) = url.split_once("://").unwrap();
        Destination::parse(scheme, authority).unwrap()
    }

    #[test]
    fn rules_parse_with_default_ports_and_refuse_what_they_cannot_hold() {
        let rule = Rule::parse("https://API.Weather.example").unwrap();
        assert_eq!(rule.to_string(), "https://api.weather.example:443");
        assert_eq!(Rule::parse("http://127.0.0.1:9000/").unwrap().port, 9000);
        assert_eq!(
            Rule::parse("http://[::1]").unwrap().host,
            Host::Ip("::1".parse().unwrap())
        );
        for bad in [
            "api.example",
            "ftp://api.example",
            "https://api.example/v1",
            "https://api.example?x",
            "https://user@api.example",
            "https://api.example:0",
            "https://api.example:99999",
            "https://api.example:",
            "https://api.example:+80",
            "https://*.",
            "https://*",
            "https://a..b",
            "https://-a.example",
            "https://2130706433",
            "https://0x7f000001",
            "https://[::1",
            "https://a_b.example",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn scheme_host_and_port_must_match_exactly() {
        let rule = Rule::parse("https://api.example").unwrap();
        assert!(rule.matches(&to("https://api.example")));
        assert!(rule.matches(&to("https://API.example.:443")));
        assert!(!rule.matches(&to("http://api.example")));
        assert!(!rule.matches(&to("https://api.example:8443")));
        assert!(!rule.matches(&to("https://api.example.evil")));
        assert!(!rule.matches(&to("https://evilapi.example")));
        assert!(!rule.matches(&to("https://x.api.example")));
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels_but_not_the_bare_suffix() {
        let rule = Rule::parse("https://*.cdn.example:8443").unwrap();
        assert!(rule.matches(&to("https://a.cdn.example:8443")));
        assert!(rule.matches(&to("https://a.b.cdn.example:8443")));
        assert!(!rule.matches(&to("https://cdn.example:8443")));
        assert!(!rule.matches(&to("https://acdn.example:8443")));
        assert!(!rule.matches(&to("https://a.cdn.example")));
    }

    #[test]
    fn ip_rules_match_only_that_literal() {
        let rule = Rule::parse("http://127.0.0.1:9000").unwrap();
        assert!(rule.matches(&to("http://127.0.0.1:9000")));
        assert!(!rule.matches(&to("http://localhost:9000")));
        assert!(!rule.matches(&to("http://[::ffff:127.0.0.1]:9000")));
        assert!(!rule.matches(&to("http://127.0.0.2:9000")));
    }

    #[test]
    fn destinations_refuse_users_and_numeric_spellings() {
        for (scheme, authority) in [
            ("http", "allowed.example@evil.example"),
            ("http", "2130706433"),
            ("http", "0x7f000001"),
            ("http", "0177.0.0.1"),
            ("http", "127.1"),
            ("ftp", "api.example"),
            ("http", "api.example:http"),
            ("http", ""),
        ] {
            assert!(
                Destination::parse(scheme, authority).is_err(),
                "{scheme}://{authority} parsed"
            );
        }
    }
}
