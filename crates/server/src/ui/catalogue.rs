//! Catalogue and searches: a product's price and stock over time and the lists a page
//! of it would show; the searches asked most, and those that found nothing (what the
//! shop is missing).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use spoor_protocol::dates::{DAY_MS, format_date, format_datetime};

use super::blocks::{ask, products_list};
use super::chart::{self, Series};
use super::pages::{self, number};
use super::session::{Session, Signed};
use super::{Section, unseen_site};
use crate::app::{Shared, now_ms};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::{self as api, AfterQuery};

/// Searches listed in each table.
const SEARCHES_SHOWN: usize = 20;
/// A search is shown once asked this often: one typed once may be someone's name.
const SEARCHES_AT_LEAST: u64 = 2;
/// Price changes, and stock changes, listed: the latest.
const CHANGES_SHOWN: usize = 12;
/// Products in each list of a product.
const LIST_SIZE: &str = "8";

#[derive(Deserialize, Default)]
pub struct ProductQuery {
    product: Option<String>,
}

/// `GET /ui/sites/{siteId}/catalogue?product=`
pub async fn page(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ProductQuery>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let key = query
        .product
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let product = match key {
        Some(key) => Some(product_section(&state, peer, &session, &site_id, key).await),
        None => None,
    };
    let body = html! {
        form.lookup method="get" {
            label for="product" { "Product key" }
            input #product name="product" value=[key] required;
            button type="submit" { "Find" }
        }
        @if let Some(product) = product { (product) }
        (searches(&state, &site_id))
    };
    pages::site_page(
        &session,
        &site_id,
        Section::Catalogue,
        "Catalogue & searches",
        body,
    )
    .into_response()
}

async fn product_section(
    state: &Shared,
    peer: SocketAddr,
    session: &Session,
    site_id: &str,
    key: &str,
) -> Markup {
    let found = api::product(
        State(state.clone()),
        session.api_headers(),
        ApiPath((site_id.to_string(), key.to_string())),
        ApiQuery(AfterQuery { after: None }),
    )
    .await;
    let product = match found {
        Ok(product) => product.0,
        Err(error) => return html! { p #no-product .field-error role="alert" { (error.message) } },
    };
    let list = |algorithm: &str| {
        vec![
            ("siteId".to_string(), site_id.to_string()),
            ("algorithm".to_string(), algorithm.to_string()),
            ("productKey".to_string(), key.to_string()),
            ("limit".to_string(), LIST_SIZE.to_string()),
        ]
    };
    let similar = ask(state, peer, session, list("similar")).await;
    let together = ask(state, peer, session, list("bought-together")).await;
    let shown = |id: &str, answer: Result<Vec<Value>, String>| match answer {
        Ok(products) => products_list(id, &products),
        Err(message) => html! { p.field-error { (message) } },
    };
    let weeks = {
        let engine = state.live.read();
        (engine.site(site_id))
            .map(|site| site.product_weeks(key, now_ms()))
            .unwrap_or_default()
    };
    let prices = product["priceHistory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stock = product["stockHistory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    html! {
        section #product-view aria-labelledby="product-h" {
            h2 #product-h { (product["name"].as_str().unwrap_or(key)) " " code { (key) } }
            dl.pairs {
                dt { "Price" } dd #price { (plain(&product["price"]["value"]["amount"]).or_dash()) " " (plain(&product["price"]["value"]["currency"])) }
                dt { "In stock" } dd { (match product["inStock"]["value"].as_bool() { Some(true) => "yes", Some(false) => "no", None => "not said" }) }
                dt { "Categories" } dd { (plain(&product["categoryPath"]).or_dash()) }
                dt { "First seen" } dd { (product["firstSeen"].as_i64().map(format_datetime).unwrap_or_default()) }
            }
            @if !prices.is_empty() {
                @let (labels, values) = changes_until_now(&prices, number_of);
                (chart::lines("price-history", "Price at each change, and now", &labels, &[Series { name: "price", values }]))
            }
            @if !weeks.is_empty() {
                @let labels: Vec<String> = weeks.iter().map(|(day, _, _)| format_date(*day)[5..].to_string()).collect();
                (chart::lines("product-weeks", "Views and purchases per week (by the week's Monday, UTC)", &labels, &[
                    Series { name: "views", values: weeks.iter().map(|w| f64::from(w.1)).collect() },
                    Series { name: "purchases", values: weeks.iter().map(|w| f64::from(w.2)).collect() },
                ]))
                table.visually-hidden #product-weeks-table {
                    caption { "Views and purchases per week" }
                    thead { tr { th scope="col" { "Week of" } th.num scope="col" { "Views" } th.num scope="col" { "Purchases" } } }
                    tbody { @for (day, views, bought) in &weeks { tr { td { (format_date(*day)) } td.num.views { (views) } td.num.purchases { (bought) } } } }
                }
            }
            @if !stock.is_empty() {
                @let (labels, values) = changes_until_now(&stock, |v| f64::from(u8::from(v.as_bool() == Some(true))));
                (chart::lines_up_to("stock-history", "In stock (1) or not (0) at each change, and now", &labels, &[Series { name: "in stock", values }], 1.0))
            }
            h3 { "Latest price and stock changes" }
            ol.timeline #changes {
                @for change in prices.iter().rev().take(CHANGES_SHOWN) {
                    li { time { (change["at"].as_i64().map(format_datetime).unwrap_or_default()) } " price " (plain(&change["value"])) }
                }
                @for change in stock.iter().rev().take(CHANGES_SHOWN) {
                    li { time { (change["at"].as_i64().map(format_datetime).unwrap_or_default()) } " "
                        (if change["value"].as_bool() == Some(true) { "back in stock" } else { "out of stock" }) }
                }
            }
            div.columns {
                div { h3 { "Similar" } (shown("similar", similar)) }
                div { h3 { "Bought together" } (shown("bought-together", together)) }
            }
        }
    }
}

