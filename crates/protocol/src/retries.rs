//! Which stored events are a client's retry of one stored shortly before: decided from
//! the log alone (each record's request hash and receive time), in log order, so that
//! every reader of the log decides alike.
//!
//! Ingest answers a retry `duplicate` and stores nothing, but only for the requests it
//! saw itself: a retry that reaches another ingest node, or the rest of a batch that was
//! stored in part before its client was told to retry, is stored twice. The state and
//! the export then count the later copy as the retry it is.
//!
//! Only a log that several processes append to can hold such a copy; readers of a log
//! with one writer do not decide retries, and hold nothing for it.
//!
//! The rule matches ingest's own: an event is a retry when an event with the same
//! request hash was kept less than [`RETRY_WINDOW_MS`] before it (by receive time,
//! either way, for the clocks of two nodes). Ingest recognises a retry for at least that
//! long, so whatever one node stores by itself is never taken for one here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::stored::{RecordContent, StoredRecord, parse_hash_hex};

/// How long a byte-identical request is a retry of the one before it.
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The request hashes of the events kept in the last window, with when each was received.
/// Two generations, the older dropped whole once the newer is a window old: at least a
/// window of keys is always held, at most two. The older takes no more keys, so it is a
/// sorted array: 16 bytes a key, where the newer's hash table takes about twice that.
///
/// A key is 64 bits of the request hash: two different events within a day are taken
/// for one with a chance of about one in 10^12 per event at 20 million keys held, and a
/// client who could craft a colliding body could as well send the same bytes first,
/// which ingest takes for a retry anyway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retries {
    generation_start: i64,
    current: HashMap<u64, Seconds>,
    /// Sorted by key.
    previous: Vec<(u64, Seconds)>,
}

/// Receive time in seconds since the epoch: the window is a day, so seconds are fine
/// enough, and half the room of milliseconds.
type Seconds = u32;

fn seconds(ms: i64) -> Seconds {
    (ms.div_euclid(1000)).clamp(0, i64::from(Seconds::MAX)) as Seconds
}

/// The window, in seconds.
const WINDOW_SECONDS: u32 = (RETRY_WINDOW_MS / 1000) as u32;

impl Retries {
    /// Whether `record` is a retry of an event kept before it; remembers it otherwise.
    /// Only events count: feeds and contact links are idempotent already.
    pub fn is_retry(&mut self, record: &StoredRecord) -> bool {
        if !matches!(record.content, RecordContent::Event(_)) {
            return false;
        }
        let Some(hash) = parse_hash_hex(&record.request_hash) else {
            return false;
        };
        let key = hash as u64;
        let at = record.received_at;
        if at >= self.generation_start.saturating_add(RETRY_WINDOW_MS) {
            let mut previous: Vec<(u64, Seconds)> = self.current.drain().collect();
            previous.sort_unstable();
            self.previous = previous;
            self.generation_start = at;
        }
        let at = seconds(at);
        let kept_at = (self.current.get(&key).copied()).or_else(|| {
            let found = self.previous.binary_search_by_key(&key, |(k, _)| *k);
            found.ok().map(|i| self.previous[i].1)
        });
        if kept_at.is_some_and(|kept| at.abs_diff(kept) < WINDOW_SECONDS) {
            return true;
        }
        self.current.insert(key, at);
        false
    }

    /// How many request hashes are held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_snapshot(&self) -> RetriesSnapshot {
        let mut current: Vec<(u64, Seconds)> =
            self.current.iter().map(|(k, at)| (*k, *at)).collect();
        current.sort_unstable();
        RetriesSnapshot {
            generation_start: self.generation_start,
            current,
            previous: self.previous.clone(),
        }
    }

    pub fn from_snapshot(snapshot: RetriesSnapshot) -> Retries {
        let mut previous = snapshot.previous;
        previous.sort_unstable();
        Retries {
            generation_start: snapshot.generation_start,
            current: snapshot.current.into_iter().collect(),
            previous,
        }
    }
}

/// [`Retries`] as a snapshot of the state keeps them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetriesSnapshot {
    generation_start: i64,
    current: Vec<(u64, Seconds)>,
    previous: Vec<(u64, Seconds)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::{FeedItems, hash_hex};

    const HOUR: i64 = 60 * 60 * 1000;

    fn event(hash: u128, received_at: i64) -> StoredRecord {
        let body = serde_json::json!({"GeneralInfo": {"eventName": "MainPage", "siteId": "S", "cookies": {"sc": "v"}}});
        let crate::Incoming::Event(event) = crate::parse_value(&body, received_at).unwrap() else {
            panic!("an event")
        };
        StoredRecord {
            sealed: None,
            received_at,
            request_hash: hash_hex(hash),
            content: RecordContent::Event(event),
        }
    }

    #[test]
    fn a_repeat_within_the_window_either_way_is_a_retry_and_a_later_one_is_not() {
        let mut retries = Retries::default();
        let t = 1_700_000_000_000;
        assert!(!retries.is_retry(&event(1, t)));
        assert!(retries.is_retry(&event(1, t + HOUR)));
        // Another node's clock a little behind.
        assert!(retries.is_retry(&event(1, t - HOUR)));
        assert!(!retries.is_retry(&event(2, t + HOUR)));
        // A day later: the same bytes again are a new event, and the window starts anew.
        assert!(!retries.is_retry(&event(1, t + 24 * HOUR)));
        assert!(retries.is_retry(&event(1, t + 30 * HOUR)));
        // Two windows on, the oldest keys are gone, the last window's held.
        assert!(!retries.is_retry(&event(3, t + 49 * HOUR)));
        assert!(retries.is_retry(&event(1, t + 47 * HOUR)));
        assert_eq!(retries.len(), 2);
    }

    #[test]
    fn feeds_are_never_retries_and_a_snapshot_decides_as_the_original() {
        let mut retries = Retries::default();
        let feed = StoredRecord {
            sealed: None,
            received_at: 5,
            request_hash: hash_hex(9),
            content: RecordContent::Feed(FeedItems {
                site_id: "S".into(),
                items: Vec::new(),
            }),
        };
        assert!(!retries.is_retry(&feed) && !retries.is_retry(&feed));
        assert!(!retries.is_retry(&event(4, 10)));
        let json = serde_json::to_string(&retries.to_snapshot()).unwrap();
        let mut restored = Retries::from_snapshot(serde_json::from_str(&json).unwrap());
        assert_eq!(restored, retries);
        assert!(restored.is_retry(&event(4, 20)));
    }
}
