//! Browsing sessions and the next-item model over them.
//!
//! Every session (a visitor's product views with no gap longer than the session gap) is
//! kept as its sequence of items, with a posting list per item of the sessions that viewed
//! it. There is no trained model: a question is answered from the sessions as they are
//! now, so a view counts from the moment it is applied.
//!
//! The next items for a sequence `s` (the visitor's current session, most recent last) are
//! scored by voices, each normalised to a top score of 1 and blended:
//!
//! - **Neighbours** (session-kNN in the manner of STAN): the recent sessions that share
//!   items with `s`. A shared item counts more the later it is in `s` (`prefix_decay`), a
//!   neighbour counts less the longer ago it was active (`recency_half_life_ms`) and is
//!   divided by its length to a power (`length_power`), and a shared item counts more the
//!   rarer it is (`shared_idf_power`); the best `neighbours` of them
//!   vote for their items, each vote weaker the further the item is from the point where
//!   the neighbour meets `s` (`neighbour_decay`).
//! - **Successors** (sequential rules, computed at question time): in recent sessions
//!   that viewed the last item of `s`, the items viewed within `successor_steps` after it,
//!   each counted `1 / distance`; the successors of earlier items of `s` count too, less
//!   the further back the item is (`successor_depth`).
//! - **Repeats** (session popularity with recency): the items of `s` itself, each view
//!   counting less the further back it is (`repeat_decay`).
//! - **Co-occurrence**: the items of the recent sessions that share an item with `s`,
//!   each counted once per session and shared item (weighted by the shared item's place
//!   in `s`, as the neighbours weigh it), without the neighbours' similarity, ranking or
//!   positions.
//!
//! The blend is then scaled by what is in demand now (`trend_power`): an item's sessions
//! active within `trend_window_ms`, so that of two products equally likely by the
//! sessions, the one many visitors look at this week comes first; and one that no one has
//! looked at for long counts less (`stale_half_life_ms`).
//!
//! Each voice has its weight (`*_weight`), so a site's tuning can land on any one of them
//! alone or on a blend: the simple methods a shop could run itself are all within reach
//! of the tuning, and it keeps one only where the site's own held-out sessions say so.
//!
//! Items of `s` itself are not excluded: people come back to what they looked at, and
//! the neighbours know how often; `seen_weight` scales them further.
//!
//! The defaults are the neighbours and the successors as `spoor_eval::tune_next_item`
//! chose them on held-out sessions of a public data set, without the repeats and the
//! co-occurrence: those two add a little there (BENCHMARKS.md) and cost the most per
//! question, so a site hears them only once its own tuning chose them.

use std::cell::RefCell;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::embeddings::{DIMENSIONS, ItemEmbeddings};
use crate::items::ItemId;

pub type SessionId = u32;

/// A session longer than this goes on as a new one (robots, and the cost of a question).
pub const MAX_SESSION_ITEMS: usize = 200;

/// How a choice of [`NextItemParams`] scored on held-out sessions, beside the built-in
/// settings and each voice alone on the same cases: what `spoor_eval` reports and a
/// site's tuning keeps, so that a shop sees why the choice was made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tuning {
    /// What the choice maximised.
    #[serde(default)]
    pub goal: TuningGoal,
    /// Whether answers were scored as `personal` serves them (the products already in
    /// the session left out, so the repeats can win nothing) rather than as in the
    /// published results (any product).
    #[serde(default)]
    pub as_served: bool,
    pub validation_sessions: usize,
    pub validation_cases: u64,
    pub tries: usize,
    #[serde(rename = "HR@k")]
    pub hit_rate: f64,
    #[serde(rename = "MRR@k")]
    pub mrr: f64,
    /// The built-in settings on the same validation cases, for comparison.
    #[serde(rename = "defaults_HR@k", default)]
    pub default_hit_rate: f64,
    #[serde(rename = "defaults_MRR@k", default)]
    pub default_mrr: f64,
    /// Each voice alone (the simple methods) on the same validation cases.
    #[serde(default)]
    pub components: Vec<ComponentFigures>,
    pub seconds: f64,
}

/// One simple method's figures on the validation cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentFigures {
    pub name: String,
    #[serde(rename = "HR@k")]
    pub hit_rate: f64,
    #[serde(rename = "MRR@k")]
    pub mrr: f64,
}

/// The metric a site's tuning maximises on its held-out sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TuningGoal {
    /// Hit rate: how often the next product is among the answers at all.
    #[serde(rename = "HR")]
    HitRate,
    /// Mean reciprocal rank: how near the top it is.
    #[serde(rename = "MRR")]
    Mrr,
    /// Their sum, the built-in choice.
    #[default]
    #[serde(rename = "both")]
    Both,
}

impl TuningGoal {
    /// The figure maximised, from a hit rate and an MRR.
    pub fn of(self, hit_rate: f64, mrr: f64) -> f64 {
        match self {
            TuningGoal::HitRate => hit_rate,
            TuningGoal::Mrr => mrr,
            TuningGoal::Both => hit_rate + mrr,
        }
    }

