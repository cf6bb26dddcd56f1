//! `spoor load online-retail`: a real shop's year of invoices (UCI Online Retail), turned
//! into the events its site would have sent, and posted through the public tracker API.
//!
//! - The catalogue: ProductUpdate events, each product sent on the day it first sold, with
//!   its description and price then (GBP).
//! - Customers: a CustomerData event per customer (`externalCustomerId`, country).
//! - Each invoice: the cart as it stood a minute before (StatusCart, GUID `cart-<invoice>`),
//!   then the purchase (PurchasedItems, OrderNumber = invoice number, same GUID). Guest
//!   invoices (no CustomerID) get a cookie of their own, `guest-<invoice>`.
//! - Cancellations (invoice numbers starting with C) are not sent: the tracker API has no
//!   cancellation event. Lines with a quantity of 0 or less or a negative price (stock
//!   adjustments, bad-debt entries) are skipped. The summary counts both.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// Events per batch request, at the API's limit.
const BATCH: usize = 500;
/// Batch requests in flight at once.
const IN_FLIGHT: usize = 4;
/// Products per ProductUpdate event.
pub(crate) const PRODUCTS_PER_UPDATE: usize = 100;
const CART_LEAD_MS: i64 = 60_000;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSummary {
    pub invoices: u64,
    pub cancellations_skipped: u64,
    pub lines_skipped: u64,
    pub customers: u64,
    pub products: u64,
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// The first few rejections, as the server worded them.
    pub rejections: Vec<String>,
}

pub(crate) struct Line {
    pub(crate) invoice: String,
    pub(crate) stock_code: String,
    pub(crate) description: String,
    pub(crate) quantity: i64,
    pub(crate) at: i64,
    pub(crate) unit_price: String,
    pub(crate) customer: Option<String>,
    pub(crate) country: String,
}

/// Reads the CSV (gzip or plain), in file order.
pub(crate) fn read_lines(path: &Path) -> anyhow::Result<Vec<Line>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut csv = csv::Reader::from_reader(reader);
    let headers = csv.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the CSV has no {name} column"))
    };
    let (invoice, code, description, quantity, date, price, customer, country) = (
        column("InvoiceNo")?,
        column("StockCode")?,
        column("Description")?,
        column("Quantity")?,
        column("InvoiceDate")?,
        column("UnitPrice")?,
        column("CustomerID")?,
        column("Country")?,
    );
    let mut lines = Vec::new();
    for (number, row) in csv.records().enumerate() {
        let row = row.with_context(|| format!("CSV line {}", number + 2))?;
        let field = |i: usize| row.get(i).unwrap_or("").trim();
        let customer_id = field(customer);
        lines.push(Line {
            invoice: field(invoice).to_string(),
            stock_code: field(code).to_string(),
            description: field(description).to_string(),
            quantity: field(quantity)
                .parse()
                .with_context(|| format!("CSV line {}: Quantity", number + 2))?,
            at: parse_time(field(date))
                .with_context(|| format!("CSV line {}: InvoiceDate", number + 2))?,
            unit_price: field(price).to_string(),
            customer: (!customer_id.is_empty())
                .then(|| customer_id.trim_end_matches(".0").to_string()),
            country: field(country).to_string(),
        });
    }
    Ok(lines)
}

/// `2010-12-01 08:26:00` (UTC) in milliseconds since the epoch.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    let (date, time) = text
        .split_once(' ')
        .context("expected `YYYY-MM-DD HH:MM[:SS]`")?;
    let numbers = |s: &str, sep: char| -> anyhow::Result<Vec<i64>> {
        s.split(sep).map(|n| Ok(n.parse::<i64>()?)).collect()
    };
    let (d, t) = (numbers(date, '-')?, numbers(time, ':')?);
    if d.len() != 3 || t.len() < 2 {
        bail!("expected `YYYY-MM-DD HH:MM[:SS]`, got {text:?}");
    }
    let seconds = t.get(2).copied().unwrap_or(0);
    let days = spoor_protocol::dates::days_from_civil(d[0], d[1], d[2]);
    Ok(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + seconds * 1000)
}

/// Whether an invoice line is a sale: not a cancellation (invoice numbers starting with
/// C), a stock adjustment (quantity 0 or less) or a bad-debt entry (negative price).
pub(crate) fn is_sale(line: &Line) -> bool {
    !line.invoice.starts_with('C') && line.quantity > 0 && !line.unit_price.starts_with('-')
}

/// Whether a stock code is merchandise: the shop's products have codes that begin with a
/// digit, while postage (POST, DOT), carriage (C2), manual entries (M), bank charges,
/// fees, samples and gift vouchers have others.
pub(crate) fn is_merchandise(stock_code: &str) -> bool {
    stock_code.starts_with(|c: char| c.is_ascii_digit())
}

