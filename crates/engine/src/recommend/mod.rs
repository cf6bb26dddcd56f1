//! Recommendations, computed from the same events as the rest of the state and current
//! the moment an event is applied: nothing is trained offline, and no job needs
//! scheduling.
//!
//! The models of a site:
//! - view sessions ([`Sessions`]): each visitor's product views, split where they pause
//!   for longer than [`SESSION_GAP_MS`]; next-item and also-viewed answers come from
//!   them;
//! - baskets (the same structure over orders: one "session" per order); bought-together
//!   and cart cross-sell come from them;
//! - time-decayed counts of views and of units sold ([`Popularity`]).
//!
//! [`query`] turns them, with the catalogue and the contact, into answers.

pub mod embeddings;
pub mod popularity;
pub mod query;
pub mod rules;
pub mod sessions;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::items::{ItemId, Items};

pub use embeddings::ItemEmbeddings;
pub use popularity::Popularity;
pub use query::{Algorithm, Answer, Request};
pub use sessions::{
    ComponentFigures, LatestSessions, LearnedFrom, LearningCopy, NO_VISITOR, NextItemParams,
    SessionId, Sessions, Tuning, TuningGoal, Voice,
};

/// Who a session belongs to: the state's contact number.
pub type Visitor = u32;

/// A visitor's views more than this apart belong to different sessions.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

const DAY_MS: f64 = 86_400_000.0;
/// Half-life of a view in "most viewed".
pub const VIEWS_HALF_LIFE_MS: f64 = 7.0 * DAY_MS;
/// Half-life of a unit sold in "bestsellers".
pub const SALES_HALF_LIFE_MS: f64 = 14.0 * DAY_MS;

/// One site's recommendation models.
#[derive(Clone, Serialize, Deserialize)]
pub struct Recommender {
    items: Items,
    sessions: Sessions,
    current: LatestSessions,
    baskets: Sessions,
    views: Popularity,
    sales: Popularity,
    #[serde(skip)]
    pub next_item: NextItemParams,
    #[serde(skip, default = "basket_params")]
    pub basket: NextItemParams,
    #[serde(skip)]
    pub repeat: RepeatParams,
}

/// How `personal` answers a visitor known by their orders: a blend of what they bought
/// (personal frequency, recent orders counting most), what was bought with it (by the
/// baskets' neighbours and by plain co-occurrence) and what sells. Each part is scaled to
/// a best of 1 before its weight applies, so a blend can be reduced to any one part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RepeatParams {
    /// The weight of their own purchases; 0 offers nothing bought before.
    pub weight: f32,
    /// Each older order counts this much less than the next.
    pub decay: f32,
    /// The weight of what baskets like theirs held (the baskets' neighbours).
    pub together_weight: f32,
    /// The weight of what was bought in the same orders as their products.
    pub cooccurrence_weight: f32,
    /// The weight of the bestsellers.
    pub popularity_weight: f32,
}

impl Default for RepeatParams {
    fn default() -> Self {
        RepeatParams {
            weight: 1.0,
            decay: 0.8,
            together_weight: 1.0,
            cooccurrence_weight: 0.0,
            popularity_weight: 0.0,
        }
    }
}

/// A site's tuned blends over its orders: `personal` for a visitor known by their
/// orders, and the two voices of `bought-together` and `cart-cross-sell`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BasketSettings {
    pub personal: RepeatParams,
    /// The weight of the baskets' neighbours in bought-together.
    pub together_neighbour_weight: f32,
    /// The weight of plain co-occurrence in bought-together.
    pub together_cooccurrence_weight: f32,
}

impl Default for BasketSettings {
    fn default() -> Self {
        let together = basket_params();
        BasketSettings {
            personal: RepeatParams::default(),
            together_neighbour_weight: together.neighbour_weight,
            together_cooccurrence_weight: together.cooccurrence_weight,
        }
    }
}

impl BasketSettings {
    /// The bought-together model's settings with these weights.
    pub fn together(&self) -> NextItemParams {
        NextItemParams {
            neighbour_weight: self.together_neighbour_weight,
            cooccurrence_weight: self.together_cooccurrence_weight,
            ..basket_params()
        }
    }
}

/// What a next-basket tuning maximises on the held-out baskets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BasketGoal {
    #[default]
    #[serde(rename = "recall")]
    Recall,
    #[serde(rename = "NDCG")]
    Ndcg,
}

impl BasketGoal {
    /// The figure maximised.
    pub fn of(self, recall: f64, ndcg: f64) -> f64 {
        match self {
            BasketGoal::Recall => recall,
            BasketGoal::Ndcg => ndcg,
        }
    }