    /// Its name in requests and reports.
    pub fn name(self) -> &'static str {
        match self {
            TuningGoal::HitRate => "HR",
            TuningGoal::Mrr => "MRR",
            TuningGoal::Both => "both",
        }
    }

    /// The goal a request names (`HR`, `MRR` or `both`, any case).
    pub fn parse(name: &str) -> Option<TuningGoal> {
        [TuningGoal::HitRate, TuningGoal::Mrr, TuningGoal::Both]
            .into_iter()
            .find(|goal| goal.name().eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NextItemParams {
    /// The neighbours' weight in the blend.
    pub neighbour_weight: f32,
    /// Neighbour sessions that vote.
    pub neighbours: usize,
    /// The most recent sessions of each item of `s` considered as neighbours.
    pub sample: usize,
    /// Positions over which a shared item's weight in `s` falls by 1/e.
    pub prefix_decay: f32,
    /// Age at which a neighbour's weight halves.
    pub recency_half_life_ms: f64,
    /// Positions over which a neighbour's vote for an item falls by 1/e.
    pub neighbour_decay: f32,
    /// Items after an item of `s` that the successor voice counts.
    pub successor_steps: usize,
    /// The most recent sessions of the last item of `s` that the successor voice reads
    /// (of an earlier item, this share by its weight: see `successor_depth`).
    pub successor_sample: usize,
    /// The successor voice's weight in the blend (the neighbours' is 1).
    pub successor_weight: f32,
    /// Positions over which the successors of an earlier item of `s` count 1/e less than
    /// those of its last (0: the last item's alone; at most [`MAX_SUCCESSOR_DEPTH`]).
    pub successor_depth: f32,
    /// Popularity correction of the neighbours' votes: above 0, a vote is scaled by the
    /// item's log inverse session frequency to this power; below 0, by its session count
    /// to this power (so popular items stop crowding out the rest).
    pub idf_power: f32,
    /// Multiplies the score of items already in `s`, except its last.
    pub seen_weight: f32,
    /// A neighbour's similarity is divided by its length (distinct items) to this power
    /// (0.5: cosine).
    pub length_power: f32,
    /// The repeats' weight in the blend.
    pub repeat_weight: f32,
    /// Positions over which a view's weight in the repeats falls by 1/e.
    pub repeat_decay: f32,
    /// The co-occurrence voice's weight in the blend.
    pub cooccurrence_weight: f32,
    /// Rarity of a shared item in a neighbour's similarity: as `idf_power` does to the
    /// votes, a shared item's weight is scaled by its session frequency (so that two
    /// sessions meeting on a rarely viewed product are closer than two meeting on the
    /// shop's best seller).
    pub shared_idf_power: f32,
    /// What is in demand now: the blend's score of an item is multiplied by
    /// `(1 + its sessions active within trend_window_ms)` to this power.
    pub trend_power: f32,
    /// How far back the trend counts an item's sessions.
    pub trend_window_ms: f64,
    /// What no one has viewed lately (sold out, out of season): the blend's score of an
    /// item halves for every `stale_half_life_ms` since its latest session (0: never).
    pub stale_half_life_ms: f64,
    /// The learned vectors' say: the blend's best [`RESCORED`] answers are scored again,
    /// each by its blend score (the best = 1) plus this weight times its closeness to the
    /// session's vector (the closest = 1). Heard once vectors are learned: by an
    /// evaluation from its training sessions, by a running server for each site whose
    /// settings give them weight (a product newer than the vectors has none, and is
    /// taken as close as the others answered are on average until they are learned
    /// again).
    pub embedding_weight: f32,
}

/// The voices of the next-item model, each of which a blend can be reduced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Neighbours,
    Successors,
    Repeats,
    Cooccurrence,
}

impl Voice {
    pub const ALL: [Voice; 4] = [
        Voice::Repeats,
        Voice::Successors,
        Voice::Cooccurrence,
        Voice::Neighbours,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Voice::Neighbours => "session-neighbours",
            Voice::Successors => "sequential-rules",
            Voice::Repeats => "repeat-first",
            Voice::Cooccurrence => "co-occurrence",
        }
    }
}

impl NextItemParams {
    /// These settings with `voice` alone heard, and nothing else changed by the blend
    /// (items of `s` scored as the voice scores them, no demand weights); the voice keeps
    /// its own settings (such as `successor_depth`).
    pub fn alone(&self, voice: Voice) -> NextItemParams {
        NextItemParams {
            neighbour_weight: f32::from(voice == Voice::Neighbours),
            successor_weight: f32::from(voice == Voice::Successors),
            repeat_weight: f32::from(voice == Voice::Repeats),
            cooccurrence_weight: f32::from(voice == Voice::Cooccurrence),
            seen_weight: 1.0,
            trend_power: 0.0,
            stale_half_life_ms: 0.0,
            embedding_weight: 0.0,
            ..self.clone()
        }
    }
}

impl Default for NextItemParams {
    fn default() -> Self {
        NextItemParams {
            neighbour_weight: 1.0,
            neighbours: 200,
            sample: 1000,
            prefix_decay: 2.0,
            recency_half_life_ms: 60.0 * 86_400_000.0,
            neighbour_decay: 8.0,
            successor_steps: 5,
            successor_sample: 2000,
            successor_weight: 0.1,
            successor_depth: 0.0,
            idf_power: -0.3,
            seen_weight: 2.0,
            length_power: 0.5,
            repeat_weight: 0.0,
            repeat_decay: 3.0,
            cooccurrence_weight: 0.0,
            shared_idf_power: 0.0,
            trend_power: 0.0,
            trend_window_ms: 7.0 * 86_400_000.0,
            stale_half_life_ms: 0.0,
            embedding_weight: 0.0,
        }
    }
}