/// How the invoice lines become events.
pub(crate) struct Shaping<'a> {
    pub(crate) site: &'a str,
    /// Added to every time (the demo moves the year of orders to end today).
    pub(crate) shift_ms: i64,
    /// Fields added to each product of the catalogue, from its stock code and description
    /// (the demo's page, picture and category).
    pub(crate) product_fields: &'a dyn Fn(&str, &str) -> serde_json::Map<String, Value>,
    /// Orders placed from this time on (the data set's clock) are preceded by a view of
    /// each of their products (the first [`VIEWS_PER_ORDER`]), as the shop's product
    /// pages would have sent them: the data set has orders only, and the algorithms
    /// that learn from views (popular, similar) need some.
    pub(crate) views_from_ms: Option<i64>,
}

/// Products viewed before an order's cart, at most, where views are made up.
pub(crate) const VIEWS_PER_ORDER: usize = 10;
/// Between two of those views.
const VIEW_GAP_MS: i64 = 30_000;

impl Shaping<'_> {
    /// The product as its site would list it; postage, fees and the like are marked
    /// `recommendable: false`, so that no block shows them while orders keep them.
    fn product(&self, line: &Line) -> Value {
        let mut fields = (self.product_fields)(&line.stock_code, &line.description);
        if !is_merchandise(&line.stock_code) {
            fields.insert("recommendable".into(), Value::Bool(false));
        }
        product_update(
            &line.stock_code,
            &line.description,
            &line.unit_price,
            fields,
        )
    }
}

/// A product of the shop as a `ProductUpdate` lists it, in pounds and in stock, with
/// `fields` besides.
pub(crate) fn product_update(
    key: &str,
    name: &str,
    unit_price: &str,
    fields: serde_json::Map<String, Value>,
) -> Value {
    let mut product = json!({"product_id": key, "name": name, "unit_price": unit_price,
                             "price_currency_code": "GBP", "isInStock": 1});
    if let Value::Object(product) = &mut product {
        product.extend(fields);
    }
    product
}

/// The events a site would have sent for these invoice lines, in time order.
pub(crate) fn events(lines: &[Line], shaping: &Shaping, summary: &mut LoadSummary) -> Vec<Value> {
    let site = shaping.site;
    let general = |event: &str, at: i64| json!({"eventName": event, "siteId": site, "datetime": at + shaping.shift_ms});
    let mut timed: Vec<(i64, Value)> = Vec::new();

    // The catalogue: each product on the day it first sold.
    let mut first_sale: HashMap<&str, &Line> = HashMap::new();
    for line in lines.iter().filter(|l| l.quantity > 0) {
        first_sale.entry(&line.stock_code).or_insert(line);
    }
    let mut by_day: BTreeMap<i64, Vec<&Line>> = BTreeMap::new();
    for line in first_sale.values() {
        by_day.entry(line.at / 86_400_000).or_default().push(line);
    }
    summary.products = first_sale.len() as u64;
    for firsts in by_day.values_mut() {
        firsts.sort_by_key(|l| (l.at, &l.stock_code));
        for chunk in firsts.chunks(PRODUCTS_PER_UPDATE) {
            let products: Vec<Value> = chunk.iter().map(|l| shaping.product(l)).collect();
            let at = chunk[0].at;
            timed.push((
                at,
                json!({"GeneralInfo": general("ProductUpdate", at), "ProductUpdate": products}),
            ));
        }
    }

    // Customers, when first seen.
    let mut customers: BTreeMap<&str, &Line> = BTreeMap::new();
    for line in lines {
        if let Some(customer) = &line.customer {
            customers.entry(customer).or_insert(line);
        }
    }
    summary.customers = customers.len() as u64;
    for (customer, line) in &customers {
        let mut info = general("CustomerData", line.at);
        info["externalCustomerId"] = json!(customer);
        info["user_country"] = json!(line.country);
        timed.push((line.at, json!({"GeneralInfo": info})));
    }

    // Invoices: the cart, then the purchase.
    let mut invoices: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for line in lines {
        if line.invoice.starts_with('C') {
            summary.cancellations_skipped += 1;
        } else if !is_sale(line) {
            summary.lines_skipped += 1;
        } else {
            invoices.entry(&line.invoice).or_default().push(line);
        }
    }
    summary.invoices = invoices.len() as u64;
    for (invoice, items) in &invoices {
        let first = items[0];
        let identify = |event: &str, at: i64| {
            let mut info = general(event, at);
            match &first.customer {
                Some(customer) => info["externalCustomerId"] = json!(customer),
                None => info["cookies"] = json!({"sc": format!("guest-{invoice}")}),
            }
            info
        };
        let guid = format!("cart-{invoice}");
        let cart: Vec<Value> = items
            .iter()
            .map(|l| {
                json!({"productKey": l.stock_code, "price": l.unit_price, "quantity": l.quantity,
                       "price_currency_code": "GBP"})
            })
            .collect();
        let bought: Vec<Value> = items
            .iter()
            .map(|l| json!({"product_id": l.stock_code, "unit_price": format!("{} GBP", l.unit_price), "quantity": l.quantity}))
            .collect();
        let cart_at = first.at - CART_LEAD_MS;
        if shaping.views_from_ms.is_some_and(|from| first.at >= from) {
            let viewed = items.iter().take(VIEWS_PER_ORDER);
            let count = viewed.len() as i64;
            for (n, line) in viewed.enumerate() {
                let at = cart_at - (count - n as i64) * VIEW_GAP_MS;
                timed.push((
                    at,
                    json!({"GeneralInfo": identify("ProductPage", at),
                           "ProductPage": {"productKey": line.stock_code, "price": line.unit_price}}),
                ));
            }
        }
        timed.push((
            cart_at,
            json!({"GeneralInfo": identify("StatusCart", cart_at),
                                    "StatusCart": {"GUID": guid, "Products": cart}}),
        ));
        timed.push((first.at, json!({"GeneralInfo": identify("PurchasedItems", first.at),
                                     "PurchasedItems": {"OrderNumber": invoice, "GUID": guid, "Products": bought}})));
    }
    timed.sort_by_key(|(at, _)| *at);
    summary.events = timed.len() as u64;
    timed.into_iter().map(|(_, event)| event).collect()
}

