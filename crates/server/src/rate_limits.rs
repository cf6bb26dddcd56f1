//! Rate limits per client address: one token bucket per address per site (governor), as
//! the site's settings ask.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use spoor_settings::RateLimit;

use crate::access::network_of;

/// Checks between two sweeps of a site's idle client addresses.
const SWEEP_EVERY: u64 = 100_000;

struct SiteLimiter {
    limit: RateLimit,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

/// One token bucket per client address per site, made when a site is first asked and
/// remade when its limit changes.
#[derive(Default)]
pub struct Limiters {
    sites: Mutex<HashMap<String, Arc<SiteLimiter>>>,
}

impl Limiters {
    /// `Err(wait)` when `client` (its /64, for IPv6) has used up its requests to
    /// `site_id` for now.
    pub fn check(&self, site_id: &str, limit: RateLimit, client: IpAddr) -> Result<(), Duration> {
        let site = self.limiter(site_id, limit);
        if site.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            site.limiter.retain_recent();
            site.limiter.shrink_to_fit();
        }
        site.limiter
            .check_key(&network_of(client))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn limiter(&self, site_id: &str, limit: RateLimit) -> Arc<SiteLimiter> {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(site) = sites.get(site_id)
            && site.limit == limit
        {
            return site.clone();
        }
        let at_least_one = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(at_least_one(limit.per_second))
            .allow_burst(at_least_one(limit.burst));
        let site = Arc::new(SiteLimiter {
            limit,
            limiter: RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        });
        sites.insert(site_id.to_string(), site.clone());
        site
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_apart() {
        let limiters = Limiters::default();
        let limit = RateLimit {
            per_second: 1,
            burst: 3,
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiters.check("S", limit, a).is_ok());
        }
        let wait = limiters.check("S", limit, a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limiters.check("S", limit, b).is_ok(),
            "another address has its own bucket"
        );
        assert!(
            limiters.check("T", limit, a).is_ok(),
            "another site has its own buckets"
        );
        // A new limit is a new bucket.
        let wider = RateLimit {
            per_second: 1,
            burst: 10,
        };
        assert!(limiters.check("S", wider, a).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_64_whatever_address_it_picks() {
        let limiters = Limiters::default();
        let limit = RateLimit {
            per_second: 1,
            burst: 2,
        };
        let address = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        assert!(limiters.check("S", limit, address(1)).is_ok());
        assert!(limiters.check("S", limit, address(2)).is_ok());
        assert!(limiters.check("S", limit, address(3)).is_err());
        let next_network = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(limiters.check("S", limit, next_network).is_ok());
    }
}
