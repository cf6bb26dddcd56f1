//! Which stored events are a client's retry of one stored shortly before: decided from
//! the log alone (each record's request hash and receive time), in log order, so that
//! every reader of the log decides alike.
//!
//! Ingest answers a retry `duplicate` and stores nothing, but only for the requests it
//! saw itself: a retry that reaches another ingest node, or the rest of a batch that was
//! stored in part before its client was told to retry, is stored twice. The state and
//! the export then count the later copy as the retry it is.
//!
//! The rule matches ingest's own: an event is a retry when an event with the same
//! request hash was kept less than [`RETRY_WINDOW_MS`] before it (by receive time,
//! either way, for the clocks of two nodes). Ingest recognises a retry for at least that
//! long, so whatever one node stores by itself is never taken for one here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::stored::{RecordContent, StoredRecord, hash_hex, parse_hash_hex};

/// How long a byte-identical request is a retry of the one before it.
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The request hashes of the events kept in the last window, with when each was received.
/// Two generations, the older dropped whole once the newer is a window old: at least a
/// window of keys is always held, at most two.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retries {
    generation_start: i64,
    current: HashMap<u128, i64>,
    previous: HashMap<u128, i64>,
}

impl Retries {
    /// Whether `record` is a retry of an event kept before it; remembers it otherwise.
    /// Only events count: feeds and contact links are idempotent already.
    pub fn is_retry(&mut self, record: &StoredRecord) -> bool {
        if !matches!(record.content, RecordContent::Event(_)) {
            return false;
        }
        let Some(key) = parse_hash_hex(&record.request_hash) else {
            return false;
        };
        let at = record.received_at;
        if at >= self.generation_start.saturating_add(RETRY_WINDOW_MS) {
            self.previous = std::mem::take(&mut self.current);
            self.generation_start = at;
        }
        let kept_at = (self.current.get(&key)).or_else(|| self.previous.get(&key));
        if kept_at.is_some_and(|kept| at.abs_diff(*kept) < RETRY_WINDOW_MS as u64) {
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
        let keys = |generation: &HashMap<u128, i64>| {
            (generation.iter())
                .map(|(key, at)| (hash_hex(*key), *at))
                .collect()
        };
        RetriesSnapshot {
            generation_start: self.generation_start,
            current: keys(&self.current),
            previous: keys(&self.previous),
        }
    }

    pub fn from_snapshot(snapshot: RetriesSnapshot) -> Retries {
        let keys = |generation: Vec<(String, i64)>| {
            (generation.into_iter())
                .filter_map(|(key, at)| Some((parse_hash_hex(&key)?, at)))
                .collect()
        };
        Retries {
            generation_start: snapshot.generation_start,
            current: keys(snapshot.current),
            previous: keys(snapshot.previous),
        }
    }
}

/// [`Retries`] as a snapshot of the state keeps them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetriesSnapshot {
    generation_start: i64,
    current: Vec<(String, i64)>,
    previous: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::FeedItems;

    const HOUR: i64 = 60 * 60 * 1000;

    fn event(hash: u128, received_at: i64) -> StoredRecord {
        let body = serde_json::json!({"GeneralInfo": {"eventName": "MainPage", "siteId": "S", "cookies": {"sc": "v"}}});
        let crate::Incoming::Event(event) = crate::parse_value(&body, received_at).unwrap() else {
            panic!("an event")
        };
        StoredRecord {
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
