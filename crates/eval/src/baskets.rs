//! Next-basket evaluation through the engine: training baskets are applied as the
//! `PurchasedItems` events a shop would send (one contact per user, known by
//! `externalCustomerId`), and the questions are the server's own requests.
//!
//! The data is a CSV with the header `user,basket,item,timestamp` (unix seconds). Each
//! user's last basket (by time) is their test basket; users with one basket are not
//! tested; every other basket is training.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;
use spoor_protocol::{EventBody, OrderLine, Price, Purchase, TrackerEvent, Visitor};

use crate::{EvalError, RankMetrics, percentile_us, ratio};
use spoor_engine::contacts::identity::Identifier;
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::{Algorithm, RepeatParams, Request};
use spoor_engine::site::SiteState;

const SITE: &str = "eval";

/// One basket: a user's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basket {
    pub user: String,
    pub id: String,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Distinct items, in file order.
    pub items: Vec<String>,
}

/// Reads the CSV; baskets come out in time order (ties in file order).
pub fn read_baskets(input: impl BufRead) -> Result<Vec<Basket>, EvalError> {
    let what = "transactions";
    let mut lines = input.lines().enumerate();
    let header = match lines.next() {
        Some((_, line)) => line.map_err(|source| EvalError::Read { what, source })?,
        None => String::new(),
    };
    if header.trim() != "user,basket,item,timestamp" {
        return Err(EvalError::Format {
            what,
            line: 1,
            reason: format!("expected the header `user,basket,item,timestamp`, got {header:?}"),
        });
    }
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut baskets: Vec<Basket> = Vec::new();
    for (number, line) in lines {
        let line = line.map_err(|source| EvalError::Read { what, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |reason: String| EvalError::Format {
            what,
            line: number + 1,
            reason,
        };
        let [user, basket, item, timestamp] = fields[..] else {
            return Err(bad(format!("expected 4 fields, got {}", fields.len())));
        };
        let seconds: i64 = timestamp.parse().map_err(|_| {
            bad(format!(
                "timestamp: expected unix seconds, got {timestamp:?}"
            ))
        })?;
        if user.is_empty() || basket.is_empty() || item.is_empty() {
            return Err(bad("user, basket and item must not be empty".into()));
        }
        let slot = *index
            .entry((user.to_string(), basket.to_string()))
            .or_insert_with(|| {
                baskets.push(Basket {
                    user: user.to_string(),
                    id: basket.to_string(),
                    at: seconds * 1000,
                    items: Vec::new(),
                });
                baskets.len() - 1
            });
        let basket = &mut baskets[slot];
        basket.at = basket.at.min(seconds * 1000);
        if !basket.items.iter().any(|i| i == item) {
            basket.items.push(item.to_string());
        }
    }
    baskets.sort_by_key(|b| b.at);
    Ok(baskets)
}

/// Each user's last basket (users with two or more) for testing; the rest for training,
/// both in time order.
pub fn split_last(baskets: &[Basket]) -> (Vec<Basket>, Vec<Basket>) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (i, basket) in baskets.iter().enumerate() {
        last.insert(&basket.user, i);
        *count.entry(&basket.user).or_default() += 1;
    }
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, basket) in baskets.iter().enumerate() {
        if last[basket.user.as_str()] == i && count[basket.user.as_str()] >= 2 {
            test.push(basket.clone());
        } else {
            train.push(basket.clone());
        }
    }
    (train, test)
}

/// A site state that has seen `baskets` as orders.
pub fn train_site(baskets: &[Basket]) -> SiteState {
    let mut site = SiteState::default();
    for basket in baskets {
        let event = TrackerEvent {
            site_id: SITE.into(),
            datetime: Some(basket.at),
            visitor: Visitor {
                external_customer_id: Some(basket.user.as_str().into()),
                ..Visitor::default()
            },
            body: EventBody::PurchasedItems {
                purchase: Purchase {
                    order_number: format!("{}/{}", basket.user, basket.id),
                    guid: None,
                    tracked_order_id: None,
                    products: basket
                        .items
                        .iter()
                        .map(|item| OrderLine {
                            product_key: item.as_str().into(),
                            unit_price: Price {
                                amount: Decimal::ONE,
                                currency: None,
                            },
                            quantity: 1,
                            tags: Default::default(),
                        })
                        .collect(),
                },
            },
            tags: Default::default(),
        };
        site.apply(&event, basket.at);
    }
    site
}

/// Next-basket recall and NDCG at k (binary relevance), summed over users.
#[derive(Debug, Default, Clone)]
struct BasketMetrics {
    users: u64,
    recall: f64,
    ndcg: f64,
}