    /// Its name in requests and reports.
    pub fn name(self) -> &'static str {
        match self {
            BasketGoal::Recall => "recall",
            BasketGoal::Ndcg => "NDCG",
        }
    }

    /// The goal a request names (`recall` or `NDCG`, any case).
    pub fn parse(name: &str) -> Option<BasketGoal> {
        [BasketGoal::Recall, BasketGoal::Ndcg]
            .into_iter()
            .find(|goal| goal.name().eq_ignore_ascii_case(name))
    }
}

/// A part's (or the choice's) next-basket figures on the validation baskets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartFigures {
    pub name: String,
    pub recall: f64,
    #[serde(rename = "NDCG")]
    pub ndcg: f64,
}

/// A bought-together voice's (or the choice's) figures, leave-one-out on the validation
/// baskets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TogetherFigures {
    pub name: String,
    #[serde(rename = "HR")]
    pub hit_rate: f64,
    #[serde(rename = "MRR")]
    pub mrr: f64,
}

/// How a choice of [`BasketSettings`] scored on held-out baskets, beside each part alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BasketTuning {
    pub goal: BasketGoal,
    pub validation_users: u64,
    pub tries: usize,
    /// The chosen blend for the next basket, on the validation baskets.
    pub recall: f64,
    #[serde(rename = "NDCG")]
    pub ndcg: f64,
    /// Each part alone on the same baskets.
    pub components: Vec<PartFigures>,
    /// Bought-together: each voice alone, then the choice (`chosen`), leave-one-out over
    /// the same baskets (HR + MRR maximised).
    pub bought_together: Vec<TogetherFigures>,
    pub seconds: f64,
}

/// The parts of a next-basket blend, each of which it can be reduced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasketPart {
    PersonalFrequency,
    BasketNeighbours,
    Cooccurrence,
    Popularity,
}

impl BasketPart {
    pub const ALL: [BasketPart; 4] = [
        BasketPart::PersonalFrequency,
        BasketPart::Cooccurrence,
        BasketPart::Popularity,
        BasketPart::BasketNeighbours,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BasketPart::PersonalFrequency => "personal-frequency",
            BasketPart::BasketNeighbours => "basket-neighbours",
            BasketPart::Cooccurrence => "co-occurrence",
            BasketPart::Popularity => "popularity",
        }
    }
}

impl RepeatParams {
    /// These settings with `part` alone weighed.
    pub fn alone(&self, part: BasketPart) -> RepeatParams {
        RepeatParams {
            weight: f32::from(part == BasketPart::PersonalFrequency),
            together_weight: f32::from(part == BasketPart::BasketNeighbours),
            cooccurrence_weight: f32::from(part == BasketPart::Cooccurrence),
            popularity_weight: f32::from(part == BasketPart::Popularity),
            ..self.clone()
        }
    }
}

impl Default for Recommender {
    fn default() -> Self {
        Recommender {
            items: Items::default(),
            sessions: Sessions::default(),
            current: LatestSessions::default(),
            baskets: Sessions::default(),
            views: Popularity::new(VIEWS_HALF_LIFE_MS),
            sales: Popularity::new(SALES_HALF_LIFE_MS),
            next_item: NextItemParams::default(),
            basket: basket_params(),
            repeat: RepeatParams::default(),
        }
    }
}

/// Baskets have no order, so nothing decays with position in them, and nothing already
/// in the basket is worth recommending again.
fn basket_params() -> NextItemParams {
    NextItemParams {
        neighbours: 100,
        prefix_decay: f32::INFINITY,
        neighbour_decay: f32::INFINITY,
        recency_half_life_ms: 365.0 * DAY_MS,
        successor_weight: 0.0,
        idf_power: 0.0,
        seen_weight: 0.0,
        ..NextItemParams::default()
    }
}

impl Recommender {
    /// A product view at `at`, by `visitor` when the event names someone.
    pub fn viewed(&mut self, visitor: Option<Visitor>, product_key: &str, at: i64) {
        let Some(item) = self.items.intern(product_key) else {
            return;
        };
        self.views.add(item, 1.0, at);
        let Some(visitor) = visitor else {
            return;
        };
        let session = match self.current.get(visitor) {
            Some(s)
                if at - self.sessions.last_at(s) <= SESSION_GAP_MS && self.sessions.has_room(s) =>
            {
                s
            }
            _ => {
                let s = self.sessions.start(at, visitor);
                self.current.set(visitor, s);
                s
            }
        };
        self.sessions.push(session, item, at);
    }

