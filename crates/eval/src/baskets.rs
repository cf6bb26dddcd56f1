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
use spoor_engine::recommend::{
    Algorithm, BasketGoal, BasketPart, BasketSettings, BasketTuning, NextItemParams, PartFigures,
    RepeatParams, Request, TogetherFigures,
};
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

#[derive(Debug, Clone, Serialize)]
pub struct NextBasketReport {
    pub algorithm: &'static str,
    pub users: u64,
    pub recall: f64,
    pub ndcg: f64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
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
        baskets: None,
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

/// A next-basket setting the tuner tries: the values tried, and how to set it.
type RepeatKnob = (Vec<f32>, fn(&mut RepeatParams, f32));

fn repeat_knobs() -> Vec<RepeatKnob> {
    vec![
        (vec![0.0, 0.5, 1.0, 2.0, 4.0, 16.0], |p, v| p.weight = v),
        (vec![0.0, 0.5, 1.0, 2.0], |p, v| p.together_weight = v),
        (vec![0.0, 0.3, 1.0, 3.0], |p, v| p.cooccurrence_weight = v),
        (vec![0.0, 0.1, 0.3, 1.0], |p, v| p.popularity_weight = v),
        (vec![0.5, 0.8, 0.95, 1.0], |p, v| p.decay = v),
    ]
}

/// The voices of bought-together, each alone: its name, the neighbours' weight and the
/// co-occurrence's.
pub const TOGETHER_VOICES: [(&str, f32, f32); 2] =
    [("basket-neighbours", 1.0, 0.0), ("co-occurrence", 0.0, 1.0)];

/// Validation leave-one-out baskets at most: beyond it, more barely moves the choice.
const MAX_TOGETHER_BASKETS: usize = 2_000;
/// Validation customers at most (a large shop's tuning stays within minutes).
const MAX_VALIDATION_USERS: usize = 5_000;

/// Chooses the next-basket blend and the bought-together blend on the training baskets
/// alone: each user's last training basket is held out and predicted from the ones
/// before it. Each part alone and the built-in blend are scored first; the best for
/// `goal` starts a coordinate ascent over a small grid (two rounds) that keeps only
/// improvements, so the choice is never worse on the held-out baskets than a part alone.
pub fn tune_baskets(
    train: &[Basket],
    k: usize,
    goal: BasketGoal,
) -> (BasketSettings, BasketTuning) {
    let started = Instant::now();
    let (fit, held) = split_last(train);
    let step = held.len().div_ceil(MAX_VALIDATION_USERS).max(1);
    let validation: Vec<Basket> = held.into_iter().step_by(step).collect();
    let mut site = train_site(&fit);
    let mut tries = 0;
    let mut score = |site: &mut SiteState, trial: &RepeatParams| {
        site.recommender_mut().repeat = trial.clone();
        tries += 1;
        score_next_basket(site, Algorithm::Personal, &validation, k)
    };
    let defaults = RepeatParams::default();
    let (mut best, mut best_report) = (defaults.clone(), score(&mut site, &defaults));
    let mut components = Vec::new();
    for part in BasketPart::ALL {
        let alone = defaults.alone(part);
        let report = score(&mut site, &alone);
        components.push(PartFigures {
            name: part.name().to_string(),
            recall: report.recall,
            ndcg: report.ndcg,
        });
        if goal.of(report.recall, report.ndcg) > goal.of(best_report.recall, best_report.ndcg) {
            (best, best_report) = (alone, report);
        }
    }
    for _round in 0..2 {
        for (values, set) in repeat_knobs() {
            for value in values {
                let mut trial = best.clone();
                set(&mut trial, value);
                let silent = trial.weight <= 0.0
                    && trial.together_weight <= 0.0
                    && trial.cooccurrence_weight <= 0.0
                    && trial.popularity_weight <= 0.0;
                if trial == best || silent {
                    continue;
                }
                let report = score(&mut site, &trial);
                if goal.of(report.recall, report.ndcg)
                    > goal.of(best_report.recall, best_report.ndcg)
                {
                    (best, best_report) = (trial, report);
                }
            }
        }
    }
    let (together, bought_together, together_tries) =
        tune_bought_together(&mut site, &validation, k);
    let chosen = BasketSettings {
        personal: best,
        together_neighbour_weight: together.neighbour_weight,
        together_cooccurrence_weight: together.cooccurrence_weight,
    };
    let tuning = BasketTuning {
        goal,
        validation_users: best_report.users,
        tries: tries + together_tries,
        recall: best_report.recall,
        ndcg: best_report.ndcg,
        components,
        bought_together,
        seconds: started.elapsed().as_secs_f64(),
    };
    (chosen, tuning)
}

/// Chooses the bought-together blend (baskets' neighbours and co-occurrence) by HR + MRR,
/// leave-one-out over `validation`.
fn tune_bought_together(
    site: &mut SiteState,
    validation: &[Basket],
    k: usize,
) -> (NextItemParams, Vec<TogetherFigures>, usize) {
    let step = validation.len().div_ceil(MAX_TOGETHER_BASKETS).max(1);
    let baskets: Vec<Basket> = validation.iter().step_by(step).cloned().collect();
    let defaults = site.recommender().basket.clone();
    let mut tries = 0;
    let mut score = |site: &mut SiteState, trial: &NextItemParams| {
        site.recommender_mut().basket = trial.clone();
        tries += 1;
        score_leave_one_out(site, Algorithm::BoughtTogether, &baskets, k)
    };
    let objective = |report: &LeaveOneOutReport| report.hit_rate + report.mrr;
    let alone = TOGETHER_VOICES
        .map(|(name, neighbours, cooccurrence)| (Some(name), neighbours, cooccurrence));
    let blends = [(1.0, 0.1), (1.0, 0.3), (1.0, 1.0), (0.3, 1.0)].map(|(n, c)| (None, n, c));
    let mut figures = Vec::new();
    let mut best: Option<(NextItemParams, LeaveOneOutReport)> = None;
    for (name, neighbours, cooccurrence) in alone.into_iter().chain(blends) {
        let trial = NextItemParams {
            neighbour_weight: neighbours,
            cooccurrence_weight: cooccurrence,
            ..defaults.clone()
        };
        let report = score(site, &trial);
        if let Some(name) = name {
            figures.push(TogetherFigures {
                name: name.to_string(),
                hit_rate: report.hit_rate,
                mrr: report.mrr,
            });
        }
        if best
            .as_ref()
            .is_none_or(|(_, b)| objective(&report) > objective(b))
        {
            best = Some((trial, report));
        }
    }
    let (chosen, report) = best.expect("trials are tried");
    figures.push(TogetherFigures {
        name: "chosen".to_string(),
        hit_rate: report.hit_rate,
        mrr: report.mrr,
    });
    site.recommender_mut().basket = chosen.clone();
    (chosen, figures, tries)
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

    /// Customers who mostly buy again from their own few favourites, with a product of
    /// the week that many buy: the parts each have something to find.
    fn regulars(customers: usize, weeks: usize) -> Vec<Basket> {
        let mut seed = 11u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut baskets = Vec::new();
        for week in 0..weeks {
            for customer in 0..customers {
                if next(3) == 0 {
                    continue;
                }
                let mut items = vec![format!("w{week}")];
                for _ in 0..3 {
                    let item = format!("f{}", (customer as u64 * 3 + next(4)) % 90);
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                baskets.push(Basket {
                    user: format!("c{customer}"),
                    id: format!("{week}-{customer}"),
                    at: (week * 7 * 86_400 + customer) as i64 * 1000,
                    items,
                });
            }
        }
        baskets
    }

    #[test]
    fn the_basket_tuning_is_never_worse_than_a_part_alone_on_its_validation_baskets() {
        let (train, _) = split_last(&regulars(60, 6));
        for goal in [BasketGoal::Recall, BasketGoal::Ndcg] {
            let (_, report) = tune_baskets(&train, 5, goal);
            let names: Vec<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "personal-frequency",
                    "co-occurrence",
                    "popularity",
                    "basket-neighbours"
                ]
            );
            let chosen = goal.of(report.recall, report.ndcg);
            for part in &report.components {
                assert!(
                    chosen >= goal.of(part.recall, part.ndcg),
                    "{goal:?}: {report:?}"
                );
            }
            let together = &report.bought_together;
            let best = together.last().unwrap();
            assert_eq!(best.name, "chosen");
            for voice in together {
                assert!(best.hit_rate + best.mrr >= voice.hit_rate + voice.mrr);
            }
        }
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