/// Each visitor's latest session, by visitor number: a dense table of 4 bytes a visitor
/// where a hash map takes some 20, as visitor numbers are contact numbers, counting up
/// from 0. Snapshots keep it as a map of the visitors that have a session.
#[derive(Clone, Default)]
pub struct LatestSessions(Vec<SessionId>);

/// A visitor without a session.
const NO_SESSION: SessionId = SessionId::MAX;

impl LatestSessions {
    pub fn get(&self, visitor: u32) -> Option<SessionId> {
        self.0
            .get(visitor as usize)
            .copied()
            .filter(|s| *s != NO_SESSION)
    }

    pub fn set(&mut self, visitor: u32, session: SessionId) {
        let index = visitor as usize;
        if self.0.len() <= index {
            self.0.resize(index + 1, NO_SESSION);
        }
        self.0[index] = session;
    }

    /// A visitor number above every one seen so far.
    pub fn unused(&self) -> u32 {
        self.0.len() as u32
    }
}

impl Serialize for LatestSessions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            (0..self.0.len() as u32).filter_map(|v| self.get(v).map(|session| (v, session))),
        )
    }
}

impl<'de> Deserialize<'de> for LatestSessions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<u32, SessionId>::deserialize(deserializer)?;
        let mut latest = LatestSessions::default();
        for (visitor, session) in map {
            latest.set(visitor, session);
        }
        Ok(latest)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Session {
    /// Exactly as long as the session (a `Vec` would keep a length, a capacity and spare
    /// room for every one of millions of sessions, most of a dozen views or fewer).
    items: Box<[ItemId]>,
    distinct: u32,
    /// Whose session it is ([`NO_VISITOR`] for a basket): product triggers ask who viewed
    /// a product, and the postings already say which sessions did. (In room the struct's
    /// alignment left free.)
    visitor: u32,
    last_at: i64,
}

/// The visitor of a session that has none (an order's basket).
pub const NO_VISITOR: u32 = u32::MAX;

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Sessions {
    sessions: Vec<Session>,
    /// By item: the sessions that viewed it, in the order of their first view of it.
    postings: Vec<Vec<SessionId>>,
    /// The latest view: neighbours' ages are counted up to it at most, so that a site
    /// whose traffic stopped long ago (a data set loaded for a demo) still has neighbours.
    newest: i64,
    /// Vectors learned from the sessions, when asked for, and from what: a model of its
    /// own, learned again from the sessions rather than kept in snapshots.
    #[serde(skip)]
    embeddings: Option<(Arc<ItemEmbeddings>, LearnedFrom)>,
}

/// Views a learning of vectors copies at most: those of the latest sessions (20 MB of
/// product numbers, and 8 bytes a session).
pub const MAX_LEARNED_VIEWS: usize = 5_000_000;

/// What vectors were learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnedFrom {
    /// The site's sessions then.
    pub sessions: usize,
    /// The latest of them copied to learn from.
    pub read: usize,
}

/// The latest sessions, copied out of the state so that vectors are learned without
/// holding its lock.
pub struct LearningCopy {
    items: Vec<ItemId>,
    /// Where each session's items end in `items`.
    ends: Vec<usize>,
    products: usize,
    sessions: usize,
}

impl LearningCopy {
    /// What the vectors learned from this copy are learned from.
    pub fn learned_from(&self) -> LearnedFrom {
        LearnedFrom {
            sessions: self.sessions,
            read: self.ends.len(),
        }
    }

    /// Learns the vectors on `threads` threads (seconds for a shop of tens of thousands
    /// of products).
    pub fn learn(&self, threads: usize) -> ItemEmbeddings {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let sessions = starts
            .zip(&self.ends)
            .map(|(start, end)| &self.items[start..*end]);
        ItemEmbeddings::learn(sessions, self.products, DIMENSIONS, threads)
    }
}

impl Sessions {
    /// A new session of `visitor` (or [`NO_VISITOR`]).
    pub fn start(&mut self, at: i64, visitor: u32) -> SessionId {
        self.sessions.push(Session {
            items: Box::default(),
            distinct: 0,
            visitor,
            last_at: at,
        });
        (self.sessions.len() - 1) as SessionId
    }

    /// Whether `session` can take another view.
    pub fn has_room(&self, session: SessionId) -> bool {
        self.sessions[session as usize].items.len() < MAX_SESSION_ITEMS
    }

    pub fn last_at(&self, session: SessionId) -> i64 {
        self.sessions[session as usize].last_at
    }

