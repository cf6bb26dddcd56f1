//! Backtesting a block: the site's own log replayed through the engine, and at each
//! product view, cart and purchase of the last days, what each of the block's variants
//! would have recommended then, scored against what the visitor did next (the products
//! of their next view, cart or purchase). A shop compares variants before showing them
//! to anyone.
//!
//! The state at each moment is exactly what the server held then (the records up to it,
//! in log order): the answer is asked once the moment's own event is applied, as a page
//! sends its view and then asks for its blocks, and never knows what it is scored
//! against.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;
use spoor_engine::contacts::identity::identifiers_of;
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::{Algorithm, BasketSettings, NextItemParams, Request, SESSION_GAP_MS};
use spoor_engine::{ContactId, Engine, Identifier, SiteState};
use spoor_protocol::stored::{RecordContent, StoredRecord};
use spoor_protocol::{EventBody, TrackerEvent};

/// One variant of the block, as the server would answer it.
#[derive(Debug, Clone)]
pub struct Variant {
    pub variant_id: String,
    pub algorithms: Vec<Algorithm>,
    pub limit: usize,
    pub filters: Filters,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantScore {
    pub variant_id: String,
    /// Moments whose visitor went on to another product within a session's gap (30
    /// minutes): what the figures are over.
    pub scored: u64,
    /// Share of those whose next products included a recommended one.
    pub hit_rate: f64,
    /// Mean of 1/rank of the first recommended product the visitor went on to.
    pub mrr: f64,
    /// Distinct products recommended, as a share of the catalogue.
    pub coverage: f64,
    /// Share of recommended products that came from a fallback (not the chain's first
    /// algorithm).
    pub fallback_share: f64,
    /// Moments at which the variant had nothing to show.
    pub empty_answers: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BacktestReport {
    /// Moments asked: product views, carts and purchases since `from`.
    pub moments: u64,
    /// Records of the site replayed to build the state.
    pub records: u64,
    pub variants: Vec<VariantScore>,
}

/// What the variants answered at a moment, owed a score at the visitor's next one.
struct Pending {
    at: i64,
    /// The moment's own products: what the visitor does with them next is no news.
    asked_about: Vec<String>,
    /// Per variant: the products recommended, in order.
    lists: Vec<Vec<String>>,
    /// Scored already (it is filed under each of the visitor's identifiers).
    scored: Cell<bool>,
}

#[derive(Default)]
struct Tally {
    scored: u64,
    hits: u64,
    reciprocal_ranks: f64,
    shown: HashSet<String>,
    products: u64,
    from_fallback: u64,
    empty: u64,
}

/// The products a moment names: a viewed product, a cart's lines, an order's lines.
fn moment_products(event: &TrackerEvent) -> Option<Vec<&str>> {
    match &event.body {
        EventBody::ProductPage { product } => Some(vec![product.product_key.as_str()]),
        EventBody::StatusCart { cart } => Some(
            cart.products
                .iter()
                .map(|l| l.product_key.as_str())
                .collect(),
        ),
        EventBody::PurchasedItems { purchase } => Some(
            purchase
                .products
                .iter()
                .map(|l| l.product_key.as_str())
                .collect(),
        ),
        _ => None,
    }
}

/// The contact an event's visitor is.
fn contact_of(site: &SiteState, event: &TrackerEvent) -> Option<ContactId> {
    identifiers_of(&event.visitor)
        .iter()
        .find_map(|id| site.contact(id))
        .map(|contact| contact.id)
}

/// Replays `records` (a site's log, in order) and scores `variants` at every moment
/// dated at or after `from_ms`, answered with the site's tuned next-item settings
/// `next_item` and blends over orders `baskets` (the built-in ones when none).
pub fn backtest(
    site_id: &str,
    records: impl IntoIterator<Item = StoredRecord>,
    from_ms: i64,
    variants: &[Variant],
    next_item: Option<&NextItemParams>,
    baskets: Option<&BasketSettings>,
) -> BacktestReport {
    let mut engine = Engine::default();
    // As an engine node on a log with several writers does: a log with one writer holds
    // no retry, so there this changes nothing.
    engine.decide_retries(true);
    // Filed under every identifier of the visitor: a merge (a sign-in) between two
    // moments changes the contact's number, never the identifiers the next event names.
    let mut pending: HashMap<Identifier, Rc<Pending>> = HashMap::new();
    let mut tallies: Vec<Tally> = variants.iter().map(|_| Tally::default()).collect();
    let mut report = BacktestReport::default();
    let mut vectors_due = next_item.is_some_and(|params| params.embedding_weight > 0.0);
    for record in records {
        match &record.content {
            RecordContent::Event(event) if event.site_id == site_id => {}
            RecordContent::Feed(feed) if feed.site_id == site_id => {
                engine.apply(&record);
                continue;
            }
            RecordContent::ContactLink(_) => {
                engine.apply(&record);
                continue;
            }
            _ => continue,
        }
        let RecordContent::Event(event) = &record.content else {
            continue;
        };
        report.records += 1;
        // Dated as the state dates it: by the event, never later than its arrival (an
        // import of old orders is scored on the days it tells of).
        let at = event
            .datetime
            .unwrap_or(record.received_at)
            .min(record.received_at);
        if vectors_due && at >= from_ms {
            // As a server learns them while it serves: from the sessions before the days
            // replayed, never from those the answers are scored on.
            vectors_due = false;
            if let Some(site) = engine.site_mut(site_id) {
                // Beside the serving (a server's backtest): on half the cores.
                let threads = spoor_engine::recommend::embeddings::background_threads();
                site.recommender_mut().learn_embeddings(threads);
            }
        }
        let moment = (at >= from_ms)
            .then(|| moment_products(event))
            .flatten()
            .filter(|products| !products.is_empty());
        let Some(products) = moment else {
            engine.apply(&record);
            continue;
        };
        let ids = identifiers_of(&event.visitor);
        let owed = (ids.iter())
            .filter_map(|id| pending.get(id))
            .filter(|p| !p.scored.get())
            .max_by_key(|p| p.at);
        if let Some(owed) = owed.filter(|p| at - p.at <= SESSION_GAP_MS) {
            owed.scored.set(true);
            score(owed, &products, &mut tallies);
        }
        engine.apply(&record);
        // Asked once the moment's own event is in (a page sends its view, then asks for
        // its blocks), never knowing the next one.
        let Some(site) = engine.site(site_id) else {
            continue;
        };
        if let Some(contact) = contact_of(site, event) {
            report.moments += 1;
            let question = Question {
                contact,
                products: &products,
                at,
                next_item,
                baskets,
            };
            let asked = Rc::new(ask(site, &question, variants, &mut tallies));
            for id in ids {
                pending.insert(id, asked.clone());
            }
        }
    }
    let catalogue = engine.site(site_id).map_or(0, |s| s.counts().products);
    report.variants = (variants.iter().zip(tallies))
        .map(|(variant, tally)| summary(variant, &tally, catalogue))
        .collect();
    report
}

/// A moment, as the variants are asked about it.
struct Question<'a> {
    contact: ContactId,
    products: &'a [&'a str],
    at: i64,
    next_item: Option<&'a NextItemParams>,
    baskets: Option<&'a BasketSettings>,
}

