//! Where outbound HTTP may go: the allow-list, the address classes refused unless an entry
//! names them, and the DNS resolver that applies both to every address a name resolves to.
//!
//! Refused classes ([`REFUSED`]): link-local (`169.254.0.0/16`, where clouds serve instance
//! metadata and credentials, and `fe80::/10`), the cloud metadata addresses outside it
//! (`fd00:ec2::254`, `100.100.100.200`, `168.63.129.16`), "this network" (`0.0.0.0/8`, `::`,
//! which Linux connects to the local host), multicast and broadcast; IPv6 forms that carry
//! an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`)
//! count as that address. An entry opens a refused address only when it names it or a range
//! inside the refused range: `169.254.169.254` or `169.254.0.0/16` do, `0.0.0.0/0` does not,
//! and no allow-list at all (`["*"]`) opens none. Loopback and private addresses are not
//! refused: local identity endpoints and the demo use them.
//!
//! Names are checked where the connection is made: [`GuardedResolver`] is the client's
//! resolver, so a name that resolves, or later re-resolves, to a refused address is refused
//! without anything being sent. Hosts that are IP literals never reach a resolver; callers
//! check them with [`OutboundPolicy::check_url_host`] before sending. This holds only for a
//! client that resolves names itself, i.e. one that uses no proxy.
//!
//! Not here: timeouts, redirects, https-only secrets (the callers' rules).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;

use crate::http::ConnectError;

/// Turns a host name into addresses. [`SystemLookup`] in production; tests supply their
/// own to make a name resolve wherever they need it.
#[async_trait]
pub trait HostLookup: Send + Sync {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

#[async_trait]
impl HostLookup for SystemLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Address classes outbound requests may not reach unless an allow-list entry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    LinkLocal,
    CloudMetadata,
    ThisNetwork,
    Multicast,
    Broadcast,
}

impl AddressClass {
    fn described(self) -> &'static str {
        match self {
            AddressClass::LinkLocal => {
                "a link-local address (169.254.0.0/16, fe80::/10: cloud instance metadata)"
            }
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::ThisNetwork => "an unspecified address (0.0.0.0/8, ::)",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
        }
    }
}

