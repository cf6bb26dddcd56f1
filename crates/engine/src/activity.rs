//! What a site's visitors did, counted as events arrive, for the dashboard: events per
//! minute by type over the last day, per day over the last months, and the searches
//! asked most (with and without results). Every figure is a counter kept here, so that
//! a page of the dashboard costs a lookup, never a scan of contacts or of the log.
//!
//! Counted by the event's date, but never later than its arrival (an import of old
//! orders fills the days it tells of; a client's clock a day ahead cannot push the
//! minutes it counts past the day kept), deterministically from the log like every part
//! of the state.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use spoor_protocol::dates::DAY_MS;
use spoor_protocol::{EventBody, EventKind, TrackerEvent};

use crate::items::ItemId;

const MINUTE_MS: i64 = 60_000;
/// Minutes kept: a day's worth behind the latest minute counted.
pub const MINUTES_KEPT: i64 = 24 * 60;
/// Days kept: the latest, as attribution keeps them.
pub const DAYS_KEPT: usize = 400;
/// Distinct searches held; past [`SEARCHES_HIGH`], the least asked of the last weeks
/// are let go down to this many (a shop's visitors type without end, and each query is
/// a key).
pub const SEARCHES_KEPT: usize = 2_000;
const SEARCHES_HIGH: usize = 2 * SEARCHES_KEPT;
/// Characters of a search query kept: longer ones are cut.
pub const MAX_QUERY_CHARS: usize = 64;
/// Weeks a search is counted over: the current one and the three before.
pub const SEARCH_WEEKS: usize = 4;

/// Weeks of views and purchases kept per product.
pub const WEEKS_KEPT: usize = 13;

/// The week of a time: weeks begin on Monday (day 0, 1970-01-01, was a Thursday).
fn week_of(at: i64) -> i64 {
    (at.div_euclid(DAY_MS) + 3).div_euclid(7)
}

/// The day number of a week's Monday.
fn monday_of(week: i64) -> i64 {
    week * 7 - 3
}

/// Counts by event type, in [`EventKind::ALL`]'s order.
pub type KindCounts = [u64; EventKind::ALL.len()];

/// A search's weeks: asked, and asked with `isFound: 0` (what the shop is missing).
pub type SearchWeeks = Weeks<SEARCH_WEEKS>;
/// A product's weeks: views, and order lines.
pub type ProductWeeks = Weeks<WEEKS_KEPT>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Activity {
    /// Minute number -> events that minute, for the [`MINUTES_KEPT`] minutes up to the
    /// latest counted.
    minutes: BTreeMap<i64, KindCounts>,
    /// Day number -> events that day.
    days: BTreeMap<i64, KindCounts>,
    /// Normalised query -> how often it was asked, the last weeks.
    searches: HashMap<String, SearchWeeks>,
    /// The latest week a search was counted in: what the least asked are judged by.
    #[serde(default)]
    search_week: i64,
    /// Catalogue product -> its views and purchases per week, the latest
    /// [`WEEKS_KEPT`] weeks: a product's page shows them over time. About 120 bytes a
    /// product.
    #[serde(default)]
    products: FxHashMap<ItemId, ProductWeeks>,
}

/// Two counts per week (a product's views and purchases; a search's asks and asks
/// without results), in a ring of `N` weeks ending with `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WeeksForm", from = "WeeksForm")]
pub struct Weeks<const N: usize> {
    latest: i64,
    first: [u32; N],
    second: [u32; N],
}

/// [`Weeks`] as snapshots hold it (serde has no arrays of a generic length).
#[derive(Serialize, Deserialize)]
struct WeeksForm {
    latest: i64,
    first: Vec<u32>,
    second: Vec<u32>,
}

impl<const N: usize> From<Weeks<N>> for WeeksForm {
    fn from(weeks: Weeks<N>) -> WeeksForm {
        WeeksForm {
            latest: weeks.latest,
            first: weeks.first.to_vec(),
            second: weeks.second.to_vec(),
        }
    }
}

impl<const N: usize> From<WeeksForm> for Weeks<N> {
    /// Counts kept for another number of weeks sit in other slots of the ring: they are
    /// not read into this one.
    fn from(form: WeeksForm) -> Weeks<N> {
        if form.first.len() != N || form.second.len() != N {
            return Weeks::default();
        }
        let mut weeks = Weeks {
            latest: form.latest,
            ..Weeks::default()
        };
        for (held, read) in weeks.first.iter_mut().zip(form.first) {
            *held = read;
        }
        for (held, read) in weeks.second.iter_mut().zip(form.second) {
            *held = read;
        }
        weeks
    }
}