fn ask(
    site: &SiteState,
    question: &Question<'_>,
    variants: &[Variant],
    tallies: &mut [Tally],
) -> Pending {
    let contact = site.contact_by_id(question.contact);
    let lists = (variants.iter().zip(tallies.iter_mut()))
        .map(|(variant, tally)| {
            let request = Request {
                algorithms: variant.algorithms.clone(),
                contact,
                product_keys: question.products.to_vec(),
                category_key: None,
                limit: variant.limit,
                now: question.at,
                filters: variant.filters.clone(),
                next_item: question.next_item,
                baskets: question.baskets,
            };
            let answer = site.recommend(&request);
            let first = variant.algorithms.first().copied();
            tally.products += answer.products.len() as u64;
            tally.from_fallback +=
                answer.sources.iter().filter(|s| Some(**s) != first).count() as u64;
            tally.empty += u64::from(answer.products.is_empty());
            let keys: Vec<String> = (answer.products.iter())
                .map(|p| p.product_key.clone())
                .collect();
            tally.shown.extend(keys.iter().cloned());
            keys
        })
        .collect();
    Pending {
        at: question.at,
        asked_about: question.products.iter().map(|k| k.to_string()).collect(),
        lists,
        scored: Cell::new(false),
    }
}

/// Scores what was recommended against the products the visitor went on to: those new
/// to the moment asked about (a view followed by its own cart is no news, and the page's
/// products are never recommended on it); nothing when there are none.
fn score(owed: &Pending, next: &[&str], tallies: &mut [Tally]) {
    let next: Vec<&str> = (next.iter().copied())
        .filter(|key| !owed.asked_about.iter().any(|asked| asked == key))
        .collect();
    if next.is_empty() {
        return;
    }
    for (list, tally) in owed.lists.iter().zip(tallies.iter_mut()) {
        tally.scored += 1;
        let rank = list.iter().position(|key| next.contains(&key.as_str()));
        if let Some(rank) = rank {
            tally.hits += 1;
            tally.reciprocal_ranks += 1.0 / (rank + 1) as f64;
        }
    }
}