impl BasketMetrics {
    fn add(&mut self, answer: &[&str], basket: &[String], k: usize) {
        self.users += 1;
        let relevant = |key: &str| basket.iter().any(|item| item == key);
        let hits = answer.iter().filter(|key| relevant(key)).count();
        self.recall += hits as f64 / basket.len() as f64;
        let gain = |rank: usize| 1.0 / (rank as f64 + 2.0).log2();
        let dcg: f64 = answer
            .iter()
            .enumerate()
            .filter(|(_, key)| relevant(key))
            .map(|(rank, _)| gain(rank))
            .sum();
        let ideal: f64 = (0..basket.len().min(k)).map(gain).sum();
        self.ndcg += dcg / ideal;
    }

    fn merge(&mut self, other: &BasketMetrics) {
        self.users += other.users;
        self.recall += other.recall;
        self.ndcg += other.ndcg;
    }
}

#[derive(Debug, Serialize)]
pub struct NextBasketReport {
    pub algorithm: &'static str,
    pub users: u64,
    pub recall: f64,
    pub ndcg: f64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
}

#[derive(Debug, Serialize)]
pub struct LeaveOneOutReport {
    pub algorithm: &'static str,
    pub cases: u64,
    pub hit_rate: f64,
    pub mrr: f64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
}

fn ask<'a>(
    site: &'a SiteState,
    algorithm: Algorithm,
    user: &str,
    context: Vec<&'a str>,
    now: i64,
    k: usize,
) -> Vec<&'a str> {
    let contact = site.contact(&Identifier::ExternalCustomerId(user.into()));
    let request = Request {
        algorithms: vec![algorithm],
        contact,
        product_keys: context,
        category_key: None,
        limit: k,
        now,
        filters: Filters {
            include_out_of_stock: true,
            ..Filters::default()
        },
        next_item: None,
    };
    site.recommend(&request)
        .products
        .iter()
        .map(|p| p.product_key.as_str())
        .collect()
}

/// Runs `each` over `items` on every core; the parts come back in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], each: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| each(part)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("an evaluation thread panicked"))
            .collect()
    })
}

/// Asks `algorithm` for each test user's next basket, at the time of that basket.
pub fn score_next_basket(
    site: &SiteState,
    algorithm: Algorithm,
    test: &[Basket],
    k: usize,
) -> NextBasketReport {
    let parts = in_parallel(test, |part| {
        let mut metrics = BasketMetrics::default();
        let mut latencies = Vec::with_capacity(part.len());
        for basket in part {
            let asked = Instant::now();
            let answer = ask(site, algorithm, &basket.user, Vec::new(), basket.at, k);
            latencies.push(asked.elapsed().as_nanos() as u64);
            metrics.add(&answer, &basket.items, k);
        }
        (metrics, latencies)
    });
    let mut metrics = BasketMetrics::default();
    let mut latencies = Vec::new();
    for (part, part_latencies) in parts {
        metrics.merge(&part);
        latencies.extend(part_latencies);
    }
    latencies.sort_unstable();
    NextBasketReport {
        algorithm: algorithm.name(),
        users: metrics.users,
        recall: ratio(metrics.recall, metrics.users),
        ndcg: ratio(metrics.ndcg, metrics.users),
        latency_us_p50: percentile_us(&latencies, 0.5),
        latency_us_p99: percentile_us(&latencies, 0.99),
    }
}

/// Leave-one-out over test baskets of two or more items: each item in turn is the
/// target, the rest of its basket the page's products.
pub fn score_leave_one_out(
    site: &SiteState,
    algorithm: Algorithm,
    test: &[Basket],
    k: usize,
) -> LeaveOneOutReport {
    let cases: Vec<(&Basket, usize)> = test
        .iter()
        .filter(|b| b.items.len() >= 2)
        .flat_map(|b| (0..b.items.len()).map(move |target| (b, target)))
        .collect();
    let parts = in_parallel(&cases, |part| {
        let mut metrics = RankMetrics::default();
        let mut latencies = Vec::with_capacity(part.len());
        for (basket, target) in part {
            let context: Vec<&str> = basket
                .items
                .iter()
                .enumerate()
                .filter(|(i, _)| i != target)
                .map(|(_, item)| item.as_str())
                .collect();
            let asked = Instant::now();
            let answer = ask(site, algorithm, &basket.user, context, basket.at, k);
            latencies.push(asked.elapsed().as_nanos() as u64);
            let rank = answer.iter().position(|key| *key == basket.items[*target]);
            metrics.add(rank.map(|r| r + 1));
        }
        (metrics, latencies)
    });
    let mut metrics = RankMetrics::default();
    let mut latencies = Vec::new();
    for (part, part_latencies) in parts {
        metrics.merge(&part);
        latencies.extend(part_latencies);
    }
    latencies.sort_unstable();
    LeaveOneOutReport {
        algorithm: algorithm.name(),
        cases: metrics.cases,
        hit_rate: metrics.hit_rate(),
        mrr: metrics.mrr(),
        latency_us_p50: percentile_us(&latencies, 0.5),
        latency_us_p99: percentile_us(&latencies, 0.99),
    }
}

