//! Which contact each identifier names.
//!
//! A million contacts have millions of identifiers, so an entry is kept small: a 96-bit
//! hash of the identifier (the strings live once, in the contacts) and the contact number,
//! 16 bytes. Two identifiers sharing a hash would take some 10^14 of them. The hash is
//! seeded per process: identifiers are chosen by clients, and an unseeded hash would let
//! them choose where their entries fall.
//!
//! Most entries sit in one array sorted by hash, with a directory of where each run of
//! equal top bits starts: 16 bytes an entry and nothing spare, where a hash table holds
//! each entry in 18 to 37 bytes as it fills and doubles. New identifiers go to a small
//! hash table first, merged into the array once they are an eighth of it (each entry is
//! moved a few times over the life of the index). An identifier let go leaves a hole in
//! the array until the next merge.

use std::collections::HashMap;

use crate::contacts::identity::{ContactId, Identifier};

type Key = [u32; 3];

/// A sorted entry: three words of hash and the contact, 16 bytes with no padding.
#[derive(Clone, Copy)]
struct Entry {
    key: Key,
    contact: ContactId,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// The contact of an entry whose identifier was let go.
const HOLE: ContactId = ContactId::MAX;
/// The directory has a slot per this many entries (by the top bits of the hash), up to
/// 2^[`MAX_DIRECTORY_BITS`]: a site with a few contacts has a small one.
const ENTRIES_PER_SLOT: usize = 32;
const MAX_DIRECTORY_BITS: u32 = 16;
/// New entries are merged into the array once there are this many, or an eighth of it.
const MIN_MERGE: usize = 1024;

pub struct IdentifierIndex {
    seed: u64,
    /// Sorted by key; `HOLE` marks an entry let go.
    sorted: Vec<Entry>,
    /// `directory[p]` is where entries with top bits `p` start in `sorted`; one more slot
    /// holds its length.
    directory: Vec<u32>,
    directory_bits: u32,
    holes: usize,
    /// Entries not merged into `sorted` yet.
    recent: HashMap<Key, ContactId, KeyHashing>,
}

/// Table hashing of a key, which is a seeded hash already: its first eight bytes, as they
/// are. Hashing it again (SipHash, the default) would cost about a twentieth of the
/// follower's time.
#[derive(Clone, Copy, Default)]
struct KeyHashing;

impl std::hash::BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A key's words arrive as one slice; its length prefix (`write_usize`) is ignored.
        let mut first = [0u8; 8];
        let take = bytes.len().min(8);
        first[..take].copy_from_slice(&bytes[..take]);
        self.0 ^= u64::from_ne_bytes(first);
    }

    fn write_usize(&mut self, _length: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for IdentifierIndex {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0u8)
        });
        IdentifierIndex {
            seed,
            sorted: Vec::new(),
            directory: vec![0; 2],
            directory_bits: 0,
            holes: 0,
            recent: HashMap::default(),
        }
    }
}

impl IdentifierIndex {
    fn key(&self, id: &Identifier) -> Key {
        let (kind, value) = match id {
            Identifier::Sc(v) => (b's', v),
            Identifier::ExternalCustomerId(v) => (b'x', v),
            Identifier::Email(v) => (b'e', v),
            Identifier::Phone(v) => (b'p', v),
            Identifier::EsContactId(v) => (b'c', v),
        };
        // One call over one buffer: the streaming hasher would derive a secret from the
        // seed on every identifier an event carries.
        let mut bytes = [0u8; 64];
        let hash = match bytes.get_mut(..value.len() + 1) {
            Some(buffer) => {
                buffer[0] = kind;
                buffer[1..].copy_from_slice(value.as_bytes());
                xxhash_rust::xxh3::xxh3_128_with_seed(buffer, self.seed)
            }
            None => {
                let mut long = Vec::with_capacity(value.len() + 1);
                long.push(kind);
                long.extend_from_slice(value.as_bytes());
                xxhash_rust::xxh3::xxh3_128_with_seed(&long, self.seed)
            }
        };
        [
            (hash >> 96) as u32,
            (hash >> 64) as u32,
            (hash >> 32) as u32,
        ]
    }

    /// Where `key` is in `sorted`, if it is there (also as a hole).
    fn position(&self, key: &Key) -> Option<usize> {
        let slot = self.slot(key);
        let (start, end) = (self.directory[slot], self.directory[slot + 1]);
        let run = &self.sorted[start as usize..end as usize];
        let found = run.binary_search_by(|entry| entry.key.cmp(key)).ok()?;
        Some(start as usize + found)
    }