/// An IPv4 or IPv6 network: `addr` has no bits set after `prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpRange {
        IpRange {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(s: [u16; 8], prefix: u8) -> IpRange {
        let [a, b, c, d, e, f, g, h] = s;
        IpRange {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    fn single(addr: IpAddr) -> IpRange {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpRange { addr, prefix }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                same_prefix(u128::from(u32::from(net) ^ u32::from(a)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                same_prefix(u128::from(net) ^ u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }

    /// Whether `other` lies wholly inside this range.
    fn covers(&self, other: &IpRange) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

/// Whether the top `prefix` of `bits` bits of `diff` (two addresses xored) are all zero.
fn same_prefix(diff: u128, bits: u8, prefix: u8) -> bool {
    diff.checked_shr(u32::from(bits.saturating_sub(prefix)))
        .unwrap_or(0)
        == 0
}

/// The refused ranges, each with its class.
const REFUSED: &[(IpRange, AddressClass)] = &[
    (IpRange::v4(169, 254, 0, 0, 16), AddressClass::LinkLocal),
    (
        IpRange::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        AddressClass::LinkLocal,
    ),
    // AWS's IPv6 instance metadata endpoint.
    (
        IpRange::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        AddressClass::CloudMetadata,
    ),
    // Alibaba Cloud's metadata service.
    (
        IpRange::v4(100, 100, 100, 200, 32),
        AddressClass::CloudMetadata,
    ),
    // Azure's platform endpoint (WireServer).
    (
        IpRange::v4(168, 63, 129, 16, 32),
        AddressClass::CloudMetadata,
    ),
    (IpRange::v4(0, 0, 0, 0, 8), AddressClass::ThisNetwork),
    (IpRange::v6([0; 8], 128), AddressClass::ThisNetwork),
    (IpRange::v4(224, 0, 0, 0, 4), AddressClass::Multicast),
    (
        IpRange::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        AddressClass::Multicast,
    ),
    (IpRange::v4(255, 255, 255, 255, 32), AddressClass::Broadcast),
];

/// The IPv4 address an IPv6 address stands for, in the forms that reach it: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`, but not `::` or `::1`) and the NAT64
/// well-known prefix (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    let v4 = Ipv4Addr::new(a, b, c, d);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4),
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(v4) > 1 => Some(v4),
        _ => None,
    }
}

/// `ip` and, for an IPv6 address carrying an IPv4 one, that IPv4 address.
fn forms(ip: IpAddr) -> impl Iterator<Item = IpAddr> {
    let v4 = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    std::iter::once(ip).chain(v4)
}

/// The refused class of `ip` and the refused range it is in, if any.
fn refused_class(ip: IpAddr) -> Option<(AddressClass, IpRange, IpAddr)> {
    forms(ip).find_map(|f| {
        REFUSED
            .iter()
            .find(|(range, _)| range.contains(f))
            .map(|(range, class)| (*class, *range, f))
    })
}

/// One parsed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// An IP address (a /32 or /128) or a CIDR range, matched against resolved addresses.
    Range(IpRange),
    /// A lower-case ASCII domain without trailing dot.
    Domain(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub(crate) fn parse(entry: &str) -> Result<Self, ConnectError> {
        let invalid = || ConnectError::InvalidAllowedHost(entry.to_owned());
        let e = entry.trim();
        if let Some((addr, prefix)) = e.split_once('/') {
            return parse_range(entry, addr, prefix).ok_or_else(invalid)?;
        }
        let bare = e.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(HostPattern::Range(canonical_range(IpRange::single(ip))));
        }
        let (wildcard, name) = match e.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, e),
        };
        let domain = match url::Host::parse(name) {
            Ok(url::Host::Domain(d)) => normalize_domain(&d),
            Ok(url::Host::Ipv4(ip)) if !wildcard => {
                return Ok(HostPattern::Range(IpRange::single(IpAddr::V4(ip))))
            }
            Ok(url::Host::Ipv6(ip)) if !wildcard => {
                return Ok(HostPattern::Range(canonical_range(IpRange::single(
                    IpAddr::V6(ip),
                ))))
            }
            _ => return Err(invalid()),
        };
        if domain.is_empty() || domain.contains('*') {
            return Err(invalid());
        }
        Ok(if wildcard {
            HostPattern::Subdomains(format!(".{domain}"))
        } else {
            HostPattern::Domain(domain)
        })
    }

    /// Whether this name entry matches `host` (a name; IP entries never match names).
    fn matches_name(&self, host: &str) -> bool {
        match self {
            HostPattern::Domain(d) => normalize_domain(host) == *d,
            HostPattern::Subdomains(suffix) => {
                let h = normalize_domain(host);
                h.len() > suffix.len() && h.ends_with(suffix.as_str())
            }
            HostPattern::Range(_) => false,
        }
    }

    fn range(&self) -> Option<&IpRange> {
        match self {
            HostPattern::Range(r) => Some(r),
            _ => None,
        }
    }
}

/// `addr/prefix`: `None` when it is no CIDR range at all, `Some(Err)` when its host bits
/// are set.
fn parse_range(entry: &str, addr: &str, prefix: &str) -> Option<Result<HostPattern, ConnectError>> {
    let ip = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix = prefix.parse::<u8>().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return None;
    }
    let network = match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(
            u32::from(v4) & u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0),
        )),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6) & u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0),
        )),
    };
    if network != ip {
        return Some(Err(ConnectError::AllowedRangeHostBits {
            entry: entry.to_owned(),
            network: format!("{network}/{prefix}"),
        }));
    }
    Some(Ok(HostPattern::Range(canonical_range(IpRange {
        addr: ip,
        prefix,
    }))))
}

/// A range inside `::ffff:0:0/96` as the IPv4 range it maps.
fn canonical_range(r: IpRange) -> IpRange {
    match r.addr {
        IpAddr::V6(v6) if r.prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => IpRange {
                addr: IpAddr::V4(v4),
                prefix: r.prefix - 96,
            },
            None => r,
        },
        _ => r,
    }
}

fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// Why an address, or a host, may not be reached. Its text names the host and the address
/// class, never the address a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub(crate) struct Refusal {
    host: String,
    /// `host` is a name (the refusal is about what it resolved to), not an IP literal.
    resolved: bool,
    why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Class(AddressClass),
    NotListed,
}

impl Refusal {
    fn describe(&self) -> String {
        let host = &self.host;
        match (self.why, self.resolved) {
            (Why::Class(class), resolved) => format!(
                "host {host} {} {}, which outbound requests may not reach; an allow-list entry \
                 naming that address or range opens it",
                if resolved { "resolves to" } else { "is" },
                class.described()
            ),
            (Why::NotListed, false) => format!("host {host} is not on the allow-list"),
            (Why::NotListed, true) => format!(
                "host {host} is not on the allow-list and resolves to no address an allow-list \
                 range covers"
            ),
        }
    }
}