pub async fn online_retail(file: &Path, url: &str, site: &str) -> anyhow::Result<()> {
    let mut summary = LoadSummary::default();
    let lines = read_lines(file)?;
    let shaping = Shaping {
        site,
        shift_ms: 0,
        product_fields: &|_, _| serde_json::Map::new(),
        views_from_ms: None,
    };
    let events = events(&lines, &shaping, &mut summary);
    drop(lines);
    post_events(&events, url, &mut summary).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary.rejected > 0 {
        bail!("{} events were rejected", summary.rejected);
    }
    Ok(())
}

/// Posts `events` to the server's batch endpoint, in order (a few batches in flight),
/// with a progress bar; counts the answers in `summary`.
pub(crate) async fn post_events(
    events: &[Value],
    url: &str,
    summary: &mut LoadSummary,
) -> anyhow::Result<()> {
    let endpoint = format!("{}/api/v2/batch", url.trim_end_matches('/'));
    let client = spoor_outgoing::client_builder().build()?;
    let progress = indicatif::ProgressBar::new(events.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} loading {bar:40} {pos}/{len} events ({per_sec}, {eta} left)",
        )
        .expect("a valid progress template"),
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for chunk in events.chunks(BATCH) {
        let body = serde_json::to_vec(chunk).expect("events serialise");
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        let (client, endpoint, progress) = (client.clone(), endpoint.clone(), progress.clone());
        let count = chunk.len() as u64;
        tasks.push(tokio::spawn(async move {
            let answer = post_batch(&client, &endpoint, body).await;
            progress.inc(count);
            drop(permit);
            answer
        }));
    }
    for task in tasks {
        let answer = task.await??;
        let count = |key: &str| answer[key].as_u64().unwrap_or(0);
        summary.accepted += count("accepted");
        summary.duplicates += count("duplicates");
        summary.rejected += count("rejected");
        for result in answer["results"].as_array().into_iter().flatten() {
            if result["status"] == "rejected" && summary.rejections.len() < 10 {
                summary
                    .rejections
                    .push(result["message"].as_str().unwrap_or("").to_string());
            }
        }
    }
    progress.finish_and_clear();
    Ok(())
}

async fn post_batch(
    client: &reqwest::Client,
    endpoint: &str,
    body: Vec<u8>,
) -> anyhow::Result<Value> {
    let response = client
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    crate::http::json_answer(response).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_dates_become_utc_milliseconds() {
        assert_eq!(parse_time("1970-01-01 00:00:00").unwrap(), 0);
        assert_eq!(
            parse_time("2010-12-01 08:26:00").unwrap(),
            1_291_191_960_000
        );
        assert_eq!(parse_time("2011-12-09 12:50").unwrap(), 1_323_435_000_000);
        assert!(parse_time("12/1/2010 8:26").is_err());
    }

    #[test]
    fn postage_and_fees_are_listed_but_never_recommended() {
        let line = |code: &str, name: &str| Line {
            invoice: "536365".into(),
            stock_code: code.into(),
            description: name.into(),
            quantity: 1,
            at: 0,
            unit_price: "2.55".into(),
            customer: Some("17850".into()),
            country: "United Kingdom".into(),
        };
        let lines = [
            line("85123A", "WHITE HANGING HEART"),
            line("POST", "POSTAGE"),
        ];
        let no_fields = |_: &str, _: &str| serde_json::Map::new();
        let shaping = Shaping {
            site: "S",
            shift_ms: 0,
            product_fields: &no_fields,
            views_from_ms: None,
        };
        let events = events(&lines, &shaping, &mut LoadSummary::default());
        let update = events.iter().find(|e| e.get("ProductUpdate").is_some());
        let listed = &update.unwrap()["ProductUpdate"];
        let marked = |key: &str| {
            let product = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["product_id"] == key);
            product.unwrap().get("recommendable").cloned()
        };
        assert_eq!(marked("POST"), Some(Value::Bool(false)));
        assert_eq!(marked("85123A"), None);
        assert!(is_merchandise("85123A") && !is_merchandise("BANK CHARGES"));
    }
}