#[derive(Debug, Serialize)]
pub struct RepeatTuning {
    pub validation_users: u64,
    pub tries: usize,
    /// The chosen settings' recall on the validation baskets.
    pub recall: f64,
    /// The same with nothing bought offered again (repeat weight 0).
    pub recall_without_repeats: f64,
    pub seconds: f64,
}

/// Chooses the repeat settings on the training baskets alone: each user's last training
/// basket is held out and predicted from the ones before it, over a small grid.
pub fn tune_repeat(train: &[Basket], k: usize) -> (RepeatParams, RepeatTuning) {
    let started = Instant::now();
    let (fit, validation) = split_last(train);
    let mut site = train_site(&fit);
    let mut best = (RepeatParams::default(), f64::MIN);
    let mut tries = 0;
    let mut users = 0;
    let mut without_repeats = 0.0;
    for weight in [0.0, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0] {
        for decay in [0.5, 0.8, 0.95, 1.0] {
            if weight == 0.0 && decay != 0.8 {
                continue; // without repeats the decay does nothing
            }
            let trial = RepeatParams { weight, decay };
            site.recommender_mut().repeat = trial.clone();
            let report = score_next_basket(&site, Algorithm::Personal, &validation, k);
            tries += 1;
            users = report.users;
            if weight == 0.0 {
                without_repeats = report.recall;
            }
            if report.recall > best.1 {
                best = (trial, report.recall);
            }
        }
    }
    let tuning = RepeatTuning {
        validation_users: users,
        tries,
        recall: best.1.max(0.0),
        recall_without_repeats: without_repeats,
        seconds: started.elapsed().as_secs_f64(),
    };
    (best.0, tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "user,basket,item,timestamp\n\
        u1,b1,a,100\nu1,b1,b,100\nu1,b2,a,200\nu1,b2,c,200\n\
        u2,b3,a,150\nu2,b3,c,150\n\
        u3,b4,b,120\nu3,b5,c,300\nu3,b5,d,300\n";

    #[test]
    fn baskets_are_read_and_split_by_user() {
        let baskets = read_baskets(CSV.as_bytes()).unwrap();
        let ids: Vec<&str> = baskets.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, vec!["b1", "b4", "b3", "b2", "b5"]);
        let (train, test) = split_last(&baskets);
        let test_ids: Vec<&str> = test.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(test_ids, vec!["b2", "b5"], "u2 has one basket: not tested");
        assert_eq!(train.len(), 3);
        assert!(read_baskets("user,item\n".as_bytes()).is_err());
        let err = read_baskets("user,basket,item,timestamp\nu,b,i,soon\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "transactions line 2: timestamp: expected unix seconds, got \"soon\""
        );
    }

    #[test]
    fn metrics_by_hand() {
        let mut m = BasketMetrics::default();
        // Basket {a, c}; answer [a, x, c]: recall 1, DCG 1 + 1/log2(4) = 1.5,
        // ideal 1 + 1/log2(3).
        m.add(&["a", "x", "c"], &["a".into(), "c".into()], 3);
        // Basket {d}; answer [x, y, z]: nothing.
        m.add(&["x", "y", "z"], &["d".into()], 3);
        assert_eq!(m.users, 2);
        assert!((m.recall / 2.0 - 0.5).abs() < 1e-12);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg / 2.0 - 1.5 / ideal / 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_engine_answers_from_the_training_baskets() {
        let baskets = read_baskets(CSV.as_bytes()).unwrap();
        let (train, test) = split_last(&baskets);
        let site = train_site(&train);
        // u1 bought {a, b}; u2 bought {a, c}: bought together with a is c (and b).
        let u1 = ask(&site, Algorithm::Personal, "u1", Vec::new(), 200_000, 3);
        assert_eq!(
            u1,
            vec!["a", "b", "c"],
            "repeats first, then c from u2's basket"
        );
        let report = score_leave_one_out(&site, Algorithm::BoughtTogether, &test, 1);
        // b2 {a, c}: c -> a, and a -> c (the more recent of the tied b, c); b5 {c, d}: d is
        // unknown, and c -> a misses.
        assert_eq!(report.cases, 4);
        assert_eq!(report.hit_rate, 0.5);
    }
}
