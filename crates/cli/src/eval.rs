//! `spoor eval`: offline evaluation of the recommenders through the engine's own code.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::{Value, json};
use spoor_engine::eval::{
    SessionAlgorithm, SessionReport, read_cases, read_sessions, score_algorithm, stream_cases,
    train_on, tune_next_item,
};
use spoor_engine::recommend::Recommender;

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Next-item quality on session data: trains on a file of sessions (one per line,
    /// product keys separated by spaces, sessions in time order), asks for k products for
    /// every line of the test file (`<items so far>` TAB `<next item>`), and prints one
    /// JSON object: HR@k, MRR@k, NDCG@k, item coverage, cases, query latency. The
    /// settings are first tuned on the last tenth of the training sessions (never on the
    /// test file). Also prints the same metrics with the test sessions replayed as live
    /// traffic ("streaming"): each test session is applied once its cases are asked, as a
    /// running server would have it.
    Sessions {
        /// Training sessions, e.g. ../shared/data/diginetica/train_sessions.txt
        #[arg(long)]
        train: PathBuf,
        /// Test cases, e.g. ../shared/data/diginetica/test_prefixes.tsv
        #[arg(long)]
        test: PathBuf,
        #[arg(long, value_enum, default_value = "personal")]
        algorithm: EvalAlgorithm,
        /// Products asked for per case.
        #[arg(long, default_value_t = 20)]
        k: usize,
        /// Use the built-in settings instead of tuning on held-out training sessions.
        #[arg(long)]
        no_tune: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EvalAlgorithm {
    /// The next-item model on the whole session so far.
    Personal,
    /// The next-item model on the last product only.
    Similar,
    /// The most viewed products.
    Popular,
}

impl EvalAlgorithm {
    fn engine(self) -> SessionAlgorithm {
        match self {
            EvalAlgorithm::Personal => SessionAlgorithm::Personal,
            EvalAlgorithm::Similar => SessionAlgorithm::Similar,
            EvalAlgorithm::Popular => SessionAlgorithm::Popular,
        }
    }
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    let EvalCommand::Sessions {
        train,
        test,
        algorithm,
        k,
        no_tune,
    } = command;
    let started = Instant::now();
    let sessions = read_sessions(open(&train)?).with_context(|| format!("{}", train.display()))?;
    let cases = read_cases(open(&test)?).with_context(|| format!("{}", test.display()))?;
    anyhow::ensure!(!sessions.is_empty(), "{}: no sessions", train.display());
    let algorithm = algorithm.engine();
    let mut recommender = Recommender::default();
    let mut tuning = Value::Null;
    if !no_tune && algorithm != SessionAlgorithm::Popular {
        let (settings, report) = tune_next_item(&sessions, k);
        recommender.next_item = settings;
        tuning = serde_json::to_value(report)?;
    }
    let trained = Instant::now();
    let now = train_on(&mut recommender, &sessions);
    let train_seconds = trained.elapsed().as_secs_f64();
    let report = score_algorithm(&recommender, algorithm, &cases, now, k);
    let streaming = (algorithm == SessionAlgorithm::Personal)
        .then(|| stream_cases(&mut recommender, &cases, now, k));
    let mut answer = json!({
        "algorithm": algorithm.name(),
        "k": k,
        "train_sessions": sessions.len(),
        "test_cases": report.test_cases,
    });
    add_metrics(&mut answer, &report, k);
    if let Some(streaming) = streaming {
        answer["streaming"] = json!({
            format!("HR@{k}"): round(streaming.hit_rate()),
            format!("MRR@{k}"): round(streaming.mrr()),
            format!("NDCG@{k}"): round(streaming.ndcg()),
        });
    }
    answer["settings"] = serde_json::to_value(&recommender.next_item)?;
    answer["tuning"] = tuning;
    answer["train_seconds"] = json!(round(train_seconds));
    answer["seconds"] = json!(round(started.elapsed().as_secs_f64()));
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn add_metrics(answer: &mut Value, report: &SessionReport, k: usize) {
    answer[format!("HR@{k}")] = json!(round(report.hit_rate));
    answer[format!("MRR@{k}")] = json!(round(report.mrr));
    answer[format!("NDCG@{k}")] = json!(round(report.ndcg));
    answer["item_coverage"] = json!(round(report.item_coverage));
    answer["latency_us"] = json!({
        "p50": round(report.latency_us_p50),
        "p99": round(report.latency_us_p99),
    });
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(BufReader::new(file))
}
