//! `spoor load online-retail` on a slice of the real data set: every customer's order
//! count and revenue, as the state reports them, equal the figures computed here from the
//! CSV itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::{Server, run_ok, shared_dir, spoor};
use rust_decimal::Decimal;
use serde_json::Value;

/// Data lines of the slice: the shop's first few weeks.
const SLICE_LINES: usize = 12_000;

/// Per customer: the invoices and the revenue the CSV says, by the loader's documented
/// rules (cancellations and lines with no quantity or a negative price left out).
fn expected(csv_text: &str) -> BTreeMap<String, (BTreeSet<String>, Decimal)> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let mut per_customer: BTreeMap<String, (BTreeSet<String>, Decimal)> = BTreeMap::new();
    for row in reader.records() {
        let row = row.unwrap();
        let (invoice, quantity, price, customer) = (&row[0], &row[3], &row[5], &row[6]);
        let quantity: i64 = quantity.parse().unwrap();
        let price: Decimal = price.parse().unwrap();
        if customer.is_empty() || invoice.starts_with('C') || quantity <= 0 || price < Decimal::ZERO
        {
            continue;
        }
        let customer = customer.trim_end_matches(".0").to_string();
        let entry = per_customer.entry(customer).or_default();
        entry.0.insert(invoice.to_string());
        entry.1 += price * Decimal::from(quantity);
    }
    per_customer
}

/// `GET path`, which must answer 200.
async fn get_ok(server: &Server, path: &str) -> Value {
    let (status, answer) = common::get(server, path).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

#[tokio::test]
#[ignore = "needs ../shared/data beside the repository (CI runs it with --include-ignored)"]
async fn loaded_orders_and_revenue_per_customer_match_the_csv() {
    let source = shared_dir().join("data/online-retail/online_retail.csv.gz");
    let file = std::fs::File::open(&source)
        .unwrap_or_else(|e| panic!("{}: {e}; this test needs ../shared/data", source.display()));
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let slice: Vec<String> = reader
        .lines()
        .take(SLICE_LINES + 1)
        .map(Result::unwrap)
        .collect();
    let csv_text = slice.join("\n") + "\n";

    let dir = tempfile::tempdir().unwrap();
    let slice_path = dir.path().join("slice.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&slice_path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(csv_text.as_bytes()).unwrap();
    gz.finish().unwrap();

    let server = Server::start(&dir.path().join("data"), &["RETAIL"]);
    let output = run_ok(
        spoor()
            .args(["load", "online-retail"])
            .arg(&slice_path)
            .args(["--url", &server.base, "--site", "RETAIL"]),
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert!(summary["cancellationsSkipped"].as_u64().unwrap() > 0);

    // Wait for the state to catch up with the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let site = get_ok(&server, "/api/v1/sites/RETAIL").await;
        if site["statePosition"] == site["logEnd"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the state did not catch up: {site}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let expected = expected(&csv_text);
    assert!(
        expected.len() > 200,
        "the slice should hold hundreds of customers"
    );
    for (customer, (invoices, revenue)) in &expected {
        let contact = get_ok(
            &server,
            &format!("/api/v1/sites/RETAIL/contacts?externalCustomerId={customer}"),
        )
        .await;
        let orders = contact["orders"].as_object().unwrap();
        let numbers: BTreeSet<String> = orders.keys().cloned().collect();
        assert_eq!(&numbers, invoices, "customer {customer}'s orders");
        let total: Decimal = orders
            .values()
            .map(|o| o["total"].as_str().unwrap().parse::<Decimal>().unwrap())
            .sum();
        assert_eq!(total, *revenue, "customer {customer}'s revenue");
    }
}