fn summary(variant: &Variant, tally: &Tally, catalogue: u64) -> VariantScore {
    let share = |part: f64, whole: u64| if whole == 0 { 0.0 } else { part / whole as f64 };
    VariantScore {
        variant_id: variant.variant_id.clone(),
        scored: tally.scored,
        hit_rate: share(tally.hits as f64, tally.scored),
        mrr: share(tally.reciprocal_ranks, tally.scored),
        coverage: share(tally.shown.len() as f64, catalogue),
        fallback_share: share(tally.from_fallback as f64, tally.products),
        empty_answers: tally.empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::json;
    use spoor_protocol::{Incoming, parse_value};

    const T0: i64 = 1_700_000_000_000;

    /// Each record its own request: a repeated one would be a client's retry.
    static NEXT_REQUEST: AtomicU64 = AtomicU64::new(0);

    fn record(body: serde_json::Value, at: i64) -> StoredRecord {
        let Ok(Incoming::Event(event)) = parse_value(&body, at) else {
            panic!("a valid event: {body}");
        };
        StoredRecord {
            sealed: None,
            received_at: at,
            request_hash: format!("{:032x}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)),
            content: RecordContent::Event(event),
        }
    }

    fn view(sc: &str, key: &str, at: i64) -> StoredRecord {
        let at = T0 + at;
        record(
            json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S", "datetime": at,
                                   "cookies": {"sc": sc}},
                   "ProductPage": {"productKey": key, "price": 1}}),
            at,
        )
    }

    #[test]
    fn a_variant_that_knows_what_follows_scores_above_one_that_does_not() {
        // Many visitors go from a to b; later, one more does.
        let mut records = Vec::new();
        for v in 0..20 {
            records.push(view(&format!("v{v}"), "a", 1_000 + v * 10));
            records.push(view(&format!("v{v}"), "b", 1_001 + v * 10));
            records.push(view(&format!("w{v}"), "c", 1_002 + v * 10));
        }
        records.push(view("late", "a", 10_000));
        records.push(view("late", "b", 10_001));
        let variant = |id: &str, algorithm| Variant {
            variant_id: id.into(),
            algorithms: vec![algorithm],
            limit: 1,
            filters: Filters::default(),
        };
        let variants = [
            variant("similar", Algorithm::Similar),
            variant("new", Algorithm::NewArrivals),
        ];
        let report = backtest("S", records, T0 + 10_000, &variants, None, None);
        assert_eq!(report.moments, 2);
        assert_eq!(report.records, 62);
        let [similar, new] = &report.variants[..] else {
            panic!("two variants")
        };
        assert_eq!(
            (similar.scored, similar.hit_rate, similar.mrr),
            (1, 1.0, 1.0)
        );
        assert_eq!(new.scored, 1);
        assert_eq!(new.hit_rate, 0.0, "{new:?}");
        assert!(similar.coverage > 0.0 && similar.coverage <= 1.0);
    }

    #[test]
    fn settings_that_weigh_the_vectors_are_replayed_with_vectors_learned_before_the_days() {
        // q comes with b0 most often (15 sessions, each a 10), but its company is the
        // a's; b0's is the b's.
        let mut records = Vec::new();
        let mut visit = |n: usize, products: &[&str]| {
            for (step, product) in products.iter().enumerate() {
                records.push(view(&format!("v{n}"), product, (n * 10 + step) as i64));
            }
        };
        for n in 0..40 {
            visit(n, &["q", ["a1", "a2", "a3", "a4"][n % 4]]);
        }
        for n in 40..55 {
            visit(n, &["q", "b0"]);
        }
        for n in 55..95 {
            let b = ["b1", "b2", "b3", "b4"];
            visit(n, &["b0", b[n % 4], b[(n + 1) % 4]]);
        }
        // The last visitor views q, then puts the a's in the cart: any a answered hits.
        visit(10_000, &["q"]);
        let at = T0 + 100_010;
        let lines: Vec<serde_json::Value> = ["a1", "a2", "a3", "a4"]
            .iter()
            .map(|key| json!({"productKey": key, "price": 1, "quantity": 1}))
            .collect();
        records.push(record(
            json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": "S", "datetime": at,
                                   "cookies": {"sc": "v10000"}},
                   "StatusCart": {"GUID": "c1", "Products": lines}}),
            at,
        ));
        let variants = [Variant {
            variant_id: "similar".into(),
            algorithms: vec![Algorithm::Similar],
            limit: 1,
            filters: Filters::default(),
        }];
        let hit_rate = |weight: f32| {
            let params = NextItemParams {
                embedding_weight: weight,
                ..NextItemParams::default()
            };
            let report = backtest(
                "S",
                records.clone(),
                T0 + 100_000,
                &variants,
                Some(&params),
                None,
            );
            assert_eq!(report.variants[0].scored, 1);
            report.variants[0].hit_rate
        };
        assert_eq!(hit_rate(0.0), 0.0, "counts answer b0");
        assert_eq!(hit_rate(10.0), 1.0, "the vectors answer an a");
    }
}
