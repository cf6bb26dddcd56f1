//! Time-decayed counts (most viewed, bestsellers) and their ranking.
//!
//! A count added at time `t` is stored as `weight * 2^((t - base) / half_life)`: the
//! order of the items never changes with the passing of time, only with new counts, so
//! the ranking is a sort redone at most once per [`Popularity::refresh`] when counts have
//! changed, not a decay pass over every item.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::items::ItemId;

/// Scores are brought back to a new base before they could overflow.
const REBASE_ABOVE: f64 = 1e200;

#[derive(Serialize, Deserialize)]
pub struct Popularity {
    half_life_ms: f64,
    base: Option<i64>,
    scores: Vec<f64>,
    #[serde(skip)]
    ranking: Mutex<Ranking>,
    /// How stale the ranking may be while counts change.
    #[serde(skip, default = "default_refresh")]
    pub refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(1)
}

#[derive(Default)]
struct Ranking {
    items: Arc<Vec<ItemId>>,
    built: Option<Instant>,
    stale: bool,
}

impl Clone for Popularity {
    fn clone(&self) -> Popularity {
        Popularity {
            half_life_ms: self.half_life_ms,
            base: self.base,
            scores: self.scores.clone(),
            ranking: Mutex::default(),
            refresh: self.refresh,
        }
    }
}

impl Popularity {
    pub fn new(half_life_ms: f64) -> Popularity {
        Popularity {
            half_life_ms,
            base: None,
            scores: Vec::new(),
            ranking: Mutex::default(),
            refresh: default_refresh(),
        }
    }

    pub fn add(&mut self, item: ItemId, weight: f64, at: i64) {
        let base = *self.base.get_or_insert(at);
        let index = item as usize;
        if self.scores.len() <= index {
            self.scores.resize(index + 1, 0.0);
        }
        self.scores[index] += weight * ((at - base) as f64 / self.half_life_ms).exp2();
        if self.scores[index] > REBASE_ABOVE {
            self.rebase(at);
        }
        self.ranking_mut().stale = true;
    }

    /// The item's score, comparable with other items' (not a count: see the module).
    pub fn score(&self, item: ItemId) -> f64 {
        self.scores.get(item as usize).copied().unwrap_or(0.0)
    }

    fn rebase(&mut self, at: i64) {
        let base = self.base.unwrap_or(at);
        let factor = ((base - at) as f64 / self.half_life_ms).exp2();
        for score in &mut self.scores {
            *score *= factor;
        }
        self.base = Some(at);
    }

    fn ranking_mut(&mut self) -> &mut Ranking {
        self.ranking
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every item with a count, most popular first (ties: lower number first).
    pub fn ranked(&self) -> Arc<Vec<ItemId>> {
        let mut ranking = self
            .ranking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = ranking
            .built
            .is_none_or(|built| ranking.stale && built.elapsed() >= self.refresh);
        if due {
            let mut items: Vec<ItemId> = (0..self.scores.len() as ItemId)
                .filter(|i| self.scores[*i as usize] > 0.0)
                .collect();
            items.sort_by(|a, b| {
                self.scores[*b as usize]
                    .total_cmp(&self.scores[*a as usize])
                    .then(a.cmp(b))
            });
            ranking.items = Arc::new(items);
            ranking.built = Some(Instant::now());
            ranking.stale = false;
        }
        Arc::clone(&ranking.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn fresh(half_life_days: i64) -> Popularity {
        let mut p = Popularity::new((half_life_days * DAY) as f64);
        p.refresh = Duration::ZERO;
        p
    }

    #[test]
    fn recent_counts_weigh_more() {
        let mut p = fresh(7);
        // Item 0: three views two weeks ago (worth 3/4 now); item 1: one view today.
        for _ in 0..3 {
            p.add(0, 1.0, 0);
        }
        p.add(1, 1.0, 14 * DAY);
        assert_eq!(*p.ranked(), vec![1, 0]);
        // Item 2: two views today beat both.
        p.add(2, 1.0, 14 * DAY);
        p.add(2, 1.0, 14 * DAY);
        assert_eq!(*p.ranked(), vec![2, 1, 0]);
    }

    #[test]
    fn rebasing_keeps_the_order() {
        let mut p = fresh(1);
        p.add(0, 2.0, 0);
        p.add(1, 1.0, 0);
        // 700 half-lives on: the scores would overflow without rebasing.
        p.add(2, 1.0, 700 * DAY);
        p.add(0, 1.0, 700 * DAY);
        p.add(0, 1.0, 700 * DAY);
        assert!(p.scores.iter().all(|s| s.is_finite()));
        assert_eq!(*p.ranked(), vec![0, 2, 1]);
    }

    #[test]
    fn the_ranking_waits_for_its_refresh() {
        let mut p = Popularity::new(DAY as f64);
        p.refresh = Duration::from_secs(3600);
        p.add(0, 1.0, 0);
        assert_eq!(*p.ranked(), vec![0]);
        p.add(1, 5.0, 0);
        assert_eq!(*p.ranked(), vec![0], "within the refresh period");
        p.refresh = Duration::ZERO;
        assert_eq!(*p.ranked(), vec![1, 0]);
    }
}
