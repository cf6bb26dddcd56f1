//! What each recommendation block earns, from the events shops already send:
//! - an impression per product a `ProductImpressions` event lists with its container type;
//! - a click when a visitor opens a product page that a block led to: the page's
//!   `sc_content` / `s_location` names the container type, or, without it, the visitor
//!   was shown the product by a block within [`CLICK_WINDOW_MS`];
//! - an order, and its value, when a `PurchasedItems` names the block in `Tags.blockId`
//!   (the whole order is credited: the shop says it came through the block), or when it
//!   holds products the buyer clicked in a block within [`ORDER_WINDOW_MS`] (those lines'
//!   value is credited).
//!
//! Counts are kept per container type (`<blockId>_<variantId>`) per UTC day of the
//! event's `datetime`. Like the rest of the state they are derived from the log.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use spoor_protocol::dates::{DAY_MS, day_of};
use spoor_protocol::{EventBody, TrackerEvent};

use crate::contacts::identity::ContactId;
use crate::limits::{self, Dropped};

/// A product page within this time of an impression of the product counts as a click.
pub const CLICK_WINDOW_MS: i64 = 60 * 60 * 1000;
/// An order within this time of a click on one of its products is credited to the block.
pub const ORDER_WINDOW_MS: i64 = 7 * DAY_MS;
/// Distinct container types kept per site: beyond it, new ones are not counted (a client
/// sending a fresh id with every event would otherwise grow the state without bound). A
/// shop has tens of blocks, each with a few variants.
pub const MAX_CONTAINERS: usize = 2_000;
/// Bytes of a container type: a block id and a variant id are 32 each at most.
pub const MAX_CONTAINER_BYTES: usize = 128;
/// Days counted per container type: the latest are kept (events may carry any date of
/// the last decades).
pub const MAX_DAYS: usize = 400;
/// Touches kept per visitor, newest kept.
const MAX_TOUCHES: usize = 64;
/// How often (in applied events) expired touches are swept out.
const SWEEP_EVERY: u64 = 100_000;

/// One container type's counts on one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub impressions: u64,
    pub clicks: u64,
    pub orders: u64,
    pub revenue: Decimal,
}

impl DayCounts {
    pub fn add(&mut self, other: &DayCounts) {
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.orders += other.orders;
        self.revenue += other.revenue;
    }

