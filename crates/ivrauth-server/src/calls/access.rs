//! Who may reach the VoiceXML front-end: HTTP Basic credentials on the start URL and an
//! allow-list of source addresses (CIDR ranges), the two credentials VoiceXML platforms
//! such as Cisco CVP and Avaya Experience Portal can present. Not for the per-call secret
//! of later URLs (that is checked against the sealed continuation in `session.rs`).
//!
//! The source address is the TCP peer (the `ConnectInfo<SocketAddr>` extension `serve`
//! inserts). `X-Forwarded-For` is ignored unless the peer is one of the configured trusted
//! proxies; then the address is the right-most one in that header that is not itself a
//! trusted proxy (the left part of the header is whatever the client wrote, so it is never
//! read past the first untrusted hop). Without a known peer address an allow-list admits
//! nobody. A credential is compared through its SHA-256 digest in constant time, and no
//! refusal says more than that the request was refused.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use ivrauth_core::secret::Secret;

/// An address range such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a range of
/// one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or CIDR range (such as `10.0.0.0/8` or `2001:db8::/32`)")]
    Syntax(String),
    #[error("`{given}` has a prefix length over {max}")]
    Prefix { given: String, max: u8 },
    #[error("`{given}` has bits set past its prefix length; did you mean `{suggestion}`?")]
    HostBits { given: String, suggestion: String },
}

impl Cidr {
    /// The range's prefix length (0 matches every address of its family).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is in the range. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`,
    /// as dual-stack sockets report IPv4 peers) is matched as the IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_bits(u128::from(u32::from(a)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_bits(u128::from(a), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `value` (an address of `width` bits) with the bits past `prefix` cleared.
fn mask_bits(value: u128, width: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(width.saturating_sub(prefix));
    if host_bits >= 128 {
        0
    } else {
        (value >> host_bits) << host_bits
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || CidrError::Syntax(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| CidrError::Prefix {
                    given: text.to_owned(),
                    max,
                })?,
            Some(_) => return Err(syntax()),
        };
        let (bits, masked) = match addr {
            IpAddr::V4(a) => {
                let v = u128::from(u32::from(a));
                (v, mask_bits(v, 32, prefix))
            }
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v, mask_bits(v, 128, prefix))
            }
        };
        if bits != masked {
            let network = match addr {
                IpAddr::V4(_) => {
                    IpAddr::from(std::net::Ipv4Addr::from(u32::try_from(masked).unwrap_or(0)))
                }
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(masked)),
            };
            return Err(CidrError::HostBits {
                given: text.to_owned(),
                suggestion: format!("{network}/{prefix}"),
            });
        }
        Ok(Cidr {
            network: addr,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The address a request came from: the TCP peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` address that is not a trusted proxy itself. `None` when
/// the peer is unknown, or a trusted proxy sent a forwarded address that does not parse
/// (then nothing can be vouched for).
pub fn source_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let trusted = |a: IpAddr| trusted_proxies.iter().any(|c| c.contains(a));
    if !trusted(peer) {
        return Some(peer);
    }
    // Several headers form one list, in order.
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().ok()?;
        hops.extend(text.split(',').map(str::trim));
    }
    let mut source = peer;
    for hop in hops.iter().rev() {
        let addr = forwarded_addr(hop)?;
        source = addr;
        if !trusted(addr) {
            break;
        }
    }
    Some(source)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`,
/// `v4:port`).
fn forwarded_addr(hop: &str) -> Option<IpAddr> {
    if let Ok(a) = hop.parse::<IpAddr>() {
        return Some(a.to_canonical());
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// What a request's `Authorization: Basic` header says, if it has one that decodes
/// (RFC 7617: base64 of `user:password`, split at the first colon).
pub struct BasicCredentials {
    pub username: String,
    pub password: Secret<String>,
}

/// The request's Basic credentials; `None` when there are none or they do not decode.
pub fn basic_credentials(headers: &HeaderMap) -> Option<BasicCredentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Secret::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(decoded.expose()).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(BasicCredentials {
        username: username.to_owned(),
        password: Secret::new(password.to_owned()),
    })
}

/// Whether `given` names `username` with one of `passwords`; every comparison runs in
/// constant time over SHA-256 digests, so neither the length nor the content of a
/// configured value shows in the timing.
pub fn basic_matches(
    given: &BasicCredentials,
    username: &str,
    passwords: &[Secret<String>],
) -> bool {
    let user_ok = digest_eq(&given.username, username);
    let mut password_ok = subtle::Choice::from(0u8);
    for p in passwords {
        password_ok |= digest(given.password.expose()).ct_eq(&digest(p.expose()));
    }
    bool::from(user_ok & password_ok)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn digest_eq(a: &str, b: &str) -> subtle::Choice {
    digest(a).ct_eq(&digest(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::HeaderValue;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_exactly_their_addresses() {
        let r = cidr("10.0.0.0/8");
        assert!(r.contains(ip("10.255.1.2")));
        assert!(!r.contains(ip("11.0.0.1")));
        // An IPv4 peer on a dual-stack socket.
        assert!(r.contains(ip("::ffff:10.1.2.3")));
        assert!(!r.contains(ip("2001:db8::1")));
        let one = cidr("192.0.2.7");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let any = cidr("0.0.0.0/0");
        assert!(any.contains(ip("203.0.113.9")) && any.prefix() == 0);
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_ranges_are_named_with_a_fix() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string(),
            "`10.0.0.1/8` has bits set past its prefix length; did you mean `10.0.0.0/8`?"
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 32, .. })
        ));
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/+8",
            "::/a",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.9.9.9, 192.0.2.50"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("172.16.0.2"));
        let peer = Some(ip("127.0.0.1"));
        // Not trusted: the header is ignored.
        assert_eq!(source_address(peer, &h, &[]), peer);
        // Trusted: the right-most hop that is not a trusted proxy.
        let proxies = [cidr("127.0.0.1"), cidr("172.16.0.0/12")];
        assert_eq!(source_address(peer, &h, &proxies), Some(ip("192.0.2.50")));
        // A peer that is not a proxy is the source, whatever it forwards.
        assert_eq!(
            source_address(Some(ip("192.0.2.1")), &h, &proxies),
            Some(ip("192.0.2.1"))
        );
        // A garbled hop vouches for nothing.
        h.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(source_address(peer, &h, &proxies), None);
        // No peer, no source.
        assert_eq!(source_address(None, &HeaderMap::new(), &[]), None);
        // Ports are allowed in hops.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::5]:443"),
        );
        assert_eq!(source_address(peer, &h, &proxies), Some(ip("2001:db8::5")));
    }

    #[test]
    fn basic_credentials_match_only_the_configured_pair() {
        let header = |user: &str, pw: &str| {
            let mut h = HeaderMap::new();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
            );
            basic_credentials(&h).unwrap()
        };
        let passwords = [
            Secret::new("new:pw".to_owned()),
            Secret::new("old".to_owned()),
        ];
        // The password may contain a colon; the user name may not.
        assert!(basic_matches(&header("cvp", "new:pw"), "cvp", &passwords));
        assert!(basic_matches(&header("cvp", "old"), "cvp", &passwords));
        assert!(!basic_matches(&header("cvp", "new"), "cvp", &passwords));
        assert!(!basic_matches(&header("avaya", "old"), "cvp", &passwords));
        assert!(!basic_matches(&header("cvp", "old"), "cvp", &[]));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic_credentials(&h).is_none());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert!(basic_credentials(&h).is_none());
    }
}
