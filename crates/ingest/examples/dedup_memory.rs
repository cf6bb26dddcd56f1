//! Memory of the duplicate index at a steady rate: claims and settles a day and a half of
//! requests at `rate` per second (default 100: 12,960,000 requests), so that one full
//! generation of keys is held beside half of the next, as at any time after the first
//! day, and prints the resident memory it grew by, per request key held; then times
//! claims of a million keys from the first day (retries, found in the older generation).
//!
//! `cargo run --release -p spoor-ingest --example dedup_memory -- 100`

use std::time::Instant;

use spoor_ingest::dedup::{Claim, DedupIndex, Keys};

/// Resident memory: the second field of `/proc/self/statm`, in 4 KiB pages.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok());
    pages.map_or(0, |pages| pages * 4096)
}

fn main() {
    let rate: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let requests = rate * 36 * 3600;
    let index = DedupIndex::default();
    let before = rss_bytes();
    let started = Instant::now();
    let t0 = 1_700_000_000_000i64;
    for n in 0..requests {
        let keys = Keys {
            request: xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()),
        };
        let now = t0 + (n * 1000 / rate) as i64;
        match index.claim(keys, now) {
            Claim::New => index.settle(keys, true),
            _ => panic!("request {n} is new"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    let held = index.len();
    let retries = 1_000_000.min(requests);
    let now = t0 + (requests * 1000 / rate) as i64;
    let started = Instant::now();
    for n in 0..retries {
        let keys = Keys {
            request: xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()),
        };
        assert!(matches!(index.claim(keys, now), Claim::Duplicate));
    }
    let retry_ns = started.elapsed().as_nanos() as f64 / retries as f64;
    println!(
        "{{\"rate\": {rate}, \"requests\": {requests}, \"keys_held\": {held}, \
         \"rss_growth_bytes\": {grown}, \"bytes_per_key\": {:.1}, \"claims_per_second\": {:.0}, \
         \"retry_claim_ns\": {retry_ns:.0}}}",
        grown as f64 / held as f64,
        requests as f64 / seconds
    );
}
