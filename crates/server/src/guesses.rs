//! Repeated wrong keys from one address, slowed down: after [`DEFAULT_MAX_FAILURES`]
//! refused keys (401 or 403 to a request that carried a key) within [`WINDOW`]
//! (`--refused-keys-per-minute`), the address gets 429 with `Retry-After` for every
//! request that carries a key until its window ends, unless the key it sends is good: a
//! guesser waits, a shop or an operator behind the same address does not, and neither do
//! the public calls of pages behind it. IPv6 addresses count by their /64, which one host
//! usually holds whole. A 256-bit key cannot be guessed anyway;
//! this keeps anyone from trying at speed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::access::{client_address, network_of};
use crate::app::{AppState, Shared};
use crate::auth;
use crate::error::ApiError;

/// Refused keys an address may send within [`WINDOW`], unless set otherwise.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most: past it, a new address is not counted (the ones
/// remembered stay slowed) until the next sweep drops those whose window has ended.
const MAX_ADDRESSES: usize = 100_000;
/// How often addresses whose window has ended are swept out: a sweep reads the whole
/// table under its lock, so many addresses failing at once must not each start one.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct KeyGuesses {
    /// Refused keys allowed per address and window; 0 for no limit.
    max_failures: u32,
    failures: Mutex<Table>,
    /// How many addresses the table holds: zero on a server nobody guessed at within a
    /// window, whose requests then take no lock here.
    remembered: AtomicUsize,
}

#[derive(Default)]
struct Table {
    by_address: HashMap<IpAddr, Failures>,
    swept_at: Option<Instant>,
}

impl Table {
    /// Drops the addresses whose window has ended, at most once per [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.by_address.retain(|_, seen| seen.since + WINDOW > now);
        self.swept_at = Some(now);
    }
}

struct Failures {
    count: u32,
    since: Instant,
}

impl Default for KeyGuesses {
    fn default() -> Self {
        KeyGuesses::new(DEFAULT_MAX_FAILURES)
    }
}

impl KeyGuesses {
    /// At most `max_failures` refused keys per address and [`WINDOW`]; 0 for no limit.
    pub fn new(max_failures: u32) -> KeyGuesses {
        KeyGuesses {
            max_failures,
            failures: Mutex::default(),
            remembered: AtomicUsize::new(0),
        }
    }

    /// How long `client` must wait before sending a key again, if it must.
    pub fn wait(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.max_failures == 0 || self.remembered.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        table.sweep(now);
        self.remembered
            .store(table.by_address.len(), Ordering::Relaxed);
        let seen = table.by_address.get(&client)?;
        let end = seen.since + WINDOW;
        (seen.count >= self.max_failures && end > now).then(|| end - now)
    }

    /// Counts a refused key from `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        table.sweep(now);
        let failures = &mut table.by_address;
        if !failures.contains_key(&client) && failures.len() >= MAX_ADDRESSES {
            self.remembered.store(failures.len(), Ordering::Relaxed);
            return;
        }
        let seen = failures.entry(client).or_insert(Failures {
            count: 0,
            since: now,
        });
        if seen.since + WINDOW <= now {
            *seen = Failures {
                count: 0,
                since: now,
            };
        }
        seen.count += 1;
        self.remembered.store(failures.len(), Ordering::Relaxed);
    }
}

/// The layer of every route that takes a key: a client over its budget of refused keys
/// waits; each 401 or 403 it gets counts.
pub async fn guard(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = network_of(client_address(&state, request.headers(), peer));
    let key = auth::bearer(request.headers());
    let carries_key = key.is_some();
    // Only a request that carries a key waits: one without cannot guess, and a page's
    // public call must not wait because someone behind the same address guessed.
    if let Some(key) = key
        && let Some(wait) = state.guesses.wait(client, Instant::now())
        && !is_good_key(&state, key)
    {
        return too_many(state.guesses.max_failures, wait);
    }
    let response = next.run(request).await;
    let refused = matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    );
    if refused && carries_key {
        state.guesses.failed(client, Instant::now());
    }
    response
}

/// The admin token, or the API key of some site (the route may still refuse it: a key of
/// another site counts then, as any refusal does).
fn is_good_key(state: &AppState, key: &str) -> bool {
    auth::is_admin_token(key, &state.admin_token) || state.settings.sites.site_of_key(key).is_some()
}

fn too_many(max_failures: u32, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let message = format!(
        "this address sent {max_failures} refused keys within {} s; retry in {seconds} s",
        WINDOW.as_secs()
    );
    ApiError::too_many_requests("too_many_refused_keys", message, wait).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_its_refused_keys_until_its_window_ends() {
        let guesses = KeyGuesses::default();
        let (a, b): (IpAddr, IpAddr) = ("203.0.113.7".parse().unwrap(), "::2".parse().unwrap());
        let start = Instant::now();
        assert_eq!(guesses.wait(a, start), None);
        for _ in 0..DEFAULT_MAX_FAILURES {
            assert_eq!(guesses.wait(a, start), None);
            guesses.failed(a, start);
        }
        let wait = guesses.wait(a, start + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        assert_eq!(guesses.wait(b, start), None, "another address is apart");
        assert_eq!(guesses.wait(a, start + WINDOW), None, "the window ended");
        guesses.failed(a, start + WINDOW);
        assert_eq!(
            guesses.wait(a, start + WINDOW),
            None,
            "a new window counts anew"
        );
    }

    #[test]
    fn addresses_whose_window_ended_are_forgotten_and_a_full_table_takes_no_new_one() {
        let guesses = KeyGuesses::default();
        let start = Instant::now();
        let address = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(n));
        for n in 0..MAX_ADDRESSES as u32 {
            guesses.failed(address(n), start);
        }
        assert_eq!(guesses.remembered.load(Ordering::Relaxed), MAX_ADDRESSES);
        for _ in 0..DEFAULT_MAX_FAILURES {
            guesses.failed(address(u32::MAX), start);
        }
        assert_eq!(
            guesses.wait(address(u32::MAX), start),
            None,
            "not counted: full"
        );
        // Once their windows end, a request's check sweeps them out, and the server's
        // requests take no lock here again.
        assert_eq!(guesses.wait(address(1), start + WINDOW), None);
        assert_eq!(guesses.remembered.load(Ordering::Relaxed), 0);
    }
}
