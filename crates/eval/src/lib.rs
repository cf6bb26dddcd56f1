//! Offline evaluation of the recommenders through the engine's own code: the training
//! data is fed in as the views and purchases the server would apply, and the questions
//! are the ones the server answers.
//!
//! Session data comes in the format of the session-recommendation literature:
//! a training file with a session per line (product keys separated by spaces, in view
//! order, sessions in time order) and a test file with a case per line (the session so
//! far, a tab, the product viewed next).

pub mod backtest;
pub mod baskets;

use std::io::BufRead;
use std::time::Instant;

use serde::Serialize;

use spoor_engine::items::ItemId;
use spoor_engine::recommend::{
    ComponentFigures, NextItemParams, Recommender, Tuning, TuningGoal, Voice,
};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what} line {line}: {reason}")]
    Format {
        what: &'static str,
        line: usize,
        reason: String,
    },
}

/// Hit rate, reciprocal rank and NDCG at k, summed over cases.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RankMetrics {
    pub cases: u64,
    hits: u64,
    reciprocal_ranks: f64,
    gains: f64,
}

impl RankMetrics {
    /// Adds a case whose single relevant item came at `rank` (1-based) or not at all.
    pub fn add(&mut self, rank: Option<usize>) {
        self.cases += 1;
        if let Some(rank) = rank {
            self.hits += 1;
            self.reciprocal_ranks += 1.0 / rank as f64;
            self.gains += 1.0 / (rank as f64 + 1.0).log2();
        }
    }

    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits as f64, self.cases)
    }

    pub fn mrr(&self) -> f64 {
        ratio(self.reciprocal_ranks, self.cases)
    }

    pub fn merge(&mut self, other: &RankMetrics) {
        self.cases += other.cases;
        self.hits += other.hits;
        self.reciprocal_ranks += other.reciprocal_ranks;
        self.gains += other.gains;
    }

    pub fn ndcg(&self) -> f64 {
        ratio(self.gains, self.cases)
    }
}

fn ratio(sum: f64, cases: u64) -> f64 {
    if cases == 0 { 0.0 } else { sum / cases as f64 }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    pub k: usize,
    pub test_cases: u64,
    pub hit_rate: f64,
    pub mrr: f64,
    pub ndcg: f64,
    /// Share of the known items that appear in at least one answer.
    pub item_coverage: f64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
    pub seconds: f64,
}

/// Time between two training sessions, and between two views of one: only their order
/// matters, but the models' recency weights are in real time, so these stand for a
/// typical shop's pace.
const SESSION_SPACING_MS: i64 = 60_000;
const VIEW_SPACING_MS: i64 = 1_000;
const START_MS: i64 = 1_600_000_000_000;

/// A test case: the session so far, and the product viewed next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub prefix: Vec<String>,
    pub target: String,
}