    pub fn items(&self, session: SessionId) -> &[ItemId] {
        &self.sessions[session as usize].items
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn push(&mut self, session: SessionId, item: ItemId, at: i64) {
        let s = &mut self.sessions[session as usize];
        if !s.items.contains(&item) {
            s.distinct += 1;
            let index = item as usize;
            if self.postings.len() <= index {
                self.postings.resize_with(index + 1, Vec::new);
            }
            let posting = &mut self.postings[index];
            if posting.len() == posting.capacity() {
                // Grown by a quarter rather than doubled: a site's postings hold a session
                // number for nearly every view, and doubling would leave up to half of
                // each list empty (a quarter on average).
                posting.reserve_exact((posting.len() / 4).max(4));
            }
            posting.push(session);
        }
        // One reallocation a view, in place while the allocator's block has room.
        let mut items = std::mem::take(&mut s.items).into_vec();
        items.reserve_exact(1);
        items.push(item);
        s.items = items.into_boxed_slice();
        s.last_at = s.last_at.max(at);
        self.newest = self.newest.max(at);
    }

    /// The visitors of the latest `sessions` sessions that viewed `item`, latest first
    /// (a visitor once for each of their sessions).
    pub fn recent_visitors(&self, item: ItemId, sessions: usize) -> impl Iterator<Item = u32> {
        let recent = self.recent_sessions(item, sessions).iter().rev();
        recent
            .map(|s| self.sessions[*s as usize].visitor)
            .filter(|v| *v != NO_VISITOR)
    }

    fn recent_sessions(&self, item: ItemId, sample: usize) -> &[SessionId] {
        match self.postings.get(item as usize) {
            Some(list) => &list[list.len().saturating_sub(sample)..],
            None => &[],
        }
    }

    /// Scores for the items likely to follow `s`, best first, at most `k`; `own` is the
    /// session `s` comes from, which is not its own neighbour.
    pub fn next_items(
        &self,
        s: &[ItemId],
        now: i64,
        own: Option<SessionId>,
        params: &NextItemParams,
        k: usize,
    ) -> Vec<(ItemId, f32)> {
        let Some(&last) = s.last() else {
            return Vec::new();
        };
        BOARDS.with_borrow_mut(|(scores, voice)| {
            scores.prepare(self.postings.len());
            voice.prepare(self.postings.len());
            if params.neighbour_weight > 0.0 {
                self.neighbour_votes(s, now, own, params, voice);
                voice.blend_into(scores, params.neighbour_weight);
            }
            if params.successor_weight > 0.0 {
                self.successor_votes(s, own, params, voice);
                voice.blend_into(scores, params.successor_weight);
            }
            if params.repeat_weight > 0.0 {
                repeat_votes(s, params, voice);
                voice.blend_into(scores, params.repeat_weight);
            }
            if params.cooccurrence_weight > 0.0 {
                self.cooccurrence_votes(s, own, params, voice);
                voice.blend_into(scores, params.cooccurrence_weight);
            }
            if params.trend_power != 0.0 || params.stale_half_life_ms > 0.0 {
                self.weigh_by_demand(now, params, scores);
            }
            if params.seen_weight != 1.0 {
                for item in &s[..s.len() - 1] {
                    if *item != last {
                        scores.scale(*item, params.seen_weight);
                    }
                }
            }
            match (&self.embeddings, params.embedding_weight > 0.0) {
                (Some((learned, _)), true) => {
                    let best = top(scores.drain(), k.max(RESCORED));
                    rescore(learned, s, best, params.embedding_weight, k)
                }
                _ => top(scores.drain(), k),
            }
        })
    }

    /// Learns item vectors from the sessions as they are now, on `threads` threads, for
    /// `embedding_weight`.
    pub fn learn_embeddings(&mut self, threads: usize) {
        let copy = self.learning_copy();
        self.use_embeddings(Arc::new(copy.learn(threads)), copy.learned_from());
    }

    /// The latest sessions, up to [`MAX_LEARNED_VIEWS`] views, for
    /// [`LearningCopy::learn`].
    pub fn learning_copy(&self) -> LearningCopy {
        let mut views = 0;
        let first = self
            .sessions
            .iter()
            .rposition(|session| {
                views += session.items.len();
                views > MAX_LEARNED_VIEWS
            })
            .map_or(0, |over| over + 1);
        let latest = &self.sessions[first..];
        let mut items = Vec::with_capacity(latest.iter().map(|s| s.items.len()).sum());
        let mut ends = Vec::with_capacity(latest.len());
        for session in latest {
            items.extend_from_slice(&session.items);
            ends.push(items.len());
        }
        LearningCopy {
            items,
            ends,
            products: self.postings.len(),
            sessions: self.sessions.len(),
        }
    }

    /// Answers with `learned` from now on; hands back the vectors answered with before
    /// (to be freed outside the state's lock).
    pub fn use_embeddings(
        &mut self,
        learned: Arc<ItemEmbeddings>,
        from: LearnedFrom,
    ) -> Option<Arc<ItemEmbeddings>> {
        let before = self.embeddings.replace((learned, from));
        before.map(|(vectors, _)| vectors)
    }

    /// Answers without vectors from now on; hands back those answered with before.
    pub fn forget_embeddings(&mut self) -> Option<Arc<ItemEmbeddings>> {
        self.embeddings.take().map(|(vectors, _)| vectors)
    }

    /// The vectors answered with, if any, and what they were learned from.
    pub fn embeddings(&self) -> Option<(&ItemEmbeddings, LearnedFrom)> {
        (self.embeddings.as_ref()).map(|(learned, from)| (&**learned, *from))
    }

    fn neighbour_votes(
        &self,
        s: &[ItemId],
        now: i64,
        own: Option<SessionId>,
        params: &NextItemParams,
        scores: &mut ScoreBoard,
    ) {
        let distinct = latest_positions(s, params.prefix_decay);
        let now = now.min(self.newest);
        let norm_s = (distinct.len() as f32).sqrt();
        let neighbour = |id: SessionId, shared: f32, age: usize| {
            let session = &self.sessions[id as usize];
            let recency = halved(now - session.last_at, params.recency_half_life_ms);
            let length = (session.distinct as f32).powf(params.length_power);
            let similarity = shared / (norm_s * length) * recency;
            (similarity, id, age)
        };
        let mut neighbours: Vec<(f32, SessionId, usize)> = if let [(item, age)] = distinct[..] {
            // One item (a product page): its sessions are the candidates, each once, so no
            // map is needed to add up what they share.
            let weight = (-(age as f32) / params.prefix_decay).exp();
            self.recent_sessions(item, params.sample)
                .iter()
                .filter(|session| Some(**session) != own)
                .map(|session| neighbour(*session, weight, age))
                .collect()
        } else {
            // Candidate neighbours: (what they share, age in `s` of the latest shared item).
            // Sized up front: growing a map of a thousand sessions rehashes it several times.
            let expected = distinct.len().min(4) * params.sample;
            let mut candidates: FxHashMap<SessionId, (f32, usize)> =
                FxHashMap::with_capacity_and_hasher(expected, Default::default());
            for (item, age) in &distinct {
                let weight = (-(*age as f32) / params.prefix_decay).exp()
                    * self.rarity(*item, params.shared_idf_power);
                for session in self.recent_sessions(*item, params.sample) {
                    if Some(*session) == own {
                        continue;
                    }
                    let entry = candidates.entry(*session).or_insert((0.0, *age));
                    entry.0 += weight;
                    entry.1 = entry.1.min(*age);
                }
            }
            candidates
                .into_iter()
                .map(|(id, (shared, age))| neighbour(id, shared, age))
                .collect()
        };
        if neighbours.len() > params.neighbours {
            neighbours.select_nth_unstable_by(params.neighbours, |a, b| b.0.total_cmp(&a.0));
            neighbours.truncate(params.neighbours);
        }
        // A vote's weight by its distance from the meeting item, for the usual distances.
        let near: [f32; 32] = std::array::from_fn(|d| (-(d as f32) / params.neighbour_decay).exp());
        let span = reach(params.neighbour_decay);
        for (similarity, id, age) in neighbours {
            let items = &self.sessions[id as usize].items;
            let meeting_item = s[s.len() - 1 - age];
            let Some(meeting) = items.iter().rposition(|i| *i == meeting_item) else {
                continue;
            };
            let from = meeting.saturating_sub(span);
            let to = meeting
                .saturating_add(span)
                .saturating_add(1)
                .min(items.len());
            for (position, item) in items.iter().enumerate().take(to).skip(from) {
                let distance = position.abs_diff(meeting);
                let decay = match near.get(distance) {
                    Some(weight) => *weight,
                    None => (-(distance as f32) / params.neighbour_decay).exp(),
                };
                scores.add(*item, similarity * decay);
            }
        }
        // The popularity correction is the item's own: applied once per item, not per vote.
        if params.idf_power != 0.0 {
            for &item in &scores.touched {
                scores.values[item as usize] *= self.rarity(item, params.idf_power);
            }
        }
    }

    /// A popularity correction of `item`: above 0, its log inverse session frequency to
    /// this power; below 0, its session count to this power.
    fn rarity(&self, item: ItemId, power: f32) -> f32 {
        if power == 0.0 {
            return 1.0;
        }
        let sessions = self.postings.get(item as usize).map_or(0, Vec::len).max(1) as f32;
        if power > 0.0 {
            (self.sessions.len() as f32 / sessions)
                .ln()
                .max(0.0)
                .powf(power)
        } else {
            sessions.powf(power)
        }
    }

    /// Scales each scored item by its sessions active lately (`trend_power`) and by the
    /// time since its latest one (`stale_half_life_ms`).
    fn weigh_by_demand(&self, now: i64, params: &NextItemParams, scores: &mut ScoreBoard) {
        let now = now.min(self.newest);
        let since = now.saturating_sub(params.trend_window_ms as i64);
        for &item in &scores.touched {
            let Some(list) = self.postings.get(item as usize) else {
                continue;
            };
            // A posting list is in the order its sessions first came to the item, and
            // `last_at` is when each was last active: out of order only by how long a
            // session goes on after viewing the item (a session ends after a gap of
            // `SESSION_GAP_MS` and at `MAX_SESSION_ITEMS` views), so a binary search
            // counts the recent ones up to that much at the window's edge, at log cost.
            let older = list.partition_point(|id| self.sessions[*id as usize].last_at < since);
            let recent = (list.len() - older) as f32;
            let mut factor = (1.0 + recent).powf(params.trend_power);
            if params.stale_half_life_ms > 0.0
                && let Some(latest) = list.last()
            {
                let last_seen = self.sessions[*latest as usize].last_at;
                factor *= halved(now - last_seen, params.stale_half_life_ms);
            }
            scores.values[item as usize] *= factor;
        }
    }

    fn successor_votes(
        &self,
        s: &[ItemId],
        own: Option<SessionId>,
        params: &NextItemParams,
        scores: &mut ScoreBoard,
    ) {
        let depth = params.successor_depth.min(MAX_SUCCESSOR_DEPTH);
        for (item, age) in latest_positions(s, depth) {
            // (At a depth of 0, the last item alone, at full weight, not 0/0.)
            let weight = match age {
                0 => 1.0,
                _ => (-(age as f32) / depth).exp(),
            };
            // An earlier item's sessions are read in proportion to its weight, so that a
            // question reads at most about `successor_sample * (1 + successor_depth)`
            // sessions however long `s` is.
            let sample = (params.successor_sample as f32 * weight).ceil() as usize;
            self.successors_of(item, weight, sample, own, params, scores);
        }
    }

    /// The successor votes of one item of the question, each worth `weight / distance`,
    /// from its latest `sample` sessions.
    fn successors_of(
        &self,
        earlier: ItemId,
        weight: f32,
        sample: usize,
        own: Option<SessionId>,
        params: &NextItemParams,
        scores: &mut ScoreBoard,
    ) {
        for session in self.recent_sessions(earlier, sample) {
            if Some(*session) == own {
                continue;
            }
            let items = &self.sessions[*session as usize].items;
            for (position, item) in items.iter().enumerate() {
                if *item != earlier {
                    continue;
                }
                let after = &items[position + 1..];
                for (distance, next) in after.iter().take(params.successor_steps).enumerate() {
                    scores.add(*next, weight / (distance + 1) as f32);
                }
            }
        }
    }

    fn cooccurrence_votes(
        &self,
        s: &[ItemId],
        own: Option<SessionId>,
        params: &NextItemParams,
        scores: &mut ScoreBoard,
    ) {
        let shared = latest_positions(s, params.prefix_decay);
        // A long question (a customer's every purchase) reads fewer sessions per item,
        // and every question stops after a budget of items read, the latest items of `s`
        // first: the cost of a question stays near that of the neighbours' voice.
        let per_item = (params.sample * 4 / shared.len().max(1)).clamp(1, params.sample);
        let mut budget = COOCCURRENCE_READS;
        DISTINCT.with_borrow_mut(|distinct| {
            for (item, age) in shared {
                let weight = (-(age as f32) / params.prefix_decay).exp();
                for session in self.recent_sessions(item, per_item).iter().rev() {
                    if Some(*session) == own {
                        continue;
                    }
                    let session = &self.sessions[*session as usize];
                    let Some(left) = budget.checked_sub(session.items.len()) else {
                        return;
                    };
                    budget = left;
                    // Once per session: a visitor who went back and forth between two
                    // products is one vote, not one per view.
                    for &other in session.distinct_items(distinct) {
                        if other != item {
                            scores.add(other, weight);
                        }
                    }
                }
            }
        });
    }
}

/// Answers of the blend that the learned vectors score again.
pub const RESCORED: usize = 100;

/// The blend's `best` scored again with the vectors' closeness to `s` (see
/// `embedding_weight`), the `k` best of them.
fn rescore(
    learned: &ItemEmbeddings,
    s: &[ItemId],
    best: Vec<(ItemId, f32)>,
    weight: f32,
    k: usize,
) -> Vec<(ItemId, f32)> {
    let top_score = best
        .first()
        .map_or(1.0, |(_, score)| score.max(f32::MIN_POSITIVE));
    let session = learned.session_vector(s);
    let known: Vec<Option<f32>> = best
        .iter()
        .map(|(item, _)| Some(learned.closeness(&session, *item)?.max(0.0)))
        .collect();
    // A product without a vector (newer than the vectors, or beyond the products they
    // cover) is taken as close as the others are on average: neither raised nor sunk.
    let (sum, count) = (known.iter().flatten()).fold((0.0, 0), |(sum, n), c| (sum + c, n + 1));
    let neutral = if count > 0 { sum / count as f32 } else { 0.0 };
    let closeness: Vec<f32> = known.iter().map(|c| c.unwrap_or(neutral)).collect();
    let closest = closeness.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    top(
        best.iter()
            .zip(&closeness)
            .map(|((item, score), near)| (*item, score / top_score + weight * near / closest)),
        k,
    )
}

/// Items of sessions read by the co-occurrence voice in one question at most.
const COOCCURRENCE_READS: usize = 50_000;

/// The deepest the successor voice hears into `s`, whatever a stored setting says: the
/// items it reads the sessions of stay a few dozen at most.
pub const MAX_SUCCESSOR_DEPTH: f32 = 8.0;

/// A weight that halves every `half_life_ms` over `idle_ms` (1 for a time not yet past,
/// and for a half-life of 0 or less, which stored settings use for "no decay").
fn halved(idle_ms: i64, half_life_ms: f64) -> f32 {
    if half_life_ms <= 0.0 {
        return 1.0;
    }
    ((-(idle_ms.max(0) as f64) / half_life_ms) as f32).exp2()
}

impl Session {
    /// Each item of the session once (`scratch` holds them, sorted, when the session has
    /// repeats).
    fn distinct_items<'s>(&'s self, scratch: &'s mut Vec<ItemId>) -> &'s [ItemId] {
        if self.distinct as usize == self.items.len() {
            return &self.items;
        }
        scratch.clear();
        scratch.extend_from_slice(&self.items);
        scratch.sort_unstable();
        scratch.dedup();
        scratch
    }
}

/// The repeats: each item of `s` by its views there, the latest counting most.
fn repeat_votes(s: &[ItemId], params: &NextItemParams, scores: &mut ScoreBoard) {
    let horizon = reach(params.repeat_decay);
    for (age, item) in s.iter().rev().enumerate().take(horizon.saturating_add(1)) {
        scores.add(*item, (-(age as f32) / params.repeat_decay).exp());
    }
}

/// Each distinct item of `s` at its latest position (counted from the end: 0 = last), as
/// far back as a weight falling by 1/e every `decay` positions counts.
fn latest_positions(s: &[ItemId], decay: f32) -> Vec<(ItemId, usize)> {
    let horizon = reach(decay);
    let mut distinct: Vec<(ItemId, usize)> =
        Vec::with_capacity(s.len().min(horizon.saturating_add(1)));
    for (age, item) in s.iter().rev().enumerate().take(horizon.saturating_add(1)) {
        if !distinct.iter().any(|(i, _)| i == item) {
            distinct.push((*item, age));
        }
    }
    distinct
}

/// A weight below this share of the strongest is not worth its cost: a question reads
/// the items of `s`, and a neighbour's items vote, only as far as their weight stays above
/// it. That bounds a question's work whatever the length of the sessions (a robot's 200
/// views, or a visitor's day without a half-hour pause) at what a session of a dozen
/// costs.
const NEGLIGIBLE: f32 = 1e-3;

/// How many positions a weight that falls by 1/e every `decay` positions stays above
/// [`NEGLIGIBLE`] (`usize::MAX` for a weight that never falls).
fn reach(decay: f32) -> usize {
    // `as` saturates: an infinite or huge decay reaches everything, NaN nothing further.
    (decay.max(0.0) * -NEGLIGIBLE.ln()).ceil() as usize
}

thread_local! {
    /// A session's distinct items, for the co-occurrence voice.
    static DISTINCT: RefCell<Vec<ItemId>> = RefCell::default();
    /// The blend's score board of this thread's questions, and the board each voice
    /// counts on before it joins the blend.
    static BOARDS: RefCell<(ScoreBoard, ScoreBoard)> = RefCell::default();
}

/// Scores by item number in a dense array, reused from question to question: a vote is
/// an index into it rather than a hash (a question adds up thousands of votes), and only
/// the items a question touched are cleared after it.
#[derive(Default)]
struct ScoreBoard {
    /// NaN for an item without a vote in the current question.
    values: Vec<f32>,
    touched: Vec<ItemId>,
}

impl ScoreBoard {
    fn prepare(&mut self, items: usize) {
        if self.values.len() < items {
            self.values.resize(items, f32::NAN);
        }
    }

