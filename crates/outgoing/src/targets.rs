//! Which addresses requests to other systems may reach. Anyone with a site's key sets its
//! webhook URLs: without a guard, spoor could be made to send requests into the network
//! it runs in (loopback, private ranges, a cloud's metadata service). A target is checked
//! when a setting names it and again at each request, whose host may resolve differently
//! by then, and at each redirect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Redirects a request follows at most.
pub const MAX_REDIRECTS: usize = 3;
/// How long checking a setting's host may wait for its name to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where requests may go: public addresses only, unless private ones are allowed
/// (`spoor serve --allow-private-targets`, for tests and on-premises setups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub allow_private: bool,
}

impl Targets {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// Checks a URL a setting names: http or https, a host, and every address the host
    /// resolves to now allowed. The error says what is wrong, for the setting's field.
    pub async fn check(&self, url: &str) -> Result<(), String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e}): {url:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("expected an http or https URL, got {url:?}"));
        }
        let host = parsed.host_str().unwrap_or("");
        if host.is_empty() {
            return Err(format!("the URL names no host: {url:?}"));
        }
        if let Some(ip) = ip_literal(host) {
            return self.refuse_private(host, &[ip]);
        }
        if self.allow_private {
            // Anything goes, and a name that resolves only inside a network is fine.
            return Ok(());
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((host, port));
        let addresses: Vec<IpAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("its host {host:?} did not resolve within {LOOKUP_TIMEOUT:?}"))?
            .map_err(|e| format!("its host {host:?} cannot be resolved: {e}"))?
            .map(|address| address.ip())
            .collect();
        self.refuse_private(host, &addresses)
    }

    /// Checks a request's URL whose host is an address: such a host is not resolved, so
    /// [`GuardedResolver`] never sees it.
    pub fn check_literal(&self, url: &Url) -> Result<(), String> {
        match url.host_str().and_then(ip_literal) {
            Some(ip) => self.refuse_private(url.host_str().unwrap_or(""), &[ip]),
            None => Ok(()),
        }
    }

    /// The refusal names the host, not the address it resolved to: that would let a key
    /// holder map the network spoor runs in.
    fn refuse_private(&self, host: &str, addresses: &[IpAddr]) -> Result<(), String> {
        if addresses.iter().all(|ip| self.allows(*ip)) {
            return Ok(());
        }
        Err(format!(
            "{host:?} is or resolves to a loopback, private, link-local or otherwise \
             non-public address; spoor sends nothing there unless started with \
             --allow-private-targets"
        ))
    }

    /// A client builder whose every request, and every redirect (at most
    /// [`MAX_REDIRECTS`]), reaches allowed addresses only.
    pub fn client_builder(self) -> reqwest::ClientBuilder {
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match self.check_literal(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(format!("redirected: {refusal}")),
            }
        });
        // No proxy from the environment (HTTP_PROXY...): a proxy resolves the target's
        // name itself, where the resolver below would never judge it.
        crate::client_builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { targets: self }))
            .redirect(redirects)
    }
}

/// Resolves a host's name and keeps only the addresses [`Targets`] allows; a host with
/// none left is an error that names the first refused.
struct GuardedResolver {
    targets: Targets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = (resolved.iter())
                .filter(|address| targets.allows(address.ip()))
                .copied()
                .collect();
            if allowed.is_empty() {
                let ips: Vec<IpAddr> = resolved.iter().map(SocketAddr::ip).collect();
                let refusal = match targets.refuse_private(&host, &ips) {
                    Err(refusal) => refusal,
                    Ok(()) => format!("{host:?} resolves to no address"),
                };
                return Err(refusal.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The address a URL's host names directly (IPv6 in brackets, as URLs write it).
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an address belongs to the public internet: not loopback, private, link-local
/// (which holds the clouds' metadata service, 169.254.169.254), shared (carrier NAT),
/// unique-local, multicast, documentation, benchmarking or reserved; IPv4 written as
/// IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240; // reserved
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let [first, second] = [segments[0], segments[1]];
    // IPv4 carried inside: NAT64 (64:ff9b::/96) in the last 32 bits, 6to4 (2002::/16) in
    // the 32 bits after the prefix.
    let low_v4 = Ipv4Addr::from(u128::from(ip) as u32);
    let six_to_four = Ipv4Addr::new(
        (segments[1] >> 8) as u8,
        segments[1] as u8,
        (segments[2] >> 8) as u8,
        segments[2] as u8,
    );
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local (fc00::/7)
        || (first & 0xffc0) == 0xfe80 // link-local (fe80::/10)
        || (first & 0xffc0) == 0xfec0 // site-local (fec0::/10)
        || (first == 0x2001 && second < 0x0200) // IETF protocols, Teredo (2001::/23)
        || (first == 0x2001 && second == 0x0db8) // documentation
        || (first == 0x0100 && segments[1..4] == [0, 0, 0]) // discard (100::/64)
        || (first == 0x0064 && second == 0xff9b && !is_public_v4(low_v4)) // NAT64
        || (first == 0x2002 && !is_public_v4(six_to_four)) // 6to4
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)); // IPv4-compatible (::a.b.c.d)
    !special
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_setting_naming_a_private_target_is_refused_unless_allowed() {
        let strict = Targets {
            allow_private: false,
        };
        for url in [
            "http://127.0.0.1:9/hook",
            "https://[::1]/hook",
            "http://localhost:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let refusal = strict.check(url).await.unwrap_err();
            assert!(
                refusal.contains("--allow-private-targets"),
                "{url}: {refusal}"
            );
        }
        assert!(strict.check("ftp://example.com/x").await.is_err());
        assert!(strict.check("not a url").await.is_err());
        let lenient = Targets {
            allow_private: true,
        };
        assert!(lenient.check("http://localhost:8080/hook").await.is_ok());
        let literal = Url::parse("http://10.0.0.7/x").unwrap();
        assert!(strict.check_literal(&literal).is_err());
        assert!(lenient.check_literal(&literal).is_ok());
    }

    #[tokio::test]
    async fn requests_to_a_name_that_resolves_privately_fail_before_connecting() {
        let client = Targets {
            allow_private: false,
        }
        .client_builder()
        .build()
        .unwrap();
        let error = client.get("http://localhost:9/").send().await.unwrap_err();
        let mut cause: &dyn std::error::Error = &error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        assert!(
            cause.to_string().contains("--allow-private-targets"),
            "{cause}"
        );
    }
}