/// Reads test cases: `<items so far>` TAB `<next item>` per line.
pub fn read_cases(test: impl BufRead) -> Result<Vec<Case>, EvalError> {
    let mut cases = Vec::new();
    for (index, line) in test.lines().enumerate() {
        let line = line.map_err(|source| EvalError::Read {
            what: "test cases",
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let (prefix, target) = line.split_once('\t').ok_or_else(|| EvalError::Format {
            what: "test cases",
            line: index + 1,
            reason: "expected `<items so far>` TAB `<next item>`".into(),
        })?;
        let prefix: Vec<String> = prefix.split_ascii_whitespace().map(String::from).collect();
        let target = target.trim();
        if prefix.is_empty() || target.is_empty() {
            return Err(EvalError::Format {
                what: "test cases",
                line: index + 1,
                reason: "a case needs at least one item so far and a next item".into(),
            });
        }
        cases.push(Case {
            prefix,
            target: target.to_string(),
        });
    }
    Ok(cases)
}

/// Reads training sessions, a session per line.
pub fn read_sessions(train: impl BufRead) -> Result<Vec<Vec<String>>, EvalError> {
    let mut sessions = Vec::new();
    for line in train.lines() {
        let line = line.map_err(|source| EvalError::Read {
            what: "training sessions",
            source,
        })?;
        let session: Vec<String> = line.split_ascii_whitespace().map(String::from).collect();
        if !session.is_empty() {
            sessions.push(session);
        }
    }
    Ok(sessions)
}

/// Splits the last `share` of `sessions` off as validation cases, made as the test
/// cases of the literature are: every proper prefix of a session with the item after it,
/// once items never seen in the remaining training sessions are dropped.
pub fn carve_validation(sessions: &[Vec<String>], share: f64) -> (&[Vec<String>], Vec<Case>) {
    let cut = sessions.len() - (sessions.len() as f64 * share).round() as usize;
    let (train, held) = sessions.split_at(cut);
    let known: std::collections::HashSet<&str> =
        train.iter().flatten().map(String::as_str).collect();
    let mut cases = Vec::new();
    for session in held {
        let kept: Vec<&String> = session
            .iter()
            .filter(|i| known.contains(i.as_str()))
            .collect();
        for end in 1..kept.len() {
            cases.push(Case {
                prefix: kept[..end].iter().map(|s| (*s).clone()).collect(),
                target: kept[end].clone(),
            });
        }
    }
    (train, cases)
}

/// Feeds `sessions` to `recommender` as visitors' views, in order, a typical shop's pace
/// apart; the time after the last.
pub fn train_on(recommender: &mut Recommender, sessions: &[Vec<String>]) -> i64 {
    let times = paced(sessions.len() + 1);
    train_on_at(recommender, sessions, &times);
    times[sessions.len()]
}

/// Start times for `n` sessions, a typical shop's pace apart: data sets without times.
pub fn paced(n: usize) -> Vec<i64> {
    (0..n as i64)
        .map(|i| START_MS + i * SESSION_SPACING_MS)
        .collect()
}

/// Feeds `sessions` to `recommender`, session `i` starting at `times[i]`.
pub fn train_on_at(recommender: &mut Recommender, sessions: &[Vec<String>], times: &[i64]) {
    for (index, (session, at)) in sessions.iter().zip(times).enumerate() {
        for (position, key) in session.iter().enumerate() {
            recommender.viewed(
                Some(index as u32),
                key,
                at + position as i64 * VIEW_SPACING_MS,
            );
        }
    }
}

/// What `spoor eval sessions` can ask the engine for a session so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAlgorithm {
    /// The next-item model on the whole session (what `personal` serves).
    Personal,
    /// The next-item model on the last item alone (what `similar` serves on a product page).
    Similar,
    /// The most viewed products, whatever the session.
    Popular,
}

impl SessionAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            SessionAlgorithm::Personal => "personal",
            SessionAlgorithm::Similar => "similar",
            SessionAlgorithm::Popular => "popular",
        }
    }
}

/// Asks `recommender` at `now` for `k` products for every case, by `algorithm`, and
/// scores the answers, on every core.
pub fn score_algorithm(
    recommender: &Recommender,
    algorithm: SessionAlgorithm,
    cases: &[Case],
    now: i64,
    k: usize,
) -> SessionReport {
    let params = &recommender.next_item;
    score_by(recommender, cases, k, |prefix| match algorithm {
        SessionAlgorithm::Personal => keys_of(recommender.next_items_with(params, prefix, now, k)),
        SessionAlgorithm::Similar => {
            keys_of(recommender.next_items_with(params, &prefix[prefix.len() - 1..], now, k))
        }
        SessionAlgorithm::Popular => recommender.most_viewed(k),
    })
}

fn keys_of(scored: Vec<(&str, f32)>) -> Vec<&str> {
    scored.into_iter().map(|(key, _)| key).collect()
}

/// Which products an answer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerRule {
    /// Any, those of the session too: the protocol of the published results.
    Everything,
    /// As `personal` serves a visitor: the products already in their session left out
    /// (they are the recently-viewed block's business).
    AsServed,
}

fn score_cases_with(
    recommender: &Recommender,
    params: &NextItemParams,
    cases: &[Case],
    now: i64,
    k: usize,
    rule: AnswerRule,
) -> SessionReport {
    score_by(recommender, cases, k, |prefix| match rule {
        AnswerRule::Everything => keys_of(recommender.next_items_with(params, prefix, now, k)),
        AnswerRule::AsServed => {
            let found = recommender.next_items_with(params, prefix, now, k + prefix.len());
            let mut keys = keys_of(found);
            keys.retain(|key| !prefix.contains(key));
            keys.truncate(k);
            keys
        }
    })
}