    /// A new order's lines (product key, quantity) at `at`. Bestsellers count orders,
    /// not units: one order of 80,000 units (a wholesale buyer's, or a mistake the shop
    /// later cancels) must not put a product ahead of what many people buy.
    pub fn purchased<'a>(&mut self, lines: impl IntoIterator<Item = (&'a str, u32)>, at: i64) {
        let basket = self.baskets.start(at, NO_VISITOR);
        let mut counted: Vec<ItemId> = Vec::new();
        for (key, _quantity) in lines {
            let Some(item) = self.items.intern(key) else {
                continue;
            };
            if !counted.contains(&item) {
                counted.push(item);
                self.sales.add(item, 1.0, at);
            }
            if self.baskets.has_room(basket) && !self.baskets.items(basket).contains(&item) {
                self.baskets.push(basket, item, at);
            }
        }
    }

    /// Answers from now on with `settings` for the questions over orders (what
    /// evaluations and tunings try; a server hands a site's own in each request).
    pub fn use_baskets(&mut self, settings: &BasketSettings) {
        self.repeat = settings.personal.clone();
        self.basket = settings.together();
    }

    /// The visitors who viewed `item` in its latest `sessions` sessions, latest first.
    pub fn viewers(&self, item: ItemId, sessions: usize) -> impl Iterator<Item = Visitor> {
        self.sessions.recent_visitors(item, sessions)
    }

    pub fn items(&self) -> &Items {
        &self.items
    }

    /// Learns item vectors from the view sessions as they are now, on `threads` threads,
    /// for the next-item model's `embedding_weight` (not kept in snapshots: learned again
    /// when asked).
    pub fn learn_embeddings(&mut self, threads: usize) {
        self.sessions.learn_embeddings(threads);
    }

    /// The latest view sessions, to learn vectors from off the state's lock.
    pub fn learning_copy(&self) -> LearningCopy {
        self.sessions.learning_copy()
    }

    /// Answers with `learned` from now on; hands back the vectors answered with before.
    pub fn use_embeddings(
        &mut self,
        learned: Arc<ItemEmbeddings>,
        from: LearnedFrom,
    ) -> Option<Arc<ItemEmbeddings>> {
        self.sessions.use_embeddings(learned, from)
    }

    /// Answers without vectors from now on; hands back those answered with before.
    pub fn forget_embeddings(&mut self) -> Option<Arc<ItemEmbeddings>> {
        self.sessions.forget_embeddings()
    }

    /// The vectors answered with, if any, and what they were learned from.
    pub fn embeddings(&self) -> Option<(&ItemEmbeddings, LearnedFrom)> {
        self.sessions.embeddings()
    }

    /// View sessions held.
    pub fn view_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Every view session, oldest first, as product keys with the time of its last view:
    /// what a site's tuning learns from.
    pub fn session_keys(&self) -> (Vec<Vec<String>>, Vec<i64>) {
        let mut sessions = Vec::with_capacity(self.sessions.len());
        let mut times = Vec::with_capacity(self.sessions.len());
        for s in 0..self.sessions.len() as SessionId {
            let items = self.sessions.items(s);
            if !items.is_empty() {
                sessions.push(
                    items
                        .iter()
                        .map(|i| self.items.key(*i).to_string())
                        .collect(),
                );
                times.push(self.sessions.last_at(s));
            }
        }
        (sessions, times)
    }

    /// A visitor number no view has named yet (visitor numbers are dense: contact
    /// numbers, or a data set's session numbers in evaluations).
    pub fn unused_visitor(&self) -> Visitor {
        self.current.unused()
    }

    /// The visitor's session, when their last view was within the session gap of `now`.
    pub fn current_session(&self, visitor: Visitor, now: i64) -> Option<SessionId> {
        let session = self.current.get(visitor)?;
        (now - self.sessions.last_at(session) <= SESSION_GAP_MS).then_some(session)
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
        let s = self.known(product_keys);
        self.named(self.sessions.next_items(&s, now, None, params, k))
    }

    /// How much of a product sold (decayed), for tests of what counts as a sale.
    #[cfg(test)]
    pub(crate) fn sold(&self, product_key: &str) -> f64 {
        self.items
            .get(product_key)
            .map_or(0.0, |item| self.sales.score(item))
    }

    /// The `k` most viewed products.
    pub fn most_viewed(&self, k: usize) -> Vec<&str> {
        let ranked = self.views.ranked();
        ranked.iter().take(k).map(|i| self.items.key(*i)).collect()
    }

    /// The number of a product key in the site's product dictionary, given at first sight
    /// (`None` once the dictionary is full).
    pub fn intern(&mut self, product_key: &str) -> Option<ItemId> {
        self.items.intern(product_key)
    }

    /// The product key of a number [`Recommender::intern`] gave.
    pub fn key(&self, item: ItemId) -> &str {
        self.items.key(item)
    }

    /// The number of a product key, when it has one.
    pub fn item(&self, product_key: &str) -> Option<ItemId> {
        self.items.get(product_key)
    }

    fn known(&self, product_keys: &[&str]) -> Vec<ItemId> {
        product_keys
            .iter()
            .filter_map(|key| self.items.get(key))
            .collect()
    }

    fn named(&self, scored: Vec<(ItemId, f32)>) -> Vec<(&str, f32)> {
        scored
            .into_iter()
            .map(|(item, score)| (self.items.key(item), score))
            .collect()
    }
}

#[cfg(test)]
mod tests;
