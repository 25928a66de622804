//! The private-network policy for URLs taken from user input
//! (`fetch.allow_private_networks`).
//!
//! A user-supplied URL (today: a service account's `token_uri`) must not become a way to
//! make our servers talk to the private network they run in (cloud metadata at
//! 169.254.169.254, Redis on 10.x, the API itself on loopback, …). When private networks
//! are not allowed:
//!
//! * the URL must be `https`;
//! * an IP-literal host must be a public address ([`check_url`]). This pre-check is needed
//!   because the HTTP connector does not call the DNS resolver for IP literals;
//! * a DNS name is resolved by [`PublicOnlyResolver`], which drops every non-public
//!   address at connect time, so a name that resolves to `127.0.0.1` is refused too and
//!   there is no window between checking and connecting (no DNS-rebinding gap);
//! * redirects are not followed and no proxy is used ([`client_builder`]); a proxy would
//!   connect on our behalf and bypass the resolver.
//!
//! "Public" is decided by [`is_public_ip`]: loopback, RFC 1918, CGNAT, link-local,
//! unique-local, unspecified, documentation, benchmarking, multicast, reserved and
//! IPv4-embedding IPv6 forms of these are all refused.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a URL was refused by the private-network policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not an `http`/`https` URL at all.
    #[error("only http and https URLs are supported")]
    UnsupportedScheme,
    /// `http` while private networks are not allowed.
    #[error("only https URLs are allowed (fetch.allow_private_networks is false)")]
    NotHttps,
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is an IP literal outside the public internet.
    #[error("{host} is not a public address (fetch.allow_private_networks is false)")]
    NonPublicAddress {
        /// The host as written in the URL.
        host: String,
    },
    /// The host name resolved, but only to non-public addresses.
    #[error("{host} resolves only to non-public addresses (fetch.allow_private_networks is false)")]
    ResolvesToNonPublic {
        /// The host name.
        host: String,
    },
}

/// Checks what can be checked without DNS: scheme, host presence and, when private
/// networks are not allowed, `https` and IP-literal hosts.
pub fn check_url(url: &Url, allow_private_networks: bool) -> Result<(), PolicyError> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private_networks => {}
        "http" => return Err(PolicyError::NotHttps),
        _ => return Err(PolicyError::UnsupportedScheme),
    }
    let host = url.host().ok_or(PolicyError::NoHost)?;
    if allow_private_networks {
        return Ok(());
    }
    let ip = match host {
        Host::Ipv4(ip) => IpAddr::V4(ip),
        Host::Ipv6(ip) => IpAddr::V6(ip),
        // Names are checked by the resolver when connecting.
        Host::Domain(_) => return Ok(()),
    };
    if is_public_ip(ip) {
        Ok(())
    } else {
        Err(PolicyError::NonPublicAddress {
            host: host.to_string(),
        })
    }
}

/// A reqwest client builder for requests to user-supplied URLs. With
/// `allow_private_networks == false` it only speaks https, resolves through
/// [`PublicOnlyResolver`] and uses no proxy. Redirects are never followed: a redirect
/// could lead anywhere, and provider endpoints do not redirect.
pub fn client_builder(allow_private_networks: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if allow_private_networks {
        builder
    } else {
        builder
            .https_only(true)
            .no_proxy()
            .dns_resolver(PublicOnlyResolver)
    }
}

/// Finds a [`PolicyError`] in the cause chain of `err` (the resolver's refusal arrives
/// wrapped in reqwest's and hyper's connect errors).
pub fn policy_violation<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a PolicyError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(policy) = e.downcast_ref::<PolicyError>() {
            return Some(policy);
        }
        current = e.source();
    }
    None
}

/// A DNS resolver (system resolver via `getaddrinfo`) that drops non-public addresses and
/// fails when none is left.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                tracing::warn!(%host, "refused a user-supplied host that resolves only to non-public addresses");
                return Err(Box::new(PolicyError::ResolvesToNonPublic { host }) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a globally reachable unicast address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let non_public = a == 0                                  // "this network", incl. 0.0.0.0
        || a == 10                                           // RFC 1918
        || a == 127                                          // loopback
        || (a == 100 && (b & 0b1100_0000) == 64)             // CGNAT 100.64/10
        || (a == 169 && b == 254)                            // link-local, cloud metadata
        || (a == 172 && (b & 0b1111_0000) == 16)             // RFC 1918 172.16/12
        || (a == 192 && b == 168)                            // RFC 1918
        || (a == 192 && b == 0 && c == 0)                    // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                    // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                  // 6to4 relay anycast
        || (a == 198 && (b & 0b1111_1110) == 18)             // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100)                 // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                  // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !non_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // ::ffff:a.b.c.d reaches the IPv4 address a.b.c.d.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // Only 2000::/3 is global unicast; everything else (::1, ::, ::a.b.c.d, 64:ff9b::/96,
    // 100::/64, fc00::/7, fe80::/10, fec0::/10, ff00::/8) is refused.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    if s[0] == 0x2001 && s[1] < 0x0200 {
        return false; // 2001::/23 IETF protocol assignments, incl. Teredo 2001::/32
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return false; // documentation
    }
    if s[0] & 0xfff0 == 0x3ff0 {
        return false; // 3fff::/20 documentation (RFC 9637)
    }
    if s[0] == 0x2002 {
        // 6to4: the next 32 bits are an IPv4 address.
        let [hi, lo] = [s[1].to_be_bytes(), s[2].to_be_bytes()];
        return is_public_v4(Ipv4Addr::new(hi[0], hi[1], lo[0], lo[1]));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let refused = [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
        ];
        for ip in refused {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip} must be refused");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "142.250.1.1",
            "::ffff:8.8.8.8",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "2002:808:808::",
        ];
        for ip in allowed {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip} must be allowed");
        }
    }

    #[test]
    fn check_url_applies_scheme_and_ip_literal_rules() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            check_url(&url("http://example.com/t"), false),
            Err(PolicyError::NotHttps)
        );
        assert_eq!(
            check_url(&url("ftp://example.com/t"), true),
            Err(PolicyError::UnsupportedScheme)
        );
        assert!(check_url(&url("https://oauth2.googleapis.com/token"), false).is_ok());
        assert!(check_url(&url("https://8.8.8.8/token"), false).is_ok());
        for private in [
            "https://127.0.0.1/t",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://[::ffff:10.0.0.1]/",
        ] {
            assert!(
                matches!(
                    check_url(&url(private), false),
                    Err(PolicyError::NonPublicAddress { .. })
                ),
                "{private}"
            );
            assert!(check_url(&url(private), true).is_ok(), "{private}");
        }
        assert!(check_url(&url("http://127.0.0.1:8080/t"), true).is_ok());
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_only_to_loopback() {
        let name: Name = "localhost".parse().unwrap();
        let err = match PublicOnlyResolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        assert_eq!(
            policy_violation(err.as_ref()),
            Some(&PolicyError::ResolvesToNonPublic {
                host: "localhost".into()
            })
        );
    }
}