    fn add(&mut self, item: ItemId, vote: f32) {
        // An item numbered after the board was sized (one carted or bought, never viewed)
        // widens it.
        self.prepare(item as usize + 1);
        let slot = &mut self.values[item as usize];
        if slot.is_nan() {
            *slot = vote;
            self.touched.push(item);
        } else {
            *slot += vote;
        }
    }

    fn scale(&mut self, item: ItemId, factor: f32) {
        // NaN (no vote) stays NaN; an item past the board had no vote either.
        if let Some(value) = self.values.get_mut(item as usize) {
            *value *= factor;
        }
    }

    fn normalise(&mut self) {
        let max = self
            .touched
            .iter()
            .map(|item| self.values[*item as usize])
            .fold(0.0_f32, f32::max);
        if max > 0.0 {
            for item in &self.touched {
                self.values[*item as usize] /= max;
            }
        }
    }

    /// Adds these scores, scaled to a best of `weight`, to `blend`, clearing this board.
    fn blend_into(&mut self, blend: &mut ScoreBoard, weight: f32) {
        self.normalise();
        for &item in &self.touched {
            let slot = &mut self.values[item as usize];
            blend.add(item, weight * *slot);
            *slot = f32::NAN;
        }
        self.touched.clear();
    }

    /// The scores of this question, clearing the board for the next one.
    fn drain(&mut self) -> impl Iterator<Item = (ItemId, f32)> + '_ {
        let values = &mut self.values;
        self.touched.drain(..).map(move |item| {
            let score = std::mem::replace(&mut values[item as usize], f32::NAN);
            (item, score)
        })
    }
}