    /// Clicks per impression; none without impressions.
    pub fn ctr(&self) -> Option<f64> {
        (self.impressions > 0).then(|| self.clicks as f64 / self.impressions as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum TouchKind {
    Shown,
    Clicked,
}

/// A block showed a product to a visitor, or the visitor clicked it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Touch {
    kind: TouchKind,
    product: String,
    container: String,
    at: i64,
}

impl Touch {
    fn window(&self) -> i64 {
        match self.kind {
            TouchKind::Shown => CLICK_WINDOW_MS,
            TouchKind::Clicked => ORDER_WINDOW_MS,
        }
    }

    fn live_at(&self, now: i64) -> bool {
        now - self.at <= self.window()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attribution {
    /// Container type -> UTC day number -> counts.
    /// By container type, which clients send: a keyed hash (SipHash), so that crafted
    /// names cannot pile into one bucket.
    counts: HashMap<String, BTreeMap<i64, DayCounts>>,
    /// Visitor -> recent impressions and clicks, oldest first.
    touches: FxHashMap<ContactId, Vec<Touch>>,
    #[serde(default)]
    applied: u64,
}

impl Attribution {
    /// Counts what `event` (by `visitor`, when it names someone) means for the blocks.
    pub fn apply(&mut self, event: &TrackerEvent, visitor: Option<ContactId>, at: i64) {
        self.applied += 1;
        if self.applied.is_multiple_of(SWEEP_EVERY) {
            self.sweep(at);
        }
        match &event.body {
            EventBody::ProductImpressions { impressions } => {
                for shown in impressions {
                    if shown.container_type.is_empty() {
                        continue;
                    }
                    if let Some(counts) = self.day(&shown.container_type, at) {
                        counts.impressions += 1;
                        if let Some(visitor) = visitor {
                            self.touch(
                                visitor,
                                TouchKind::Shown,
                                &shown.product_key,
                                &shown.container_type,
                                at,
                            );
                        }
                    }
                }
            }
            EventBody::ProductPage { product } => {
                let Some(visitor) = visitor else {
                    // An anonymous page names its block: still a click, if not tied to anyone.
                    if let Some(container) = product.location.as_deref().filter(|c| !c.is_empty())
                        && let Some(counts) = self.day(container, at)
                    {
                        counts.clicks += 1;
                    }
                    return;
                };
                self.clicked(
                    visitor,
                    &product.product_key,
                    product.location.as_deref(),
                    at,
                );
            }
            EventBody::PurchasedItems { purchase } => {
                let named: Vec<&str> = event
                    .tags
                    .get("blockId")
                    .into_iter()
                    .flatten()
                    .map(|tag| tag.as_str())
                    .filter(|c| !c.is_empty())
                    .collect();
                let total: Decimal = purchase
                    .products
                    .iter()
                    .map(|l| l.unit_price.amount * Decimal::from(l.quantity))
                    .sum();
                let mut credited: BTreeMap<String, Decimal> =
                    named.iter().map(|c| (c.to_string(), total)).collect();
                if let Some(visitor) = visitor {
                    for line in &purchase.products {
                        let value = line.unit_price.amount * Decimal::from(line.quantity);
                        if let Some(container) =
                            self.clicked_from(visitor, line.product_key.as_str(), at)
                            && !named.contains(&container)
                        {
                            *credited.entry(container.to_string()).or_default() += value;
                        }
                    }
                }
                for (container, revenue) in credited {
                    if let Some(counts) = self.day(&container, at) {
                        counts.orders += 1;
                        counts.revenue += revenue;
                    }
                }
            }
            _ => {}
        }
    }

    /// A product page: a click when it names its block, or when a block showed the
    /// product to the visitor shortly before. The same click is counted once per window.
    fn clicked(&mut self, visitor: ContactId, product: &str, location: Option<&str>, at: i64) {
        let container = match location.filter(|c| !c.is_empty()) {
            Some(named) => named.to_string(),
            None => {
                let touches = self.touches.get(&visitor);
                let shown = touches.into_iter().flatten().rev().find(|t| {
                    t.kind == TouchKind::Shown
                        && t.product == product
                        && (0..=CLICK_WINDOW_MS).contains(&(at - t.at))
                });
                match shown {
                    Some(touch) => touch.container.clone(),
                    None => return,
                }
            }
        };
        let repeated = self.touches.get(&visitor).is_some_and(|touches| {
            touches.iter().any(|t| {
                t.kind == TouchKind::Clicked
                    && t.product == product
                    && t.container == container
                    && (at - t.at).abs() <= CLICK_WINDOW_MS
            })
        });
        if repeated {
            return;
        }
        if let Some(counts) = self.day(&container, at) {
            counts.clicks += 1;
            self.touch(visitor, TouchKind::Clicked, product, &container, at);
        }
    }

    /// The block the visitor last clicked `product` in, within the order window.
    fn clicked_from(&self, visitor: ContactId, product: &str, at: i64) -> Option<&str> {
        self.touches.get(&visitor)?.iter().rev().find_map(|t| {
            (t.kind == TouchKind::Clicked
                && t.product == product
                && (0..=ORDER_WINDOW_MS).contains(&(at - t.at)))
            .then_some(t.container.as_str())
        })
    }

    fn touch(
        &mut self,
        visitor: ContactId,
        kind: TouchKind,
        product: &str,
        container: &str,
        at: i64,
    ) {
        let touches = self.touches.entry(visitor).or_default();
        touches.retain(|t| t.live_at(at) && !(t.kind == kind && t.product == product));
        if touches.len() >= MAX_TOUCHES {
            touches.remove(0);
            limits::drop_one(Dropped::Touch);
        }
        touches.push(Touch {
            kind,
            product: product.to_string(),
            container: container.to_string(),
            at,
        });
    }

    /// The counts of `container` on the day of `at`; `None` once the site has too many
    /// container types to count a new one.
    fn day(&mut self, container: &str, at: i64) -> Option<&mut DayCounts> {
        if !self.counts.contains_key(container) {
            if self.counts.len() >= MAX_CONTAINERS || container.len() > MAX_CONTAINER_BYTES {
                limits::drop_one(Dropped::Attribution);
                return None;
            }
            self.counts.insert(container.to_string(), BTreeMap::new());
        }
        let days = self.counts.get_mut(container)?;
        let day = day_of(at);
        if !days.contains_key(&day) && days.len() >= MAX_DAYS {
            limits::drop_one(Dropped::Attribution);
            let oldest = *days.keys().next()?;
            if day < oldest {
                return None;
            }
            days.remove(&oldest);
        }
        Some(days.entry(day).or_default())
    }

    /// Drops touches too old to credit anything.
    fn sweep(&mut self, now: i64) {
        self.touches.retain(|_, touches| {
            touches.retain(|t| t.live_at(now));
            !touches.is_empty()
        });
    }

    /// A merged contact's touches follow it to the survivor.
    pub fn merge(&mut self, absorbed: ContactId, survivor: ContactId) {
        if let Some(mut moved) = self.touches.remove(&absorbed) {
            let touches = self.touches.entry(survivor).or_default();
            touches.append(&mut moved);
            touches.sort_by_key(|t| t.at);
            let excess = touches.len().saturating_sub(MAX_TOUCHES);
            touches.drain(..excess);
            for _ in 0..excess {
                limits::drop_one(Dropped::Touch);
            }
        }
    }

    /// Every container type of `block_id` (`block_id` itself, or `block_id_<variant>`)
    /// with its counts on days `from..=to` (day numbers).
    pub fn block(
        &self,
        block_id: &str,
        from: i64,
        to: i64,
    ) -> BTreeMap<&str, Vec<(i64, &DayCounts)>> {
        self.counts
            .iter()
            .filter(|(container, _)| {
                container.as_str() == block_id
                    || container
                        .rsplit_once('_')
                        .is_some_and(|(block, _)| block == block_id)
            })
            .map(|(container, days)| {
                let days = days
                    .range(from..=to)
                    .map(|(day, counts)| (*day, counts))
                    .collect();
                (container.as_str(), days)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::test_events::{MINUTE, T0, event, general};

    fn impressions(products: &[&str], container: &str) -> TrackerEvent {
        let list: Vec<Value> = products
            .iter()
            .map(|p| json!({"productKey": p, "container_type": container}))
            .collect();
        event(json!({"GeneralInfo": general("ProductImpressions"), "ProductImpressions": list}))
    }

    fn page(product: &str, location: Option<&str>) -> TrackerEvent {
        let mut product = json!({"productKey": product, "price": "10"});
        if let Some(location) = location {
            product["s_location"] = location.into();
        }
        event(json!({"GeneralInfo": general("ProductPage"), "ProductPage": {"Product": product}}))
    }

    fn purchase(number: &str, lines: &[(&str, &str, u32)], block: Option<&str>) -> TrackerEvent {
        let products: Vec<Value> = lines
            .iter()
            .map(|(key, price, quantity)| json!({"product_id": key, "unit_price": price, "quantity": quantity}))
            .collect();
        let mut body = json!({"GeneralInfo": general("PurchasedItems"),
                              "PurchasedItems": {"OrderNumber": number, "Products": products}});
        if let Some(block) = block {
            body["Tags"] = json!({"blockId": [block]});
        }
        event(body)
    }

    fn totals(attribution: &Attribution, block: &str) -> BTreeMap<String, DayCounts> {
        attribution
            .block(block, i64::MIN, i64::MAX)
            .into_iter()
            .map(|(container, days)| {
                let mut sum = DayCounts::default();
                for (_, counts) in days {
                    sum.add(counts);
                }
                (container.to_string(), sum)
            })
            .collect()
    }

    fn counts(impressions: u64, clicks: u64, orders: u64, revenue: &str) -> DayCounts {
        DayCounts {
            impressions,
            clicks,
            orders,
            revenue: revenue.parse().unwrap(),
        }
    }

    #[test]
    fn container_types_and_their_days_a_client_invents_are_capped() {
        let mut attribution = Attribution::default();
        let shown = impressions(&["p"], "home_a");
        // One impression a day for a thousand days, the oldest last.
        for day in (0..1_000).rev() {
            attribution.apply(&shown, None, T0 - day * DAY_MS);
        }
        let days = attribution.block("home", i64::MIN, i64::MAX);
        assert_eq!(days["home_a"].len(), MAX_DAYS, "the latest days kept");
        assert_eq!(days["home_a"].last().unwrap().0, day_of(T0));
        let long = "b".repeat(MAX_CONTAINER_BYTES) + "_v";
        attribution.apply(&impressions(&["p"], &long), None, T0);
        assert!(
            attribution
                .block(&"b".repeat(MAX_CONTAINER_BYTES), 0, i64::MAX)
                .is_empty()
        );
        for i in 0..MAX_CONTAINERS + 10 {
            attribution.apply(&impressions(&["p"], &format!("x{i}_v")), None, T0);
        }
        assert_eq!(attribution.counts.len(), MAX_CONTAINERS);
    }

    #[test]
    fn a_scripted_visit_counts_impressions_clicks_and_orders() {
        let mut a = Attribution::default();
        let me = Some(7);
        // The home block (variant a) shows three products; variant b shows two to someone else.
        a.apply(&impressions(&["p1", "p2", "p3"], "home_a"), me, T0);
        a.apply(&impressions(&["p1", "p4"], "home_b"), Some(8), T0);
        // A click on p2, found by the impression within the window, and seen again (once).
        a.apply(&page("p2", None), me, T0 + MINUTE);
        a.apply(&page("p2", None), me, T0 + 2 * MINUTE);
        // p3 is opened two hours later: too late to be the block's click.
        a.apply(&page("p3", None), me, T0 + 120 * MINUTE);
        // A page that names its block counts without an impression.
        a.apply(&page("p9", Some("home_b")), me, T0 + 3 * MINUTE);
        // An order: p2 (clicked in home_a) and p5 (never shown): home_a earns p2's line.
        a.apply(
            &purchase("1", &[("p2", "10", 2), ("p5", "3", 1)], None),
            me,
            T0 + 10 * MINUTE,
        );
        // An order the shop tags with home_b: the whole order.
        a.apply(
            &purchase("2", &[("p8", "4.5", 2)], Some("home_b")),
            Some(9),
            T0 + 11 * MINUTE,
        );
        let got = totals(&a, "home");
        assert_eq!(got["home_a"], counts(3, 1, 1, "20"));
        assert_eq!(got["home_b"], counts(2, 1, 1, "9.0"));
        assert_eq!(got["home_a"].ctr(), Some(1.0 / 3.0));
        // Another block's counts are its own.
        assert!(totals(&a, "hom").is_empty());
    }

    #[test]
    fn counts_fall_on_the_day_of_the_event() {
        let mut a = Attribution::default();
        a.apply(&impressions(&["p1"], "b_x"), None, T0);
        a.apply(&impressions(&["p1", "p2"], "b_x"), None, T0 + DAY_MS);
        let days = a.block("b", i64::MIN, i64::MAX);
        let per_day: Vec<u64> = days["b_x"].iter().map(|(_, c)| c.impressions).collect();
        assert_eq!(per_day, vec![1, 2]);
        let today = day_of(T0 + DAY_MS);
        assert_eq!(a.block("b", today, today)["b_x"].len(), 1);
    }

    #[test]
    fn old_clicks_earn_nothing_and_merges_keep_touches() {
        let mut a = Attribution::default();
        a.apply(&impressions(&["p1"], "b_x"), Some(1), T0);
        a.apply(&page("p1", None), Some(1), T0 + MINUTE);
        a.merge(1, 0);
        // Bought by the survivor a day later: credited.
        a.apply(
            &purchase("1", &[("p1", "5", 1)], None),
            Some(0),
            T0 + DAY_MS,
        );
        // Bought again eight days later: outside the window.
        a.apply(
            &purchase("2", &[("p1", "5", 1)], None),
            Some(0),
            T0 + 8 * DAY_MS,
        );
        assert_eq!(totals(&a, "b")["b_x"], counts(1, 1, 1, "5"));
    }
}
