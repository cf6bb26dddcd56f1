//! Recognises a byte-identical request within the retry window (a client retry), so that
//! it is acknowledged and not stored twice.
//!
//! Order numbers are not keys here. The tracker is public: an answer of "duplicate" for
//! an order number would tell anyone which orders exist (and, keyed by buyer, who placed
//! them), and a number sent ahead would keep the real order out. Every purchase is
//! stored; the state counts an order once per contact (see `spoor_engine`).
//!
//! A key is *claimed* before its record is appended and *settled* once the append is
//! durable (or failed). A duplicate that arrives while the original is still being written
//! waits for the original's outcome, so it is never acknowledged before the data is safe.
//!
//! The index sits on every request's path and grows with traffic, so it is built not to
//! stall: request keys are spread over [`SHARDS`] independently locked shards (a table
//! resize blocks one shard for a fraction of the time a single table would), and instead
//! of a timestamp per key each shard keeps two generations of keys and drops the older
//! one wholesale. A retry is therefore
//! recognised for at least [`RETRY_WINDOW_MS`] and at most twice that. The older
//! generation takes no more keys, so it is held sorted in an exactly sized array (16 bytes
//! a key instead of a hash set's 20-36): a third less memory for the index as a whole.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use spoor_protocol::stored::{self, StoredRecord};
use tokio::sync::oneshot;

use crate::error::IngestError;

/// How long a byte-identical request is at least recognised as a retry: the window the
/// state's readers decide retries by too.
pub use spoor_protocol::retries::RETRY_WINDOW_MS;
/// Independently locked parts of the request-key index.
pub const SHARDS: usize = 64;
/// The top bits of a request key that pick its shard.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

pub enum Claim {
    /// Not seen: the caller appends the record, then calls [`DedupIndex::settle`].
    New,
    /// The same request bytes were accepted within the retry window.
    Duplicate,
    /// Being stored by another request; the receiver says whether that succeeded.
    InFlight(oneshot::Receiver<bool>),
}

/// The keys of one record: the hash of its request's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub request: u128,
}

/// Table hash of a key: the keys are xxh3 hashes already, but of bytes clients choose, and
/// xxh3 is not keyed, so their bits as they are would let a client craft bodies that pile
/// into one bucket. Mixed instead with two per-process random words by one folded
/// multiply (as fast hashers such as foldhash do): a nanosecond, where SipHash would make
/// loading the index's snapshot several times slower.
#[derive(Clone, Copy)]
struct KeyHashing {
    seeds: (u64, u64),
}

impl Default for KeyHashing {
    fn default() -> Self {
        static SEEDS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        let seeds = *SEEDS.get_or_init(|| {
            let random = std::collections::hash_map::RandomState::new();
            (random.hash_one(1u8), random.hash_one(2u8))
        });
        KeyHashing { seeds }
    }
}

impl BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            seeds: self.seeds,
            hash: 0,
        }
    }
}

struct KeyHasher {
    seeds: (u64, u64),
    hash: u64,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here; any other input still hashes, just slower.
        for chunk in bytes.chunks(16) {
            let mut word = [0u8; 16];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, key: u128) {
        let (low, high) = (key as u64 ^ self.seeds.0, (key >> 64) as u64 ^ self.seeds.1);
        let product = u128::from(low) * u128::from(high ^ self.hash);
        self.hash = product as u64 ^ (product >> 64) as u64;
    }
}

type KeySet = HashSet<u128, KeyHashing>;
type Waiting = HashMap<u128, Vec<oneshot::Sender<bool>>, KeyHashing>;

/// Durable keys, and the keys whose records are being written with who waits on them.
#[derive(Default)]
struct Keyed {
    durable: KeySet,
    /// Older durable keys, still recognised until the next rotation (request keys only).
    previous: Frozen,
    in_flight: Waiting,
}

/// A generation of keys that takes no more: sorted, exactly sized, 16 bytes a key where
/// a hash set takes 20-36 (spare slots and control bytes). A directory by the bits below
/// the shard's (the keys are hashes: evenly spread) narrows each search to about eight
/// keys, a cache line or two, where a binary search over a shard's day of keys would
/// touch seventeen.
#[derive(Default)]
struct Frozen {
    keys: Box<[u128]>,
    /// `starts[b]..starts[b + 1]`: where the keys of directory bucket `b` are.
    starts: Box<[u32]>,
    /// How many bits below the shard's pick the bucket.
    bits: u32,
}