impl<const N: usize> Default for Weeks<N> {
    fn default() -> Self {
        Weeks {
            latest: 0,
            first: [0; N],
            second: [0; N],
        }
    }
}

/// Which of a week's two counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    First,
    Second,
}

impl<const N: usize> Weeks<N> {
    fn slot(week: i64) -> usize {
        week.rem_euclid(N as i64) as usize
    }

    fn add(&mut self, count: Count, week: i64) {
        let fresh = self.first.iter().chain(&self.second).all(|n| *n == 0);
        if fresh {
            self.latest = week;
        }
        if week > self.latest {
            // The weeks between are new: their slots held weeks now too old.
            let newer = (week - self.latest).min(N as i64);
            for passed in 0..newer {
                let slot = Self::slot(week - passed);
                self.first[slot] = 0;
                self.second[slot] = 0;
            }
            self.latest = week;
        }
        if week <= self.latest - N as i64 {
            return;
        }
        let counts = match count {
            Count::First => &mut self.first,
            Count::Second => &mut self.second,
        };
        let slot = Self::slot(week);
        counts[slot] = counts[slot].saturating_add(1);
    }

    /// The counts of `week`, when the ring still holds it.
    fn of(&self, week: i64) -> (u32, u32) {
        let held = week <= self.latest && week > self.latest - N as i64;
        let slot = Self::slot(week);
        if held {
            (self.first[slot], self.second[slot])
        } else {
            (0, 0)
        }
    }

    /// (the week's Monday as a day number, first count, second count) for the `N` weeks
    /// ending with the week of `now`, oldest first.
    pub fn by_week(&self, now: i64) -> Vec<(i64, u32, u32)> {
        let last = week_of(now);
        (last + 1 - N as i64..=last)
            .map(|week| {
                let (first, second) = self.of(week);
                (monday_of(week), first, second)
            })
            .collect()
    }

    /// Both counts summed over the `N` weeks ending with week `last`.
    fn within(&self, last: i64) -> (u64, u64) {
        (last + 1 - N as i64..=last)
            .map(|week| self.of(week))
            .fold((0, 0), |(a, b), (x, y)| {
                (a + u64::from(x), b + u64::from(y))
            })
    }
}

/// What a product's week counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductEvent {
    Viewed,
    Bought,
}

impl ProductEvent {
    fn count(self) -> Count {
        match self {
            ProductEvent::Viewed => Count::First,
            ProductEvent::Bought => Count::Second,
        }
    }
}

fn slot(kind: EventKind) -> usize {
    EventKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL")
}

impl Activity {
    pub fn apply(&mut self, event: &TrackerEvent, at: i64) {
        let kind = slot(event.kind());
        let minute = at.div_euclid(MINUTE_MS);
        let latest = self.minutes.last_key_value().map(|(m, _)| *m);
        if latest.is_none_or(|latest| minute > latest - MINUTES_KEPT) {
            self.minutes.entry(minute).or_default()[kind] += 1;
            let oldest_kept = minute.max(latest.unwrap_or(minute)) - MINUTES_KEPT + 1;
            while self
                .minutes
                .first_key_value()
                .is_some_and(|(m, _)| *m < oldest_kept)
            {
                self.minutes.pop_first();
            }
        }
        let day = at.div_euclid(DAY_MS);
        self.days.entry(day).or_default()[kind] += 1;
        if self.days.len() > DAYS_KEPT {
            self.days.pop_first();
        }
        if let EventBody::SearchRequest { search } = &event.body {
            self.searched(&search.query, search.found, at);
        }
    }

    fn searched(&mut self, query: &str, found: Option<bool>, at: i64) {
        let Some(query) = normalise_query(query) else {
            return;
        };
        let week = week_of(at);
        self.search_week = self.search_week.max(week);
        let counts = self.searches.entry(query).or_default();
        counts.add(Count::First, week);
        if found == Some(false) {
            counts.add(Count::Second, week);
        }
        if self.searches.len() > SEARCHES_HIGH {
            self.keep_most_asked();
        }
    }