/// The allow-list and the refused classes as one decision. `None` (`["*"]`): every host,
/// and every address but the refused ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutboundPolicy {
    allowed: Option<Vec<HostPattern>>,
}

impl OutboundPolicy {
    pub(crate) fn new(allowed: Option<&[String]>) -> Result<Self, ConnectError> {
        let allowed = match allowed {
            None => None,
            Some(entries) => Some(
                entries
                    .iter()
                    .map(|e| HostPattern::parse(e))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(OutboundPolicy { allowed })
    }

    /// Before anything is sent: an IP-literal host is checked in full here (no resolver
    /// sees it); a name is refused here only when no entry could allow it, the rest is the
    /// resolver's.
    pub(crate) fn check_url_host(&self, host: &url::Host<&str>) -> Result<(), Refusal> {
        let refusal = |host: String, why| Refusal {
            host,
            resolved: false,
            why,
        };
        match host {
            url::Host::Ipv4(ip) => self
                .check_address(IpAddr::V4(*ip), false)
                .map_err(|why| refusal(ip.to_string(), why)),
            url::Host::Ipv6(ip) => self
                .check_address(IpAddr::V6(*ip), false)
                .map_err(|why| refusal(format!("[{ip}]"), why)),
            url::Host::Domain(name) => match &self.allowed {
                Some(entries)
                    if !entries.iter().any(|p| p.matches_name(name))
                        && !entries.iter().any(|p| p.range().is_some()) =>
                {
                    Err(refusal((*name).to_owned(), Why::NotListed))
                }
                _ => Ok(()),
            },
        }
    }

    /// The addresses `host` (a name) resolved to that may be connected to; an error naming
    /// the first refused class when none may.
    pub(crate) fn filter_resolved(
        &self,
        host: &str,
        addrs: Vec<IpAddr>,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let listed = self
            .allowed
            .as_ref()
            .is_some_and(|entries| entries.iter().any(|p| p.matches_name(host)));
        // A refused class says more than "not listed": it is the one reported.
        let (mut class, mut not_listed) = (None, None);
        let mut allowed = Vec::with_capacity(addrs.len());
        for ip in addrs {
            match self.check_address(ip, listed) {
                Ok(()) => allowed.push(ip),
                Err(why @ Why::Class(_)) => {
                    class.get_or_insert(why);
                }
                Err(why @ Why::NotListed) => {
                    not_listed.get_or_insert(why);
                }
            }
        }
        match class.or(not_listed) {
            Some(why) if allowed.is_empty() => Err(Refusal {
                host: host.to_owned(),
                resolved: true,
                why,
            }),
            _ => Ok(allowed),
        }
    }

    /// `name_listed`: the address is one a name on the allow-list resolved to.
    fn check_address(&self, ip: IpAddr, name_listed: bool) -> Result<(), Why> {
        let ranges = || self.allowed.iter().flatten().filter_map(HostPattern::range);
        if let Some((class, refused, form)) = refused_class(ip) {
            // Opened only by an entry inside the refused range that contains the address.
            return if ranges().any(|r| refused.covers(r) && r.contains(form)) {
                Ok(())
            } else {
                Err(Why::Class(class))
            };
        }
        if self.allowed.is_none()
            || name_listed
            || ranges().any(|r| forms(ip).any(|f| r.contains(f)))
        {
            Ok(())
        } else {
            Err(Why::NotListed)
        }
    }
}

/// The client's DNS resolver: looks names up with a [`HostLookup`] and hands on only the
/// addresses the [`OutboundPolicy`] allows, or a [`Refusal`].
pub(crate) struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
    lookup: Arc<dyn HostLookup>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: Arc<OutboundPolicy>, lookup: Arc<dyn HostLookup>) -> Self {
        GuardedResolver { policy, lookup }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = lookup.lookup(&host).await?;
            let allowed = policy.filter_resolved(&host, found)?;
            // Port 0 is replaced by the URL's port.
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The [`Refusal`] behind a failed request, if that is why it failed.
pub(crate) fn refusal_of(e: &reqwest::Error) -> Option<&Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        OutboundPolicy::new(Some(&entries)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn host(u: &str) -> bool {
        let p = policy(&["api.example.com", "*.corp.example", "10.0.0.1", "[::1]"]);
        let url = url::Url::parse(u).unwrap();
        match url.host().unwrap() {
            url::Host::Domain(d) => p.allowed.iter().flatten().any(|pat| pat.matches_name(d)),
            other => p.check_url_host(&other).is_ok(),
        }
    }

    #[test]
    fn allow_list_matching() {
        assert!(host("https://api.example.com/x"));
        assert!(host("https://API.Example.com./x"));
        assert!(!host("https://example.com/x"));
        assert!(!host("https://evilapi.example.com/x"));
        assert!(host("https://a.corp.example/x"));
        assert!(host("https://a.b.corp.example/x"));
        assert!(!host("https://corp.example/x"));
        assert!(!host("https://xcorp.example/x"));
        assert!(host("http://10.0.0.1:8080/x"));
        assert!(!host("http://10.0.0.2/x"));
        assert!(host("http://[::1]/x"));
        for bad in [
            "*.10.0.0.1",
            "a*.b.com",
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "x/8",
            "::/abc",
        ] {
            assert!(
                matches!(
                    HostPattern::parse(bad),
                    Err(ConnectError::InvalidAllowedHost(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            HostPattern::parse("10.1.2.3/8"),
            Err(ConnectError::AllowedRangeHostBits { ref network, .. }) if network == "10.0.0.0/8"
        ));
    }

    #[test]
    fn refused_classes_cover_metadata_link_local_and_their_ipv6_forms() {
        let any = OutboundPolicy::default();
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "168.63.129.16",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0.0.0.0",
        ] {
            assert!(
                matches!(any.check_address(ip(refused), false), Err(Why::Class(_))),
                "{refused}"
            );
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.100.100.201",
            "93.184.216.34",
            "fd00:ec2::253",
            "fec0::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(any.check_address(ip(allowed), false), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn only_an_entry_inside_a_refused_range_opens_it() {
        let metadata = ip("169.254.169.254");
        for opens in [
            &["169.254.169.254"][..],
            &["169.254.0.0/16"],
            &["169.254.169.0/24"],
            &["::ffff:169.254.169.254"],
        ] {
            assert_eq!(
                policy(opens).check_address(metadata, false),
                Ok(()),
                "{opens:?}"
            );
            assert_eq!(
                policy(opens).check_address(ip("::ffff:169.254.169.254"), false),
                Ok(()),
                "{opens:?}"
            );
        }
        for stays_shut in [
            &["0.0.0.0/0"][..],
            &["169.254.0.0/15"],
            &["169.254.169.253"],
            &["metadata.example"],
            &["::/0"],
        ] {
            assert_eq!(
                policy(stays_shut).check_address(metadata, true),
                Err(Why::Class(AddressClass::LinkLocal)),
                "{stays_shut:?}"
            );
        }
        assert_eq!(
            policy(&["fd00:ec2::254"]).check_address(ip("fd00:ec2::254"), false),
            Ok(())
        );
        assert!(policy(&["fd00:ec2::/32"])
            .check_address(ip("fd00:ec2::254"), false)
            .is_err());
    }

    #[test]
    fn ranges_match_resolved_addresses_and_names_match_hosts() {
        let p = policy(&["10.0.0.0/8", "api.example.com"]);
        assert_eq!(
            p.filter_resolved("internal.corp", vec![ip("10.9.8.7")]),
            Ok(vec![ip("10.9.8.7")])
        );
        assert!(matches!(
            p.filter_resolved("internal.corp", vec![ip("192.168.0.1")]),
            Err(Refusal {
                why: Why::NotListed,
                ..
            })
        ));
        assert_eq!(
            p.filter_resolved(
                "api.example.com",
                vec![ip("192.168.0.1"), ip("169.254.1.1")]
            ),
            Ok(vec![ip("192.168.0.1")])
        );
        assert!(matches!(
            p.filter_resolved("api.example.com", vec![ip("169.254.1.1")]),
            Err(Refusal {
                why: Why::Class(AddressClass::LinkLocal),
                resolved: true,
                ..
            })
        ));
        // A name no entry could allow is refused before any lookup.
        let names_only = policy(&["api.example.com"]);
        assert!(names_only
            .check_url_host(&url::Host::Domain("other.example"))
            .is_err());
        assert!(p
            .check_url_host(&url::Host::Domain("other.example"))
            .is_ok());
    }
}