/// Scales `scores` to a top score of 1.
pub fn normalise(scores: &mut FxHashMap<ItemId, f32>) {
    let max = scores.values().copied().fold(0.0_f32, f32::max);
    if max > 0.0 {
        for score in scores.values_mut() {
            *score /= max;
        }
    }
}

/// The `k` best of `scores`, best first; ties go to the lower item number, so that
/// answers are stable.
pub fn top(scores: impl IntoIterator<Item = (ItemId, f32)>, k: usize) -> Vec<(ItemId, f32)> {
    let mut ranked: Vec<(ItemId, f32)> = scores.into_iter().collect();
    let order = |a: &(ItemId, f32), b: &(ItemId, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if ranked.len() > k {
        ranked.select_nth_unstable_by(k, order);
        ranked.truncate(k);
    }
    ranked.sort_unstable_by(order);
    ranked
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_vectors_raise_what_is_close_to_the_session() {
        // 0 and 4 each come with 1 and 2; 12 is of another world.
        let mut sessions = Sessions::default();
        for _ in 0..20 {
            for items in [[0, 1, 2], [4, 1, 2], [3, 1, 2], [10, 11, 12]] {
                let id = sessions.start(0, NO_VISITOR);
                for item in items {
                    sessions.push(id, item, 0);
                }
            }
        }
        sessions.learn_embeddings(1);
        let (learned, _) = sessions.embeddings().unwrap();
        let blend = vec![(12, 1.0), (4, 0.9)];
        let ranked = |weight| -> Vec<ItemId> {
            rescore(learned, &[0], blend.clone(), weight, 2)
                .into_iter()
                .map(|(item, _)| item)
                .collect()
        };
        assert_eq!(ranked(0.0), vec![12, 4]);
        assert_eq!(ranked(0.5), vec![4, 12]);
        // A product newer than the vectors (99) is neither raised nor sunk by them: as
        // close as the others on average, so it keeps its place between 4 and 12.
        let with_new = vec![(12, 1.0), (99, 0.95), (4, 0.9)];
        let order: Vec<ItemId> = rescore(learned, &[0], with_new, 0.5, 3)
            .into_iter()
            .map(|(item, _)| item)
            .collect();
        assert_eq!(order, vec![4, 99, 12]);
    }

    #[test]
    fn latest_sessions_read_and_write_the_map_that_snapshots_hold() {
        let map: HashMap<u32, SessionId> = [(0, 3), (7, 9)].into();
        let latest: LatestSessions =
            serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
        assert_eq!((latest.get(0), latest.get(7)), (Some(3), Some(9)));
        assert_eq!((latest.get(3), latest.get(100)), (None, None));
        assert_eq!(latest.unused(), 8);
        let written: HashMap<u32, SessionId> =
            serde_json::from_str(&serde_json::to_string(&latest).unwrap()).unwrap();
        assert_eq!(written, map);
    }

    fn ranked(answer: Vec<(ItemId, f32)>) -> Vec<ItemId> {
        answer.into_iter().map(|(item, _)| item).collect()
    }

    #[test]
    fn each_voice_alone_answers_as_its_simple_method() {
        let mut sessions = Sessions::default();
        for items in [&[1, 2, 3][..], &[1, 2, 4], &[2, 5]] {
            let session = sessions.start(0, NO_VISITOR);
            for item in items {
                sessions.push(session, *item, 0);
            }
        }
        let defaults = NextItemParams::default();
        let ask = |voice: Voice, s: &[ItemId]| {
            ranked(sessions.next_items(s, 0, None, &defaults.alone(voice), 10))
        };
        // Repeat-first, views falling by 1/e every 3 positions: 7 at 1 and 3 back
        // (e^-1/3 + e^-1 = 1.08), 9 last (1), 8 two back (0.51).
        assert_eq!(ask(Voice::Repeats, &[7, 8, 7, 9]), vec![7, 9, 8]);
        // Sequential rules after 1: 2 right after it twice, 3 and 4 two steps after.
        assert_eq!(ask(Voice::Successors, &[1]), vec![2, 3, 4]);
        // Co-occurrence with 2: 1 in two of its sessions, 3, 4 and 5 in one each.
        assert_eq!(ask(Voice::Cooccurrence, &[2]), vec![1, 3, 4, 5]);
        // A session that goes back and forth between 2 and 6 is one vote for 6.
        let mut sessions = sessions.clone();
        let back_and_forth = sessions.start(0, NO_VISITOR);
        for item in [2, 6, 2, 6, 2, 6, 2, 6] {
            sessions.push(back_and_forth, item, 0);
        }
        let answer = sessions.next_items(&[2], 0, None, &defaults.alone(Voice::Cooccurrence), 10);
        assert_eq!(answer[0], (1, 1.0));
        assert_eq!(answer.iter().find(|(item, _)| *item == 6), Some(&(6, 0.5)));
        // Neighbours of [5]: only [2, 5], which votes for 5 and 2.
        assert_eq!(ask(Voice::Neighbours, &[5]), vec![5, 2]);
        // A blend heavy on the repeats puts them first and the other voices after.
        let blend = NextItemParams {
            repeat_weight: 10.0,
            ..defaults.alone(Voice::Successors)
        };
        let answer = ranked(sessions.next_items(&[3, 1], 0, None, &blend, 10));
        assert_eq!(answer, vec![1, 3, 2, 4]);
    }

    #[test]
    fn a_long_question_reads_a_bounded_share_of_each_items_sessions() {
        let mut sessions = Sessions::default();
        for n in 0..100 {
            let session = sessions.start(0, NO_VISITOR);
            sessions.push(session, n, 0);
            sessions.push(session, 1_000 + n, 0);
        }
        let params = NextItemParams {
            sample: 10,
            prefix_decay: f32::INFINITY,
            ..NextItemParams::default().alone(Voice::Cooccurrence)
        };
        // Each of the 100 items of the question has one session: all are read.
        let question: Vec<ItemId> = (0..100).collect();
        assert_eq!(
            sessions.next_items(&question, 0, None, &params, 200).len(),
            100
        );
        // One item in 100 sessions: 10 (its sample) are read, the latest.
        let mut shared = Sessions::default();
        for n in 0..100 {
            let session = shared.start(0, NO_VISITOR);
            shared.push(session, 0, 0);
            shared.push(session, 1_000 + n, 0);
        }
        let answer = ranked(shared.next_items(&[0], 0, None, &params, 200));
        assert_eq!(answer, (1_090..1_100).collect::<Vec<_>>());
    }

    #[test]
    fn a_question_naming_items_no_session_viewed_is_answered() {
        let mut sessions = Sessions::default();
        for visitor in 0..3 {
            let session = sessions.start(1_000, visitor);
            sessions.push(session, 0, 1_000);
            sessions.push(session, 1, 1_001);
        }
        // Item 99 was numbered by a cart or an order: no session holds it.
        let params = NextItemParams {
            seen_weight: 0.5,
            ..NextItemParams::default()
        };
        for question in [[99, 0], [0, 99]] {
            let next = sessions.next_items(&question, 2_000, None, &params, 5);
            assert!(next.iter().any(|(item, _)| *item == 1), "{next:?}");
            assert!(next.iter().all(|(item, _)| *item != 99), "{next:?}");
        }
    }
}
