//! Recommendations, computed from the same events as the rest of the state and current
//! the moment an event is applied: nothing is trained offline, and no job needs
//! scheduling.

pub mod items;
pub mod sessions;

use rustc_hash::FxHashMap;

pub use items::{ItemId, Items};
pub use sessions::{NextItemParams, SessionId, Sessions};

/// Who a session belongs to: the state's contact number.
pub type Visitor = u32;

/// A visitor's views more than this apart belong to different sessions.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// One site's recommendation models.
#[derive(Default)]
pub struct Recommender {
    items: Items,
    sessions: Sessions,
    current: FxHashMap<Visitor, SessionId>,
    pub next_item: NextItemParams,
}

impl Recommender {
    /// `visitor` viewed `product_key` at `at`.
    pub fn viewed(&mut self, visitor: Visitor, product_key: &str, at: i64) {
        let item = self.items.intern(product_key);
        let session = match self.current.get(&visitor) {
            Some(s)
                if at - self.sessions.last_at(*s) <= SESSION_GAP_MS
                    && self.sessions.has_room(*s) =>
            {
                *s
            }
            _ => {
                let s = self.sessions.start(at);
                self.current.insert(visitor, s);
                s
            }
        };
        self.sessions.push(session, item, at);
    }

    pub fn items(&self) -> &Items {
        &self.items
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The products most likely viewed after `product_keys` (oldest first), best first.
    /// Keys never viewed are ignored.
    pub fn next_items(&self, product_keys: &[&str], now: i64, k: usize) -> Vec<(&str, f32)> {
        self.next_items_with(&self.next_item, product_keys, now, k)
    }

    /// [`Recommender::next_items`] with other settings (to tune them).
    pub fn next_items_with(
        &self,
        params: &NextItemParams,
        product_keys: &[&str],
        now: i64,
        k: usize,
    ) -> Vec<(&str, f32)> {
        let s: Vec<ItemId> = product_keys
            .iter()
            .filter_map(|key| self.items.get(key))
            .collect();
        self.named(self.sessions.next_items(&s, now, None, params, k))
    }

    fn named(&self, scored: Vec<(ItemId, f32)>) -> Vec<(&str, f32)> {
        scored
            .into_iter()
            .map(|(item, score)| (self.items.key(item), score))
            .collect()
    }
}