/// A history's points (each `{"at", "value"}`) as chart labels and values, with the
/// latest value again at the end, labelled "now": a value that has held since its
/// last change is drawn as a line up to today.
fn changes_until_now(history: &[Value], value: impl Fn(&Value) -> f64) -> (Vec<String>, Vec<f64>) {
    let day = |point: &Value| {
        (point["at"].as_i64())
            .map(|at| format_date(at.div_euclid(DAY_MS))[5..].to_string())
            .unwrap_or_default()
    };
    let mut labels: Vec<String> = history.iter().map(day).collect();
    let mut values: Vec<f64> = history.iter().map(|p| value(&p["value"])).collect();
    if let Some(last) = values.last().copied() {
        labels.push("now".to_string());
        values.push(last);
    }
    (labels, values)
}

trait OrDash {
    fn or_dash(self) -> String;
}

impl OrDash for String {
    fn or_dash(self) -> String {
        if self.is_empty() {
            "–".to_string()
        } else {
            self
        }
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(" › "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number_of(value: &Value) -> f64 {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

fn searches(state: &Shared, site_id: &str) -> Markup {
    let engine = state.live.read();
    let top = engine
        .site(site_id)
        .map(|site| (site.activity()).top_searches(now_ms(), SEARCHES_SHOWN, SEARCHES_AT_LEAST));
    drop(engine);
    let (asked, missing) = top.map_or_else(Default::default, |top| (top.asked, top.not_found));
    let table = |id: &str, caption: &str, rows: &[(String, u64)]| {
        html! {
            table id=(id) {
                caption { (caption) }
                thead { tr { th scope="col" { "Search" } th.num scope="col" { "Times" } } }
                tbody {
                    @for (query, times) in rows { tr { td { (query) } td.num { (number(*times)) } } }
                    @if rows.is_empty() { tr { td colspan="2" { "None yet." } } }
                }
            }
        }
    };
    html! {
        section aria-labelledby="searches-h" {
            h2 #searches-h { "Searches" }
            p.hint { "The last four weeks (this one and the three before); queries asked at least "
                (SEARCHES_AT_LEAST) " times, lower-cased, spaces folded. Queries that look like an email or a phone number are never counted." }
            div.columns {
                (table("top-searches", "Asked most", &asked))
                (table("missing-searches", "Found nothing (what the shop is missing)", &missing))
            }
        }
    }
}
