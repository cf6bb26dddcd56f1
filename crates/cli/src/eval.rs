//! `spoor eval`: offline evaluation of the recommenders through the engine's own code.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::{Value, json};
use spoor_engine::recommend::{
    Algorithm, BasketGoal, BasketPart, BasketSettings, NextItemParams, Recommender, TuningGoal,
};
use spoor_engine::site::SiteState;
use spoor_eval::baskets::{
    TOGETHER_VOICES, read_baskets, score_leave_one_out, score_next_basket, split_last, train_site,
    tune_baskets,
};
use spoor_eval::{
    Case, SessionAlgorithm, SessionReport, read_cases, read_sessions, score_algorithm,
    score_components, stream_cases, train_on, tune_next_item,
};

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
        /// What the tuning maximises on the held-out sessions.
        #[arg(long, value_enum, default_value = "both")]
        goal: SessionGoal,
    },

    /// Next-basket quality on orders: reads a CSV with the header
    /// `user,basket,item,timestamp` (unix seconds), keeps each user's last basket for
    /// testing (users with one basket are not tested) and applies every other basket as
    /// an order. Prints one JSON object: recall@k and NDCG@k of `personal` for the next
    /// basket, leave-one-out HR@k and MRR@k of `bought-together` (each item of a test
    /// basket of two or more in turn the target, the rest of the basket the page), each
    /// beside `bestsellers` as the popularity baseline. The repeat-purchase settings are
    /// first tuned on the training baskets (each user's last training basket held out).
    Baskets {
        /// The CSV, e.g. made by `spoor eval online-retail-baskets`.
        #[arg(long)]
        transactions: PathBuf,
        /// Products asked for per question.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Use the built-in settings instead of tuning on held-out training baskets.
        #[arg(long)]
        no_tune: bool,
        /// What the next-basket tuning maximises on the held-out baskets.
        #[arg(long, value_enum, default_value = "recall")]
        goal: BasketGoalArg,
    },
    /// Backtests a recommendation block on a data directory's log (safe beside a running
    /// server): what each of its variants would have recommended at each product view,
    /// cart and purchase of the last days, scored against what the visitor did next
    /// (HR, MRR, coverage, share of fallback answers). Prints one JSON object, as
    /// `POST /admin/v1/sites/{siteId}/blocks/{blockId}/backtest` answers.
    Backtest {
        #[command(flatten)]
        data: crate::data_dir::DataDir,
        #[command(flatten)]
        log: crate::data_dir::LogChoice,
        #[arg(long)]
        site: String,
        #[arg(long)]
        block: String,
        /// Days scored, ending today (UTC).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: u32,
    },
    /// Writes the UCI Online Retail invoices (../shared/data/online-retail/
    /// online_retail.csv.gz) as the CSV `spoor eval baskets` reads: user = CustomerID,
    /// basket = InvoiceNo, item = StockCode. Invoices without a customer, cancellations and
    /// lines of quantity 0 or less or negative price are left out.
    OnlineRetailBaskets {
        /// online_retail.csv.gz (or the unpacked CSV)
        file: PathBuf,
        /// Where to write the CSV (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
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

#[derive(Clone, Copy, ValueEnum)]
pub enum BasketGoalArg {
    /// recall@k of the next basket.
    Recall,
    /// NDCG@k of the next basket.
    Ndcg,
}

impl BasketGoalArg {
    fn engine(self) -> BasketGoal {
        match self {
            BasketGoalArg::Recall => BasketGoal::Recall,
            BasketGoalArg::Ndcg => BasketGoal::Ndcg,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SessionGoal {
    /// HR@k: how often the next product is among the answers.
    Hr,
    /// MRR@k: how near the top it is.
    Mrr,
    /// HR@k + MRR@k.
    Both,
}

impl SessionGoal {
    fn engine(self) -> TuningGoal {
        match self {
            SessionGoal::Hr => TuningGoal::HitRate,
            SessionGoal::Mrr => TuningGoal::Mrr,
            SessionGoal::Both => TuningGoal::Both,
        }
    }
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
    match command {
        EvalCommand::Sessions {
            train,
            test,
            algorithm,
            k,
            no_tune,
            goal,
        } => sessions(&train, &test, algorithm, k, no_tune, goal.engine()),
        EvalCommand::Baskets {
            transactions,
            k,
            no_tune,
            goal,
        } => baskets(&transactions, k, no_tune, goal),
        EvalCommand::Backtest {
            data,
            log,
            site,
            block,
            days,
        } => backtest(&data, &log, &site, &block, days),
        EvalCommand::OnlineRetailBaskets { file, out } => {
            online_retail_baskets(&file, out.as_deref())
        }
    }
}

fn backtest(
    data: &crate::data_dir::DataDir,
    log: &crate::data_dir::LogChoice,
    site: &str,
    block_id: &str,
    days: u32,
) -> anyhow::Result<()> {
    let blocks = spoor_settings::BlockRegistry::open(&data.path)
        .with_context(|| format!("read the blocks in {}", data.path.display()))?;
    let block = blocks
        .get(site, block_id)
        .with_context(|| format!("site {site} has no block {block_id:?}"))?;
    let variants = spoor_server::blocks::backtest_variants(block_id, &block);
    let spec = log.existing_spec(data)?;
    let log = spoor_log::open_read_only(&spec).with_context(|| format!("open {spec}"))?;
    let started = Instant::now();
    let from_day =
        spoor_server::now_ms().div_euclid(spoor_protocol::dates::DAY_MS) - i64::from(days) + 1;
    let keys = spoor_log::open_keyring(&spec).context("open the key table")?;
    let mut records = spoor_live::records::records(&*log, keys);
    let from_ms = from_day * spoor_protocol::dates::DAY_MS;
    let tuning = spoor_settings::TuningRegistry::open(&data.path)
        .with_context(|| format!("read the tuning in {}", data.path.display()))?;
    let tuned = tuning.get(site);
    let next_item = tuned.as_ref().map(|t| &t.next_item);
    let baskets = tuned.as_ref().and_then(|t| t.baskets.as_ref());
    let report =
        spoor_eval::backtest::backtest(site, &mut records, from_ms, &variants, next_item, baskets);
    if let Some(error) = records.failed {
        return Err(error).context("read the event log");
    }
    let mut answer = serde_json::to_value(&report)?;
    answer["siteId"] = json!(site);
    answer["blockId"] = json!(block_id);
    answer["days"] = json!(days);
    answer["from"] = json!(spoor_protocol::dates::format_date(from_day));
    answer["seconds"] = json!((started.elapsed().as_secs_f64() * 100.0).round() / 100.0);
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn sessions(
    train: &Path,
    test: &Path,
    algorithm: EvalAlgorithm,
    k: usize,
    no_tune: bool,
    goal: TuningGoal,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let sessions = read_sessions(open(train)?).with_context(|| format!("{}", train.display()))?;
    let cases = read_cases(open(test)?).with_context(|| format!("{}", test.display()))?;
    anyhow::ensure!(!sessions.is_empty(), "{}: no sessions", train.display());
    let algorithm = algorithm.engine();
    let mut recommender = Recommender::default();
    let mut tuning = Value::Null;
    if !no_tune && algorithm != SessionAlgorithm::Popular {
        let (settings, report) = tune_next_item(&sessions, k, goal);
        recommender.next_item = settings;
        tuning = serde_json::to_value(report)?;
    }
    let trained = Instant::now();
    let now = train_on(&mut recommender, &sessions);
    if recommender.next_item.embedding_weight > 0.0 {
        recommender.learn_embeddings(spoor_engine::recommend::embeddings::all_threads());
    }
    let train_seconds = trained.elapsed().as_secs_f64();
    let report = score_algorithm(&recommender, algorithm, &cases, now, k);
    let components =
        (algorithm == SessionAlgorithm::Personal).then(|| components(&recommender, &cases, now, k));
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
    if let Some(components) = components {
        answer["components"] = components;
    }
    answer["settings"] = rounded(serde_json::to_value(&recommender.next_item)?);
    answer["tuning"] = rounded(tuning);
    answer["train_seconds"] = json!(round(train_seconds));
    answer["seconds"] = json!(round(started.elapsed().as_secs_f64()));
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Each simple method alone (a voice of the built-in settings) on the same test cases,
/// static: what the result is set beside.
fn components(recommender: &Recommender, cases: &[Case], now: i64, k: usize) -> Value {
    let defaults = NextItemParams::default();
    let mut figures = serde_json::Map::new();
    for (voice, report) in score_components(recommender, &defaults, cases, now, k) {
        figures.insert(
            voice.name().to_string(),
            json!({
                format!("HR@{k}"): round(report.hit_rate),
                format!("MRR@{k}"): round(report.mrr),
                format!("NDCG@{k}"): round(report.ndcg),
            }),
        );
    }
    Value::Object(figures)
}

fn baskets(
    transactions: &Path,
    k: usize,
    no_tune: bool,
    goal: BasketGoalArg,
) -> anyhow::Result<()> {
    anyhow::ensure!(k > 0, "--k: expected at least 1");
    let started = Instant::now();
    let all =
        read_baskets(open(transactions)?).with_context(|| format!("{}", transactions.display()))?;
    let (train, test) = split_last(&all);
    anyhow::ensure!(
        !test.is_empty(),
        "{}: no user has two baskets, so none can be tested",
        transactions.display()
    );
    let mut tuning = Value::Null;
    let mut settings = BasketSettings::default();
    if !no_tune {
        let (chosen, report) = tune_baskets(&train, k, goal.engine());
        settings = chosen;
        tuning = rounded(serde_json::to_value(report)?);
    }
    let trained = Instant::now();
    let mut site = train_site(&train);
    let train_seconds = trained.elapsed().as_secs_f64();
    site.recommender_mut().use_baskets(&settings);
    let (repeat, together) = (settings.personal.clone(), settings.together());
    let next_basket = |site: &SiteState, algorithm| {
        let report = score_next_basket(site, algorithm, &test, k);
        json!({
            format!("recall@{k}"): round(report.recall),
            format!("NDCG@{k}"): round(report.ndcg),
            "latency_us": {"p50": round(report.latency_us_p50), "p99": round(report.latency_us_p99)},
        })
    };
    let leave_one_out = |site: &SiteState, algorithm| {
        let report = score_leave_one_out(site, algorithm, &test, k);
        json!({
            "cases": report.cases,
            format!("HR@{k}"): round(report.hit_rate),
            format!("MRR@{k}"): round(report.mrr),
            "latency_us": {"p50": round(report.latency_us_p50), "p99": round(report.latency_us_p99)},
        })
    };
    // Each simple method alone, measured in the same run on the same test baskets.
    let mut personal_parts = serde_json::Map::new();
    for part in BasketPart::ALL {
        site.recommender_mut().repeat = repeat.alone(part);
        personal_parts.insert(part.name().into(), next_basket(&site, Algorithm::Personal));
    }
    site.recommender_mut().repeat = repeat.clone();
    let mut together_parts = serde_json::Map::new();
    for (name, neighbours, cooccurrence) in TOGETHER_VOICES {
        site.recommender_mut().basket = NextItemParams {
            neighbour_weight: neighbours,
            cooccurrence_weight: cooccurrence,
            ..together.clone()
        };
        together_parts.insert(name.into(), leave_one_out(&site, Algorithm::BoughtTogether));
    }
    together_parts.insert(
        "popularity".into(),
        leave_one_out(&site, Algorithm::Bestsellers),
    );
    site.recommender_mut().basket = together.clone();
    let answer = json!({
        "k": k,
        "baskets": all.len(),
        "train_baskets": train.len(),
        "test_users": test.len(),
        "next_basket": {
            "personal": next_basket(&site, Algorithm::Personal),
            "components": personal_parts,
        },
        "bought_together": {
            "bought-together": leave_one_out(&site, Algorithm::BoughtTogether),
            "components": together_parts,
        },
        "settings": rounded(serde_json::to_value(&settings)?),
        "tuning": tuning,
        "train_seconds": round(train_seconds),
        "seconds": round(started.elapsed().as_secs_f64()),
    });
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn online_retail_baskets(file: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let lines = crate::load::read_lines(file)?;
    let mut writer: Box<dyn Write> = match out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    writeln!(writer, "user,basket,item,timestamp")?;
    let mut rows = 0u64;
    for line in lines.iter().filter(|l| crate::load::is_sale(l)) {
        let Some(customer) = &line.customer else {
            continue;
        };
        // Stock codes and invoice numbers hold no commas; a field that did would be cut.
        anyhow::ensure!(
            !line.stock_code.contains(',') && !line.invoice.contains(','),
            "a stock code or invoice number with a comma: {:?} / {:?}",
            line.stock_code,
            line.invoice
        );
        writeln!(
            writer,
            "{customer},{},{},{}",
            line.invoice,
            line.stock_code,
            line.at.div_euclid(1000)
        )?;
        rows += 1;
    }
    writer.flush()?;
    if let Some(path) = out {
        eprintln!("{rows} rows written to {}", path.display());
    }
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

/// Settings held as f32 print as 0.800000011920929: shown to four places instead.
fn rounded(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => json!(round(n.as_f64().unwrap_or_default())),
        Value::Object(fields) => fields.into_iter().map(|(k, v)| (k, rounded(v))).collect(),
        Value::Array(values) => values.into_iter().map(rounded).collect(),
        other => other,
    }
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(BufReader::new(file))
}