/// Keys per directory bucket, about.
const BUCKET_KEYS: usize = 8;

impl Frozen {
    fn bucket(&self, key: u128) -> usize {
        // The top SHARD_BITS bits are the shard's, the same for every key here.
        let below_shard = key << SHARD_BITS;
        (below_shard.checked_shr(128 - self.bits).unwrap_or(0)) as usize
    }

    fn contains(&self, key: &u128) -> bool {
        let bucket = self.bucket(*key);
        let (Some(&start), Some(&end)) = (self.starts.get(bucket), self.starts.get(bucket + 1))
        else {
            return false;
        };
        self.keys[start as usize..end as usize]
            .binary_search(key)
            .is_ok()
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

impl FromIterator<u128> for Frozen {
    fn from_iter<I: IntoIterator<Item = u128>>(keys: I) -> Self {
        let mut keys: Vec<u128> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        let buckets = (keys.len() / BUCKET_KEYS).max(1).next_power_of_two();
        let mut frozen = Frozen {
            keys: keys.into_boxed_slice(),
            starts: Box::default(),
            bits: buckets.trailing_zeros(),
        };
        // Keys are sorted, so buckets are too: each bucket starts where the keys of the
        // buckets before it end.
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0;
        for bucket in 0..buckets {
            starts.push(at as u32);
            while at < frozen.keys.len() && frozen.bucket(frozen.keys[at]) == bucket {
                at += 1;
            }
        }
        starts.push(at as u32);
        frozen.starts = starts.into_boxed_slice();
        frozen
    }
}

impl Keyed {
    fn check(&mut self, key: u128) -> Option<Claim> {
        if self.durable.contains(&key) || self.previous.contains(&key) {
            return Some(Claim::Duplicate);
        }
        let waiters = self.in_flight.get_mut(&key)?;
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Some(Claim::InFlight(rx))
    }

    fn settle(&mut self, key: u128, durable: bool) -> Vec<oneshot::Sender<bool>> {
        if durable {
            self.durable.insert(key);
        }
        self.in_flight.remove(&key).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.durable.len() + self.previous.len()
    }
}

/// A shard's keys, held for at least a retry window and at most two: the current
/// generation and the one before.
#[derive(Default)]
struct Generations {
    keys: Keyed,
    /// When the current generation began; `None` until the first key.
    generation_start: Option<i64>,
}

impl Generations {
    /// Starts a new generation once the current one is a window old: the previous one,
    /// at least a window old throughout, is dropped.
    fn rotate(&mut self, now_ms: i64) {
        match self.generation_start {
            Some(start) if now_ms - start < RETRY_WINDOW_MS => {}
            Some(_) => {
                // Sorting a shard's day of keys (1/64 of them) holds its lock for a few
                // milliseconds, once a day.
                self.keys.previous = std::mem::take(&mut self.keys.durable).into_iter().collect();
                self.generation_start = Some(now_ms);
            }
            None => self.generation_start = Some(now_ms),
        }
    }
}

pub struct DedupIndex {
    requests: Vec<Mutex<Generations>>,
}

impl Default for DedupIndex {
    fn default() -> Self {
        DedupIndex {
            requests: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl DedupIndex {
    fn shard(&self, request: u128) -> &Mutex<Generations> {
        // The high bits pick the shard.
        &self.requests[(request >> (128 - SHARD_BITS)) as usize]
    }

    pub fn claim(&self, keys: Keys, now_ms: i64) -> Claim {
        let mut shard = self
            .shard(keys.request)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.rotate(now_ms);
        if let Some(claim) = shard.keys.check(keys.request) {
            return claim;
        }
        shard.keys.in_flight.insert(keys.request, Vec::new());
        Claim::New
    }

    /// Records the outcome of a claimed append and wakes the duplicates that waited on it.
    pub fn settle(&self, keys: Keys, durable: bool) {
        let waiters = self
            .shard(keys.request)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .settle(keys.request, durable);
        for waiter in waiters {
            let _ = waiter.send(durable);
        }
    }

    /// Notes a record already in the log (when rebuilding the index at start or on import).
    pub fn insert_durable(&self, keys: Keys, received_at: i64, now_ms: i64) {
        if received_at > now_ms - RETRY_WINDOW_MS {
            let mut shard = self
                .shard(keys.request)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shard.rotate(now_ms);
            shard.keys.durable.insert(keys.request);
        }
    }

    /// Request keys held for the retry window.
    pub fn len(&self) -> usize {
        (self.requests.iter())
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).keys.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Version 2 holds request keys only; version 1 also held order keys, which are read past.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SPOORDX2";
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"SPOORDX1";

fn put_keys<'a>(out: &mut Vec<u8>, keys: impl ExactSizeIterator<Item = &'a u128>) {
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for key in keys {
        out.extend_from_slice(&key.to_le_bytes());
    }
}

/// Reads what [`put_keys`] wrote, advancing `at`.
fn take_keys<Keys: FromIterator<u128>>(bytes: &[u8], at: &mut usize) -> Option<Keys> {
    let count = u64::from_le_bytes(bytes.get(*at..*at + 8)?.try_into().ok()?) as usize;
    *at += 8;
    let end = at.checked_add(count.checked_mul(16)?)?;
    let keys = bytes
        .get(*at..end)?
        .chunks_exact(16)
        .map(|k| u128::from_le_bytes(k.try_into().expect("16 bytes")))
        .collect();
    *at = end;
    Some(keys)
}

impl DedupIndex {
    /// The durable keys, as bytes: for a snapshot taken while nothing is in flight.
    pub fn to_bytes(&self, position: u64) -> Vec<u8> {
        // Sized up front, with room for keys that arrive meanwhile: growing a buffer of
        // millions of keys copies it all, and that would happen under a shard's lock,
        // holding up every request whose key falls in that shard.
        let keys = self.len();
        let mut out = Vec::with_capacity(16 + (keys + keys / 8) * 16 + self.requests.len() * 24);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&position.to_le_bytes());
        for shard in &self.requests {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(&mut out);
        }
        out
    }

    /// The index and log position [`DedupIndex::to_bytes`] wrote; `None` if the bytes
    /// are not such a snapshot.
    pub fn from_bytes(bytes: &[u8]) -> Option<(DedupIndex, u64)> {
        let magic = bytes.get(..8)?;
        if magic != SNAPSHOT_MAGIC && magic != SNAPSHOT_MAGIC_V1 {
            return None;
        }
        let mut at = 8;
        let position = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        let index = DedupIndex::default();
        for shard in &index.requests {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(bytes, &mut at)?;
        }
        if magic == SNAPSHOT_MAGIC_V1 {
            let _order_keys: Vec<u128> = take_keys(bytes, &mut at)?;
        }
        (at == bytes.len()).then_some((index, position))
    }
}

impl Generations {
    /// Writes the generation start and both generations' keys.
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.generation_start.unwrap_or(i64::MIN).to_le_bytes());
        put_keys(out, self.keys.durable.iter());
        put_keys(out, self.keys.previous.keys.iter());
    }

    /// Reads what [`Generations::put`] wrote, advancing `at`.
    fn take(&mut self, bytes: &[u8], at: &mut usize) -> Option<()> {
        let start = i64::from_le_bytes(bytes.get(*at..*at + 8)?.try_into().ok()?);
        *at += 8;
        self.generation_start = (start != i64::MIN).then_some(start);
        self.keys.durable = take_keys(bytes, at)?;
        self.keys.previous = take_keys(bytes, at)?;
        Some(())
    }
}

/// The keys a stored record claims: its request hash.
pub fn keys_of(record: &StoredRecord) -> Result<Keys, IngestError> {
    let request = stored::parse_hash_hex(&record.request_hash).ok_or_else(|| {
        IngestError::Storage(format!(
            "record has a bad requestHash {:?}",
            record.request_hash
        ))
    })?;
    Ok(Keys { request })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn keys(request: u128) -> Keys {
        Keys { request }
    }

    fn hash(text: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(text.as_bytes())
    }

    fn is_new(claim: Claim) -> bool {
        matches!(claim, Claim::New)
    }

    fn is_duplicate(claim: Claim) -> bool {
        matches!(claim, Claim::Duplicate)
    }

    #[test]
    fn retries_are_duplicates_for_at_least_the_window_and_at_most_twice_it() {
        let index = DedupIndex::default();
        let key = keys(hash("request body"));
        assert!(is_new(index.claim(key, 0)));
        index.settle(key, true);
        assert!(is_duplicate(index.claim(key, 23 * HOUR)));
        // Past one window: kept in the previous generation.
        assert!(is_duplicate(index.claim(key, 25 * HOUR)));
        // Past two windows: forgotten.
        assert!(is_new(index.claim(key, 50 * HOUR)));
    }

    #[tokio::test]
    async fn a_duplicate_in_flight_learns_the_outcome_of_the_original() {
        let index = DedupIndex::default();
        let key = keys(hash("x"));
        assert!(is_new(index.claim(key, 0)));
        let Claim::InFlight(waiting) = index.claim(key, 0) else {
            panic!("expected in flight")
        };
        index.settle(key, false);
        assert!(!waiting.await.unwrap());
        // The failed original left no trace: the retry is new.
        assert!(is_new(index.claim(key, 0)));
        let Claim::InFlight(waiting) = index.claim(key, 0) else {
            panic!("expected in flight")
        };
        index.settle(key, true);
        assert!(waiting.await.unwrap());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_snapshot_keeps_every_durable_key_and_generation() {
        let index = DedupIndex::default();
        for i in 0..1000u32 {
            let key = keys(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
            index.insert_durable(key, 5 * HOUR, 5 * HOUR);
        }
        let (restored, position) = DedupIndex::from_bytes(&index.to_bytes(42)).unwrap();
        assert_eq!(position, 42);
        assert_eq!(restored.len(), index.len());
        let again = keys(xxhash_rust::xxh3::xxh3_128(&7u32.to_le_bytes()));
        assert!(is_duplicate(restored.claim(again, 6 * HOUR)));
        // A first-version snapshot (with order keys at its end) gives the same index.
        let mut v1 = index.to_bytes(42);
        v1[..8].copy_from_slice(SNAPSHOT_MAGIC_V1);
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&7u128.to_le_bytes());
        let (from_v1, _) = DedupIndex::from_bytes(&v1).unwrap();
        assert_eq!(from_v1.len(), index.len());
        assert!(DedupIndex::from_bytes(b"not a snapshot").is_none());
        let mut cut = index.to_bytes(1);
        cut.pop();
        assert!(DedupIndex::from_bytes(&cut).is_none());
    }

    #[test]
    fn a_frozen_generation_finds_exactly_its_keys() {
        let shard_keys = |from: u32, to: u32| -> Vec<u128> {
            // Keys of one shard, as a shard holds: the same top bits.
            let shard = 5u128 << (128 - SHARD_BITS);
            let spread = |i: u32| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()) >> SHARD_BITS;
            (from..to).map(|i| shard | spread(i)).collect()
        };
        for size in [0, 1, 7, 100, 20_000] {
            let held = shard_keys(0, size);
            let frozen: Frozen = held.iter().copied().collect();
            assert_eq!(frozen.len(), held.len());
            assert!(held.iter().all(|k| frozen.contains(k)), "size {size}");
            let others = shard_keys(size, size + 1_000);
            assert!(!others.iter().any(|k| frozen.contains(k)), "size {size}");
            assert!(!frozen.contains(&0) && !frozen.contains(&u128::MAX));
        }
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let index = DedupIndex::default();
        for i in 0..10_000u32 {
            let key = keys(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
            index.insert_durable(key, 0, 0);
        }
        let sizes: Vec<usize> = index
            .requests
            .iter()
            .map(|s| s.lock().unwrap().keys.len())
            .collect();
        assert!(sizes.iter().all(|&n| n > 80 && n < 250), "{sizes:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// What the fuzz target `snapshot` drives for the index: any bytes load or are
        /// refused without a panic, and an index's own bytes load as the same index.
        #[test]
        fn index_snapshots_load_as_saved_and_anything_else_is_refused(
            keys in proptest::collection::vec(proptest::prelude::any::<u128>(), 0..200),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let _ = DedupIndex::from_bytes(&noise);
            let index = DedupIndex::default();
            for key in &keys {
                index.insert_durable(Keys { request: *key }, 5 * HOUR, 5 * HOUR);
            }
            let bytes = index.to_bytes(3);
            let (loaded, position) = DedupIndex::from_bytes(&bytes).unwrap();
            proptest::prop_assert_eq!((loaded.len(), position), (index.len(), 3));
            for key in &keys {
                let claim = loaded.claim(Keys { request: *key }, 6 * HOUR);
                proptest::prop_assert!(matches!(claim, Claim::Duplicate), "key {} is lost", key);
            }
            let cut = cut % bytes.len();
            proptest::prop_assert!(DedupIndex::from_bytes(&bytes[..cut]).is_none());
        }
    }
}