    /// Lets the searches least asked in the last weeks go (the query itself breaks
    /// ties, so that every rebuild keeps the same ones).
    fn keep_most_asked(&mut self) {
        let week = self.search_week;
        let mut all: Vec<(u64, String, SearchWeeks)> = (self.searches.drain())
            .map(|(query, weeks)| (weeks.within(week).0, query, weeks))
            .collect();
        all.sort_unstable_by(|(a, qa, _), (b, qb, _)| (b, qa).cmp(&(a, qb)));
        all.truncate(SEARCHES_KEPT);
        self.searches = (all.into_iter()).map(|(_, q, w)| (q, w)).collect();
    }

    /// Counts a product's view or its purchase at `at`.
    pub fn product(&mut self, item: ItemId, what: ProductEvent, at: i64) {
        let week = week_of(at);
        self.products
            .entry(item)
            .or_default()
            .add(what.count(), week);
    }

    /// The product's weeks, when it was seen.
    pub fn product_weeks(&self, item: ItemId) -> Option<&ProductWeeks> {
        self.products.get(&item)
    }

    /// Events per minute for the `count` minutes ending with `last_minute` (a minute
    /// number), oldest first; minutes without events are zeros.
    pub fn per_minute(&self, last_minute: i64, count: i64) -> Vec<(i64, KindCounts)> {
        let first = last_minute - count + 1;
        (first..=last_minute)
            .map(|minute| {
                let counts = self.minutes.get(&minute).copied().unwrap_or_default();
                (minute, counts)
            })
            .collect()
    }

    /// Events per day over days `from..=to` (day numbers), oldest first, zeros included.
    pub fn per_day(&self, from: i64, to: i64) -> Vec<(i64, KindCounts)> {
        (from..=to)
            .map(|day| (day, self.days.get(&day).copied().unwrap_or_default()))
            .collect()
    }

    /// The `limit` searches asked most in the [`SEARCH_WEEKS`] weeks up to `now`, and
    /// the `limit` asked most without results; only those asked at least `at_least`
    /// times (a query typed once may be someone's own name).
    pub fn top_searches(&self, now: i64, limit: usize, at_least: u64) -> TopSearches {
        let week = week_of(now);
        let counted: Vec<(&str, u64, u64)> = (self.searches.iter())
            .map(|(query, weeks)| {
                let (asked, missing) = weeks.within(week);
                (query.as_str(), asked, missing)
            })
            .filter(|(_, asked, _)| *asked >= at_least)
            .collect();
        let ranked = |count: fn(&(&str, u64, u64)) -> u64| {
            let mut ranked: Vec<(String, u64)> = (counted.iter())
                .filter(|entry| count(entry) > 0)
                .map(|entry| (entry.0.to_string(), count(entry)))
                .collect();
            ranked.sort_unstable_by(|(qa, a), (qb, b)| (b, qa).cmp(&(a, qb)));
            ranked.truncate(limit);
            ranked
        };
        TopSearches {
            asked: ranked(|entry| entry.1),
            not_found: ranked(|entry| entry.2),
        }
    }

    /// What this holds, in a stable order, for the state's digest.
    pub fn digest_into(&self, hasher: &mut impl sha2::Digest) {
        let mut searches: Vec<_> = self.searches.iter().collect();
        searches.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut products: Vec<_> = self.products.iter().collect();
        products.sort_unstable_by_key(|(item, _)| **item);
        let parts = (&self.minutes, &self.days, searches, products);
        hasher.update(serde_json::to_vec(&parts).expect("activity serialises"));
    }
}

/// Searches with how often each was asked (or found nothing), most first.
pub struct TopSearches {
    pub asked: Vec<(String, u64)>,
    pub not_found: Vec<(String, u64)>,
}