    pub fn get(&self, id: &Identifier) -> Option<ContactId> {
        let key = self.key(id);
        if let Some(contact) = self.recent.get(&key) {
            return Some(*contact);
        }
        let contact = self.sorted[self.position(&key)?].contact;
        (contact != HOLE).then_some(contact)
    }

    pub fn contains(&self, id: &Identifier) -> bool {
        self.get(id).is_some()
    }

    pub fn insert(&mut self, id: &Identifier, contact: ContactId) {
        let key = self.key(id);
        if let Some(at) = self.position(&key) {
            if self.sorted[at].contact == HOLE {
                self.holes -= 1;
            }
            self.sorted[at].contact = contact;
            return;
        }
        self.recent.insert(key, contact);
        if self.recent.len() >= MIN_MERGE.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    pub fn remove(&mut self, id: &Identifier) {
        let key = self.key(id);
        if self.recent.remove(&key).is_some() {
            return;
        }
        if let Some(at) = self.position(&key)
            && self.sorted[at].contact != HOLE
        {
            self.sorted[at].contact = HOLE;
            self.holes += 1;
        }
    }

    /// Identifiers held.
    pub fn len(&self) -> usize {
        self.sorted.len() - self.holes + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the recent entries into the sorted array, leaving out its holes, into an
    /// array of exactly the size needed.
    fn merge(&mut self) {
        let mut recent: Vec<Entry> = (self.recent.drain())
            .map(|(key, contact)| Entry { key, contact })
            .collect();
        recent.sort_unstable_by_key(|e| e.key);
        let mut merged = Vec::with_capacity(self.sorted.len() - self.holes + recent.len());
        let mut old = self.sorted.iter().filter(|e| e.contact != HOLE).peekable();
        let mut new = recent.into_iter().peekable();
        loop {
            let take_old = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) => o.key < n.key,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_old {
                old.next().copied()
            } else {
                new.next()
            };
            merged.extend(next);
        }
        self.sorted = merged;
        self.holes = 0;
        self.index_directory();
    }

    fn slot(&self, key: &Key) -> usize {
        // A shift by 32 would overflow: with no bits, everything is in slot 0.
        (u64::from(key[0]) >> (32 - self.directory_bits)) as usize
    }

    fn index_directory(&mut self) {
        let slots = (self.sorted.len() / ENTRIES_PER_SLOT).max(1);
        self.directory_bits = slots.ilog2().min(MAX_DIRECTORY_BITS);
        self.directory = Vec::with_capacity((1 << self.directory_bits) + 1);
        let mut at = 0;
        for slot in 0..=(1usize << self.directory_bits) {
            while at < self.sorted.len() && self.slot(&self.sorted[at].key) < slot {
                at += 1;
            }
            self.directory.push(at as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(n: usize) -> Identifier {
        Identifier::Sc(format!("cookie-{n}").into())
    }

    #[test]
    fn finds_every_identifier_through_merges_changes_and_removals() {
        let mut index = IdentifierIndex::default();
        let count = 20_000;
        for n in 0..count {
            index.insert(&cookie(n), n as ContactId);
        }
        assert!(index.sorted.len() > count / 2, "most were merged");
        assert_eq!(index.len(), count);
        // Moved to another contact, let go, and taken again.
        for n in (0..count).step_by(3) {
            index.insert(&cookie(n), 7);
        }
        for n in (0..count).step_by(5) {
            index.remove(&cookie(n));
        }
        index.insert(&cookie(10), 11);
        for n in 0..count {
            let expected = match n {
                10 => Some(11),
                n if n % 5 == 0 => None,
                n if n % 3 == 0 => Some(7),
                n => Some(n as ContactId),
            };
            assert_eq!(index.get(&cookie(n)), expected, "{n}");
        }
        assert_eq!(index.get(&cookie(count)), None);
        let long = Identifier::Email(format!("{}@example.com", "a".repeat(100)).into());
        index.insert(&long, 3);
        assert_eq!(index.get(&long), Some(3));
        assert_eq!(index.get(&Identifier::Email("cookie-1".into())), None);
        // A merge leaves the holes out and keeps the rest.
        let held = index.len();
        for n in count..count + 5_000 {
            index.insert(&cookie(n), 1);
        }
        assert_eq!(index.holes, 0);
        assert_eq!(index.len(), held + 5_000);
        assert_eq!(index.get(&cookie(3)), Some(7));
        assert!(!index.contains(&cookie(5)));
    }
}
