//! Records' decoded forms, handed from the code that appends them to a follower of the
//! log in the same process, so that the follower need not decode again what was just
//! encoded.
//!
//! Entries are keyed by a 128-bit hash of the record's bytes. A follower looks each record
//! it reads up by the bytes it read: a record nobody handed over (one imported, or one
//! written by another process) or one rewritten since (redacted) is simply not found, and
//! the follower decodes it as it would without a handoff. What is handed over must be
//! exactly what the bytes decode to.
//!
//! Bounded in entries and in the bytes of the records they stand for (a client that posts
//! large events while the follower is behind would otherwise park gigabytes here):
//! entries nobody takes (an append that failed; a follower far behind) make room for newer
//! ones, oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::PoisonError;

pub struct Handoff<T> {
    entries: Mutex<Entries<T>>,
    capacity: usize,
    byte_capacity: usize,
}

struct Entries<T> {
    /// Each value with the length of the record it was handed over for.
    values: HashMap<u128, (T, usize)>,
    /// The lengths of the records of `values`, added up.
    bytes: usize,
    /// Keys in the order they were handed over; some may have been taken since.
    order: VecDeque<u128>,
}

impl<T> Handoff<T> {
    /// A handoff holding at most `capacity` entries, for records of at most
    /// `byte_capacity` bytes together.
    pub fn new(capacity: usize, byte_capacity: usize) -> Self {
        Handoff {
            entries: Mutex::new(Entries {
                values: HashMap::new(),
                bytes: 0,
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            byte_capacity,
        }
    }

    /// Hands over the decoded form of the record `payload`, before it is appended.
    pub fn deposit(&self, payload: &[u8], value: T) {
        if payload.len() > self.byte_capacity {
            // Larger than the whole budget: the follower decodes it itself.
            return;
        }
        let key = xxhash_rust::xxh3::xxh3_128(payload);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // The key list also holds keys taken since: it is trimmed by length, not by the
        // number of values, or a follower that takes everything would let it grow.
        while entries.values.len() >= self.capacity
            || entries.order.len() >= 2 * self.capacity
            || (entries.bytes + payload.len() > self.byte_capacity && !entries.values.is_empty())
        {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            if let Some((_, length)) = entries.values.remove(&oldest) {
                entries.bytes -= length;
            }
        }
        entries.bytes += payload.len();
        if let Some((_, replaced)) = entries.values.insert(key, (value, payload.len())) {
            entries.bytes -= replaced;
        }
        entries.order.push_back(key);
    }

    /// Takes the decoded form of the record read as `payload`, if one was handed over.
    pub fn take(&self, payload: &[u8]) -> Option<T> {
        let key = xxhash_rust::xxh3::xxh3_128(payload);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, length) = entries.values.remove(&key)?;
        entries.bytes -= length;
        Some(value)
    }

    /// Drops every entry (after a redaction: they may hold what was just redacted).
    pub fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.values.clear();
        entries.bytes = 0;
        entries.order.clear();
    }

    /// Entries waiting to be taken.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_found_by_its_bytes_once() {
        let handoff = Handoff::new(4, 1 << 20);
        handoff.deposit(b"record one", 1);
        handoff.deposit(b"record two", 2);
        assert_eq!(handoff.take(b"record two"), Some(2));
        assert_eq!(handoff.take(b"record two"), None);
        // Bytes rewritten since (a redaction) are not the bytes handed over.
        assert_eq!(handoff.take(b"record 0ne"), None);
        assert_eq!(handoff.take(b"record one"), Some(1));
        assert!(handoff.is_empty());
        handoff.deposit(b"record three", 3);
        handoff.clear();
        assert_eq!(handoff.take(b"record three"), None);
    }

    #[test]
    fn what_nobody_takes_makes_room_oldest_first() {
        let handoff = Handoff::new(3, 1 << 20);
        for i in 0..5u8 {
            handoff.deposit(&[i], i);
        }
        assert_eq!(handoff.len(), 3);
        assert_eq!(handoff.take(&[0]), None);
        assert_eq!(handoff.take(&[1]), None);
        assert_eq!(handoff.take(&[4]), Some(4));
    }

    #[test]
    fn taking_everything_keeps_the_key_list_bounded() {
        let handoff = Handoff::new(8, 1 << 20);
        for i in 0..10_000u32 {
            handoff.deposit(&i.to_le_bytes(), i);
            assert_eq!(handoff.take(&i.to_le_bytes()), Some(i));
        }
        assert!(handoff.entries.lock().unwrap().order.len() <= 16);
    }

    #[test]
    fn large_records_make_room_by_their_bytes() {
        let handoff = Handoff::new(100, 10);
        handoff.deposit(b"aaaa", 1);
        handoff.deposit(b"bbbb", 2);
        handoff.deposit(b"cccc", 3);
        assert_eq!(handoff.len(), 2, "12 bytes do not fit in 10");
        assert_eq!(handoff.take(b"aaaa"), None);
        handoff.deposit(b"far more than ten bytes", 4);
        assert_eq!(handoff.take(b"far more than ten bytes"), None, "never held");
        assert_eq!(handoff.take(b"cccc"), Some(3));
        assert_eq!(handoff.entries.lock().unwrap().bytes, 4);
    }
}
