//! Recognises what was stored already, so that it is acknowledged and not stored twice:
//! a byte-identical request within the retry window (a client retry), and a purchase whose
//! order number the site has already sent.
//!
//! A key is *claimed* before its record is appended and *settled* once the append is
//! durable (or failed). A duplicate that arrives while the original is still being written
//! waits for the original's outcome, so it is never acknowledged before the data is safe.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

/// How long a byte-identical request counts as a retry.
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateOf {
    /// The same request bytes were accepted within the retry window.
    Request,
    /// The site already sent a purchase with this order number.
    Order,
}

enum State {
    Durable,
    Pending(Vec<oneshot::Sender<bool>>),
}

pub enum Claim {
    /// Not seen: the caller appends the record, then calls [`DedupIndex::settle`].
    New,
    /// Stored already.
    Duplicate(DuplicateOf),
    /// Being stored by another request; the receiver says whether that succeeded.
    InFlight(DuplicateOf, oneshot::Receiver<bool>),
}

/// The keys of one record: its request hash and, for a purchase, its order key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub request: u128,
    pub order: Option<u128>,
}

pub fn order_key(site_id: &str, order_number: &str) -> u128 {
    let mut bytes = Vec::with_capacity(site_id.len() + order_number.len() + 1);
    bytes.extend_from_slice(site_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(order_number.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

#[derive(Default)]
pub struct DedupIndex {
    /// Request hash -> (receive time, state).
    requests: HashMap<u128, (i64, State)>,
    /// Order keys are kept for good: an order number is never reused.
    orders: HashMap<u128, State>,
    /// Request hashes in arrival order, for expiry.
    expiry: VecDeque<(i64, u128)>,
}

impl DedupIndex {
    pub fn claim(&mut self, keys: Keys, now_ms: i64) -> Claim {
        self.expire(now_ms);
        if let Some((_, state)) = self.requests.get_mut(&keys.request) {
            return state.duplicate(DuplicateOf::Request);
        }
        if let Some(order) = keys.order
            && let Some(state) = self.orders.get_mut(&order)
        {
            return state.duplicate(DuplicateOf::Order);
        }
        self.requests
            .insert(keys.request, (now_ms, State::Pending(Vec::new())));
        self.expiry.push_back((now_ms, keys.request));
        if let Some(order) = keys.order {
            self.orders.insert(order, State::Pending(Vec::new()));
        }
        Claim::New
    }

    /// Records the outcome of a claimed append and wakes the duplicates that waited on it.
    pub fn settle(&mut self, keys: Keys, durable: bool) {
        let mut waiters = Vec::new();
        if durable {
            if let Some((_, state)) = self.requests.get_mut(&keys.request) {
                waiters.extend(state.make_durable());
            }
            if let Some(state) = keys.order.and_then(|o| self.orders.get_mut(&o)) {
                waiters.extend(state.make_durable());
            }
        } else {
            if let Some((_, state)) = self.requests.remove(&keys.request) {
                waiters.extend(state.into_waiters());
            }
            if let Some(state) = keys.order.and_then(|o| self.orders.remove(&o)) {
                waiters.extend(state.into_waiters());
            }
        }
        for waiter in waiters {
            let _ = waiter.send(durable);
        }
    }

    /// Notes a record already in the log (when rebuilding the index at start or on import).
    pub fn insert_durable(&mut self, keys: Keys, received_at: i64, now_ms: i64) {
        if received_at > now_ms - RETRY_WINDOW_MS {
            self.requests
                .insert(keys.request, (received_at, State::Durable));
            self.expiry.push_back((received_at, keys.request));
        }
        if let Some(order) = keys.order {
            self.orders.insert(order, State::Durable);
        }
    }

    /// Whether this record would be a duplicate, without claiming anything.
    pub fn contains(&self, keys: Keys) -> bool {
        self.requests.contains_key(&keys.request)
            || keys.order.is_some_and(|o| self.orders.contains_key(&o))
    }

    pub fn len(&self) -> (usize, usize) {
        (self.requests.len(), self.orders.len())
    }

    fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms - RETRY_WINDOW_MS;
        while let Some(&(at, hash)) = self.expiry.front() {
            if at > horizon {
                break;
            }
            self.expiry.pop_front();
            // Only the entry this queue slot was made for: the hash may have been
            // claimed again since, with a later time.
            if let Some((stored_at, State::Durable)) = self.requests.get(&hash)
                && *stored_at == at
            {
                self.requests.remove(&hash);
            }
        }
    }
}

impl State {
    fn duplicate(&mut self, of: DuplicateOf) -> Claim {
        match self {
            State::Durable => Claim::Duplicate(of),
            State::Pending(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Claim::InFlight(of, rx)
            }
        }
    }

    fn make_durable(&mut self) -> Vec<oneshot::Sender<bool>> {
        match std::mem::replace(self, State::Durable) {
            State::Pending(waiters) => waiters,
            State::Durable => Vec::new(),
        }
    }

    fn into_waiters(self) -> Vec<oneshot::Sender<bool>> {
        match self {
            State::Pending(waiters) => waiters,
            State::Durable => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn keys(request: u128, order: Option<u128>) -> Keys {
        Keys { request, order }
    }

    #[test]
    fn retries_are_duplicates_within_the_window_only() {
        let mut index = DedupIndex::default();
        assert!(matches!(index.claim(keys(1, None), 0), Claim::New));
        index.settle(keys(1, None), true);
        assert!(matches!(
            index.claim(keys(1, None), 23 * HOUR),
            Claim::Duplicate(DuplicateOf::Request)
        ));
        assert!(matches!(index.claim(keys(1, None), 25 * HOUR), Claim::New));
    }

    #[test]
    fn order_numbers_are_remembered_for_good() {
        let mut index = DedupIndex::default();
        let order = order_key("S", "123/2017");
        assert!(matches!(index.claim(keys(1, Some(order)), 0), Claim::New));
        index.settle(keys(1, Some(order)), true);
        let later = 400 * 24 * HOUR;
        assert!(matches!(
            index.claim(keys(2, Some(order)), later),
            Claim::Duplicate(DuplicateOf::Order)
        ));
        assert_ne!(order_key("S", "1"), order_key("T", "1"));
    }

    #[tokio::test]
    async fn a_duplicate_in_flight_learns_the_outcome_of_the_original() {
        let mut index = DedupIndex::default();
        assert!(matches!(index.claim(keys(7, None), 0), Claim::New));
        let Claim::InFlight(_, waiting) = index.claim(keys(7, None), 0) else {
            panic!()
        };
        index.settle(keys(7, None), false);
        assert!(!waiting.await.unwrap());
        // The failed original left no trace: the retry is new.
        assert!(matches!(index.claim(keys(7, None), 0), Claim::New));
        let Claim::InFlight(_, waiting) = index.claim(keys(7, None), 0) else {
            panic!()
        };
        index.settle(keys(7, None), true);
        assert!(waiting.await.unwrap());
    }
}