/// The query as counted: trimmed, lower case, spaces folded, cut at
/// [`MAX_QUERY_CHARS`]. None for what looks like a person's own data (an email or a
/// phone number typed into the search box), which would otherwise be shown to the
/// shop's team and outlive the person's erasure.
pub fn normalise_query(query: &str) -> Option<String> {
    let folded = query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    // Judged whole, before it is cut: the cut could leave half an address behind.
    let digits = folded.chars().filter(char::is_ascii_digit).count();
    let personal = folded.contains('@') || digits >= 7;
    let kept: String = folded.chars().take(MAX_QUERY_CHARS).collect();
    (!kept.is_empty() && !personal).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::test_events::{T0, event, general};
    use spoor_protocol::dates::format_date;

    fn search(query: &str, found: u8) -> TrackerEvent {
        event(json!({
            "GeneralInfo": general("SearchRequest"),
            "SearchRequest": {"search": query, "isFound": found}
        }))
    }

    fn view() -> TrackerEvent {
        event(json!({
            "GeneralInfo": general("ProductPage"),
            "ProductPage": {"productKey": "p1", "price": 10}
        }))
    }

    #[test]
    fn counts_by_minute_and_day_and_forgets_minutes_past_a_day() {
        let mut activity = Activity::default();
        let page = slot(EventKind::ProductPage);
        activity.apply(&view(), T0);
        activity.apply(&view(), T0 + 10);
        activity.apply(&view(), T0 + MINUTE_MS);
        let minute = T0.div_euclid(MINUTE_MS);
        let last_two = activity.per_minute(minute + 1, 2);
        assert_eq!(last_two[0].1[page], 2);
        assert_eq!(last_two[1].1[page], 1);
        activity.apply(&view(), T0 + DAY_MS);
        assert_eq!(activity.per_minute(minute + 1, 2)[0].1[page], 0, "a day on");
        // A late event older than the kept minutes counts in its day only.
        activity.apply(&view(), T0 + 5);
        assert_eq!(activity.per_minute(minute, 1)[0].1[page], 0);
        let day = T0.div_euclid(DAY_MS);
        let days = activity.per_day(day, day + 1);
        assert_eq!((days[0].1[page], days[1].1[page]), (4, 1));
    }

    #[test]
    fn searches_are_ranked_and_missing_ones_told_apart() {
        let mut activity = Activity::default();
        for (query, found) in [
            ("Red Shoes", 1),
            ("red  shoes ", 1),
            ("umbrella", 0),
            ("umbrella", 0),
            ("umbrella", 1),
            ("me@example.com", 0),
            ("+1 541 754 3010", 0),
            (&format!("{} me@example.com", "x".repeat(60)), 0),
        ] {
            activity.apply(&search(query, found), T0);
        }
        let top = activity.top_searches(T0, 10, 1);
        let asked: Vec<(&str, u64)> = top.asked.iter().map(|(q, n)| (q.as_str(), *n)).collect();
        assert_eq!(asked, [("umbrella", 3), ("red shoes", 2)]);
        let missing: Vec<(&str, u64)> = top
            .not_found
            .iter()
            .map(|(q, n)| (q.as_str(), *n))
            .collect();
        assert_eq!(missing, [("umbrella", 2)], "no email or phone is kept");
        assert_eq!(
            activity.top_searches(T0, 10, 3).asked.len(),
            1,
            "asked 3 times or more"
        );
        let weeks_on = T0 + 7 * SEARCH_WEEKS as i64 * DAY_MS;
        assert!(
            activity.top_searches(weeks_on, 10, 1).asked.is_empty(),
            "the last weeks only"
        );
    }

    #[test]
    fn a_products_weeks_roll_on() {
        let mut weeks = ProductWeeks::default();
        let week = week_of(T0);
        let at = |week: i64| monday_of(week) * DAY_MS;
        weeks.add(Count::First, week);
        weeks.add(Count::First, week);
        weeks.add(Count::Second, week);
        weeks.add(Count::First, week + 2);
        let shown = weeks.by_week(at(week + 2));
        assert_eq!(shown.len(), WEEKS_KEPT);
        assert_eq!(shown[WEEKS_KEPT - 3], (monday_of(week), 2, 1));
        assert_eq!(format_date(monday_of(week)), "2023-11-13", "a Monday");
        assert_eq!(shown[WEEKS_KEPT - 2].1, 0);
        assert_eq!(shown[WEEKS_KEPT - 1].1, 1);
        // A quarter on, the first week is gone, and a view that old is not counted.
        weeks.add(Count::First, week + WEEKS_KEPT as i64);
        weeks.add(Count::First, week);
        let shown = weeks.by_week(at(week + WEEKS_KEPT as i64));
        assert_eq!(shown.iter().map(|w| w.1).sum::<u32>(), 2);
    }

    #[test]
    fn searches_held_stay_bounded_keeping_the_most_asked() {
        let mut activity = Activity::default();
        for _ in 0..3 {
            activity.apply(&search("popular", 1), T0);
        }
        for i in 0..SEARCHES_HIGH + 10 {
            activity.apply(&search(&format!("once {i}"), 1), T0);
        }
        assert!(activity.searches.len() <= SEARCHES_HIGH);
        assert_eq!(activity.top_searches(T0, 1, 1).asked[0].0, "popular");
    }
}