fn score_by<'r>(
    recommender: &'r Recommender,
    cases: &[Case],
    k: usize,
    ask: impl Fn(&[&str]) -> Vec<&'r str> + Sync,
) -> SessionReport {
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = cases.len().div_ceil(threads).max(1);
    let parts: Vec<Answers> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(chunk)
            .map(|part| scope.spawn(|| answer_cases(recommender, part, &ask)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("an evaluation thread panicked"))
            .collect()
    });
    let mut all = Answers::default();
    let mut recommended = vec![false; recommender.items().len()];
    for part in parts {
        all.metrics.merge(&part.metrics);
        all.latencies_ns.extend(part.latencies_ns);
        for item in part.recommended {
            recommended[item as usize] = true;
        }
    }
    all.latencies_ns.sort_unstable();
    let covered = recommended.iter().filter(|r| **r).count();
    let metrics = all.metrics;
    SessionReport {
        k,
        test_cases: metrics.cases,
        hit_rate: metrics.hit_rate(),
        mrr: metrics.mrr(),
        ndcg: metrics.ndcg(),
        item_coverage: ratio(covered as f64, recommended.len() as u64),
        latency_us_p50: percentile_us(&all.latencies_ns, 0.50),
        latency_us_p99: percentile_us(&all.latencies_ns, 0.99),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[derive(Default)]
struct Answers {
    metrics: RankMetrics,
    latencies_ns: Vec<u64>,
    recommended: Vec<ItemId>,
}

fn answer_cases<'r>(
    recommender: &'r Recommender,
    cases: &[Case],
    ask: &(impl Fn(&[&str]) -> Vec<&'r str> + Sync),
) -> Answers {
    let mut answers = Answers::default();
    for case in cases {
        let prefix: Vec<&str> = case.prefix.iter().map(String::as_str).collect();
        let asked = Instant::now();
        let answer = ask(&prefix);
        answers.latencies_ns.push(asked.elapsed().as_nanos() as u64);
        answers
            .recommended
            .extend(answer.iter().filter_map(|key| recommender.items().get(key)));
        let rank = answer.iter().position(|key| *key == case.target);
        answers.metrics.add(rank.map(|p| p + 1));
    }
    answers
}

/// Replays `cases` as live traffic after the training sessions: each test session's
/// cases are asked in order, then the session is applied as a visitor's views, so that
/// later sessions see it, as they would on a running server.
pub fn stream_cases(
    recommender: &mut Recommender,
    cases: &[Case],
    now: i64,
    k: usize,
) -> RankMetrics {
    let mut metrics = RankMetrics::default();
    // Visitor numbers apart from the training sessions'.
    let first_visitor = recommender.unused_visitor();
    for (index, (members, session)) in group_by_session(cases).iter().enumerate() {
        let at = now + index as i64 * SESSION_SPACING_MS;
        for case in members {
            let prefix: Vec<&str> = case.prefix.iter().map(String::as_str).collect();
            let answer = recommender.next_items(&prefix, at, k);
            metrics.add(
                answer
                    .iter()
                    .position(|(key, _)| *key == case.target)
                    .map(|p| p + 1),
            );
        }
        let visitor = first_visitor + index as u32;
        for (position, key) in session.iter().enumerate() {
            recommender.viewed(Some(visitor), key, at + position as i64 * VIEW_SPACING_MS);
        }
    }
    metrics
}

/// A setting the tuner tries: its name, the values tried, and how to set it.
type Knob = (&'static str, Vec<f64>, fn(&mut NextItemParams, f64));

/// The settings the tuner tries, one at a time, each around the best so far: first the
/// voices' weights (so that a blend can grow from whichever voice alone did best), then
/// each voice's own settings.
fn candidate_settings() -> Vec<Knob> {
    vec![
        ("neighbour_weight", vec![0.0, 0.5, 1.0, 2.0], |p, v| {
            p.neighbour_weight = v as f32
        }),
        ("repeat_weight", vec![0.0, 0.1, 0.3, 1.0, 3.0], |p, v| {
            p.repeat_weight = v as f32
        }),
        ("successor_weight", vec![0.0, 0.1, 0.2, 0.5, 1.0], |p, v| {
            p.successor_weight = v as f32
        }),
        ("cooccurrence_weight", vec![0.0, 0.1, 0.3, 1.0], |p, v| {
            p.cooccurrence_weight = v as f32
        }),
        ("seen_weight", vec![0.5, 1.0, 1.5, 2.0, 3.0], |p, v| {
            p.seen_weight = v as f32
        }),
        ("repeat_decay", vec![1.0, 3.0, 10.0], |p, v| {
            p.repeat_decay = v as f32
        }),
        ("neighbours", vec![50.0, 100.0, 200.0, 400.0], |p, v| {
            p.neighbours = v as usize
        }),
        (
            "recency_days",
            vec![15.0, 30.0, 60.0, 120.0, 240.0],
            |p, v| p.recency_half_life_ms = v * 86_400_000.0,
        ),
        ("prefix_decay", vec![1.0, 2.0, 3.0, 5.0], |p, v| {
            p.prefix_decay = v as f32
        }),
        ("neighbour_decay", vec![1.0, 2.0, 4.0, 8.0, 16.0], |p, v| {
            p.neighbour_decay = v as f32
        }),
        ("length_power", vec![0.25, 0.5, 0.75, 1.0], |p, v| {
            p.length_power = v as f32
        }),
        (
            "idf_power",
            vec![-0.8, -0.6, -0.45, -0.3, -0.1, 0.0, 0.5],
            |p, v| p.idf_power = v as f32,
        ),
        ("shared_idf_power", vec![-0.5, -0.3, 0.0], |p, v| {
            p.shared_idf_power = v as f32
        }),
        ("trend_power", vec![0.0, 0.1, 0.2, 0.3], |p, v| {
            p.trend_power = v as f32
        }),
        ("trend_days", vec![3.0, 7.0, 14.0], |p, v| {
            p.trend_window_ms = v * 86_400_000.0
        }),
        ("stale_days", vec![0.0, 60.0, 120.0], |p, v| {
            p.stale_half_life_ms = v * 86_400_000.0
        }),
        ("successor_depth", vec![0.0, 0.5, 1.0], |p, v| {
            p.successor_depth = v as f32
        }),
        ("embedding_weight", vec![0.0, 0.1, 0.3], |p, v| {
            p.embedding_weight = v as f32
        }),
    ]
}

/// Chooses next-item settings on the last tenth of `sessions` (in time order), trained on
/// the rest, for `goal`, item vectors learned: see [`tune_next_item_at`].
pub fn tune_next_item(
    sessions: &[Vec<String>],
    k: usize,
    goal: TuningGoal,
) -> (NextItemParams, Tuning) {
    let times = paced(sessions.len());
    let threads = spoor_engine::recommend::embeddings::all_threads();
    tune_next_item_at(sessions, &times, k, goal, AnswerRule::Everything, threads)
}

/// Held-out sessions a tuning scores at most: its time grows with them (on Diginetica,
/// 8,000 keep `spoor eval sessions` under two minutes), and more moves the choice by less
/// than the held-out noise.
const MAX_TUNING_SESSIONS: usize = 8_000;

/// Chooses next-item settings on sessions that started at `times` (a site's own, real
/// times): the last tenth is held out and predicted from the rest. Each voice alone and
/// the built-in blend are scored first; the best of them for `goal` is the starting
/// point of a coordinate ascent over a small grid (two rounds), which keeps a change only
/// when it scores better. So the choice is never worse on the held-out sessions than any
/// simple method alone, or than the built-in settings. The test data is never looked at.
/// Item vectors are learned from the training part, so that their weight is tried too (a
/// running server learns them for the sites whose settings give them weight), on
/// `learning_threads` threads. Answers are scored by `rule`: a site is tuned on the
/// answers it serves.
pub fn tune_next_item_at(
    sessions: &[Vec<String>],
    times: &[i64],
    k: usize,
    goal: TuningGoal,
    rule: AnswerRule,
    learning_threads: usize,
) -> (NextItemParams, Tuning) {
    let started = Instant::now();
    let (train, cases) = carve_validation(sessions, VALIDATION_SHARE);
    // Every other held-out session at least (half the time, and the choices barely
    // move), fewer on a large site.
    let groups = group_by_session(&cases);
    let step = groups.len().div_ceil(MAX_TUNING_SESSIONS).max(2);
    let cases: Vec<Case> = groups
        .into_iter()
        .step_by(step)
        .flat_map(|(members, _)| members.into_iter().cloned())
        .collect();
    let mut recommender = Recommender::default();
    train_on_at(&mut recommender, train, times);
    recommender.learn_embeddings(learning_threads);
    let now = times.get(train.len()).copied().unwrap_or(START_MS);
    let score =
        |params: &NextItemParams| score_cases_with(&recommender, params, &cases, now, k, rule);
    let objective = |report: &SessionReport| goal.of(report.hit_rate, report.mrr);
    let defaults = NextItemParams::default();
    let default_report = score(&defaults);
    let (mut best, mut best_report) = (defaults.clone(), default_report.clone());
    let mut components = Vec::new();
    for voice in Voice::ALL {
        let alone = defaults.alone(voice);
        let report = score(&alone);
        components.push(ComponentFigures {
            name: voice.name().to_string(),
            hit_rate: report.hit_rate,
            mrr: report.mrr,
        });
        if objective(&report) > objective(&best_report) {
            (best, best_report) = (alone, report);
        }
    }
    let mut tries = 1 + components.len();
    for _round in 0..2 {
        for (_name, values, set) in candidate_settings() {
            for value in values {
                let mut trial = best.clone();
                set(&mut trial, value);
                if answers_alike(&trial, &best) || silent(&trial) {
                    continue;
                }
                let report = score(&trial);
                tries += 1;
                if objective(&report) > objective(&best_report) {
                    best = trial;
                    best_report = report;
                }
            }
        }
    }
    let tuning = Tuning {
        goal,
        as_served: rule == AnswerRule::AsServed,
        validation_sessions: sessions.len() - train.len(),
        validation_cases: best_report.test_cases,
        tries,
        hit_rate: best_report.hit_rate,
        mrr: best_report.mrr,
        default_hit_rate: default_report.hit_rate,
        default_mrr: default_report.mrr,
        components,
        seconds: started.elapsed().as_secs_f64(),
    };
    (best, tuning)
}

/// Whether `a` and `b` answer every question alike: the same settings but for those of a
/// part that neither hears (a trend window at no trend power, the successors' depth with
/// no successor voice...). Such a trial cannot score better, so the tuner skips it.
fn answers_alike(a: &NextItemParams, b: &NextItemParams) -> bool {
    heard(a) == heard(b)
}

/// `params` with the settings of the parts it does not hear set to the built-in ones.
fn heard(params: &NextItemParams) -> NextItemParams {
    let defaults = NextItemParams::default();
    let mut heard = params.clone();
    if heard.trend_power == 0.0 {
        heard.trend_window_ms = defaults.trend_window_ms;
    }
    if heard.successor_weight <= 0.0 {
        heard.successor_depth = defaults.successor_depth;
        heard.successor_steps = defaults.successor_steps;
        heard.successor_sample = defaults.successor_sample;
    }
    if heard.repeat_weight <= 0.0 {
        heard.repeat_decay = defaults.repeat_decay;
    }
    heard
}

/// Whether no voice is heard in `params` (nothing would be recommended).
fn silent(params: &NextItemParams) -> bool {
    [
        params.neighbour_weight,
        params.successor_weight,
        params.repeat_weight,
        params.cooccurrence_weight,
    ]
    .iter()
    .all(|weight| *weight <= 0.0)
}

/// Scores each voice alone, with `params`' own settings otherwise, on the test cases:
/// the simple methods a result is set beside, measured in the same run.
pub fn score_components(
    recommender: &Recommender,
    params: &NextItemParams,
    cases: &[Case],
    now: i64,
    k: usize,
) -> Vec<(Voice, SessionReport)> {
    Voice::ALL
        .into_iter()
        .map(|voice| {
            (
                voice,
                score_cases_with(
                    recommender,
                    &params.alone(voice),
                    cases,
                    now,
                    k,
                    AnswerRule::Everything,
                ),
            )
        })
        .collect()
}

/// The share of the training sessions (the most recent) held out for tuning.
pub const VALIDATION_SHARE: f64 = 0.1;

/// The sessions of `cases` in order, each as its cases from the shortest prefix on and
/// the whole session: test files list every prefix of a session together (longest or
/// shortest first).
pub fn group_by_session(cases: &[Case]) -> Vec<(Vec<&Case>, Vec<String>)> {
    let mut groups: Vec<Vec<&Case>> = Vec::new();
    for case in cases {
        let continues = groups
            .last()
            .and_then(|members| members.last())
            .is_some_and(|previous| extends(previous, case) || extends(case, previous));
        if !continues {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("pushed above").push(case);
    }
    groups
        .into_iter()
        .map(|mut members| {
            members.sort_by_key(|c| c.prefix.len());
            let longest = members.last().expect("a group has a case");
            let mut session = longest.prefix.clone();
            session.push(longest.target.clone());
            (members, session)
        })
        .collect()
}

/// Whether `longer` is the case right after `shorter` in one session.
fn extends(shorter: &Case, longer: &Case) -> bool {
    let n = shorter.prefix.len();
    longer.prefix.len() == n + 1
        && longer.prefix[..n] == shorter.prefix[..]
        && longer.prefix[n] == shorter.target
}

fn percentile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let index = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    sorted_ns[index] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions where a visitor often goes back to what they viewed two steps before,
    /// and otherwise on along a ring of 40 products: every voice has something to find.
    fn wandering_sessions(count: usize) -> Vec<Vec<String>> {
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        (0..count)
            .map(|_| {
                let mut session = vec![next(40)];
                for _ in 0..5 {
                    let step = match next(3) {
                        0 if session.len() >= 2 => session[session.len() - 2],
                        _ => (session[session.len() - 1] + 1 + next(2)) % 40,
                    };
                    session.push(step);
                }
                session.iter().map(|item| format!("p{item}")).collect()
            })
            .collect()
    }

    #[test]
    fn the_tuning_is_never_worse_than_a_simple_method_on_its_validation_cases() {
        let sessions = wandering_sessions(400);
        for goal in [TuningGoal::HitRate, TuningGoal::Mrr, TuningGoal::Both] {
            let (chosen, report) = tune_next_item(&sessions, 5, goal);
            let names: Vec<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, Voice::ALL.map(Voice::name));
            assert_eq!(report.goal, goal);
            let tuned = goal.of(report.hit_rate, report.mrr);
            for component in &report.components {
                assert!(
                    tuned >= goal.of(component.hit_rate, component.mrr),
                    "{goal:?}: {report:?}"
                );
            }
            assert!(tuned >= goal.of(report.default_hit_rate, report.default_mrr));
            assert!(!silent(&chosen));
        }
    }

    #[test]
    fn a_trial_that_changes_only_a_part_not_heard_is_skipped() {
        let quiet = NextItemParams::default();
        let wider_window = NextItemParams {
            trend_window_ms: 30.0 * 86_400_000.0,
            ..quiet.clone()
        };
        assert!(answers_alike(&wider_window, &quiet));
        let trending = NextItemParams {
            trend_power: 0.2,
            ..quiet.clone()
        };
        let trending_wider = NextItemParams {
            trend_window_ms: 30.0 * 86_400_000.0,
            ..trending.clone()
        };
        assert!(!answers_alike(&trending_wider, &trending));
        let no_successors = NextItemParams {
            successor_weight: 0.0,
            ..quiet.clone()
        };
        let deeper = NextItemParams {
            successor_depth: 1.0,
            ..no_successors.clone()
        };
        assert!(answers_alike(&deeper, &no_successors));
        assert!(!answers_alike(
            &NextItemParams {
                successor_depth: 1.0,
                ..quiet.clone()
            },
            &quiet
        ));
    }

    #[test]
    fn metrics_by_hand() {
        let mut m = RankMetrics::default();
        m.add(Some(1)); // rr 1, gain 1
        m.add(Some(3)); // rr 1/3, gain 1/log2(4) = 0.5
        m.add(None);
        m.add(Some(2)); // rr 1/2, gain 1/log2(3)
        assert_eq!(m.cases, 4);
        assert!((m.hit_rate() - 0.75).abs() < 1e-12);
        assert!((m.mrr() - (1.0 + 1.0 / 3.0 + 0.5) / 4.0).abs() < 1e-12);
        let ndcg = (1.0 + 0.5 + 1.0 / 3f64.log2()) / 4.0;
        assert!((m.ndcg() - ndcg).abs() < 1e-12);
    }
}
