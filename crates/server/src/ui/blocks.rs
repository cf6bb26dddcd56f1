//! Blocks: what each earns per variant over a chosen range, by day, the variants
//! compared; a block's definition edited with errors shown at their field; a preview of
//! what a page would get.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Form;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};
use spoor_engine::Identifier;

use super::chart::{self, Series};
use super::compare::{self, Rate};
use super::pages::{self, Page, csrf_field, number, percent};
use super::session::{Session, Signed};
use super::{Section, error_page, refused_change, unseen_site};
use crate::app::Shared;
use crate::blocks::{self as api, BlockAnswer, StatsAnswer, StatsQuery};
use crate::body::SettingsBody;
use crate::extract::{ApiPath, ApiQuery};
use crate::recommend;

/// Bytes read of a recommendations answer for the preview.
const PREVIEW_BYTES: usize = 1 << 20;

#[derive(Deserialize, Default)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    /// Set after a save, to say so.
    saved: Option<String>,
}

/// What to preview the block for: a product, a category, or a contact by one
/// identifier. Sent by POST: an email never goes into an address.
#[derive(Deserialize, Default)]
pub struct PreviewForm {
    #[serde(default)]
    csrf: String,
    product: Option<String>,
    category: Option<String>,
    by: Option<String>,
    who: Option<String>,
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

async fn stats(
    state: &Shared,
    session: &Session,
    site_id: &str,
    block_id: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<StatsAnswer, crate::error::ApiError> {
    let query = StatsQuery {
        from: from.map(String::from),
        to: to.map(String::from),
        after: None,
    };
    api::block_stats(
        State(state.clone()),
        session.api_headers(),
        ApiPath((site_id.to_string(), block_id.to_string())),
        ApiQuery(query),
    )
    .await
    .map(|answer| answer.0)
}

/// `GET /ui/sites/{siteId}/blocks`: every block with its last 30 days per variant.
pub async fn list(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let blocks = match api::list_blocks(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
    )
    .await
    {
        Ok(list) => list.0.blocks,
        Err(error) => return error_page(error),
    };
    let mut rows = Vec::new();
    for block in &blocks {
        if let Ok(answer) = stats(&state, &session, &site_id, &block.block_id, None, None).await {
            rows.push((block, answer));
        }
    }
    let body = html! {
        @if rows.is_empty() {
            p { "No block is defined yet. Define one with "
                code { "PUT /admin/v1/sites/" (site_id) "/blocks/ID" } "." }
        } @else {
            p.hint { "The last 30 days (UTC). Open a block for another range, its days, and its variants compared." }
            table #blocks {
                thead { tr {
                    th scope="col" { "Block" } th scope="col" { "Variant" }
                    th.num scope="col" { "Impressions" } th.num scope="col" { "Clicks" }
                    th.num scope="col" { "CTR" } th.num scope="col" { "Orders" } th.num scope="col" { "Revenue" }
                } }
                tbody {
                    @for (block, answer) in &rows {
                        @for (i, variant) in answer.variants.iter().enumerate() {
                            tr {
                                @if i == 0 {
                                    th scope="row" rowspan=(answer.variants.len()) {
                                        a href={ "/ui/sites/" (site_id) "/blocks/" (block.block_id) } { (block.block_id) }
                                        @if let Some(name) = &block.block.name { br; span.hint { (name) } }
                                    }
                                }
                                td { (variant_label(&variant.variant_id)) }
                                td.num { (number(variant.total.impressions)) }
                                td.num { (number(variant.total.clicks)) }
                                td.num { (percent(variant.total.ctr)) }
                                td.num { (number(variant.total.orders)) }
                                td.num { (variant.total.revenue) }
                            }
                        }
                    }
                }
            }
        }
    };
    pages::site_page(&session, &site_id, Section::Blocks, "Blocks", body).into_response()
}

fn variant_label(id: &str) -> &str {
    if id.is_empty() { "(one variant)" } else { id }
}

/// `GET /ui/sites/{siteId}/blocks/{blockId}?from=&to=`: the block's figures, its days,
/// its variants compared, its definition to edit, and a preview's form.
pub async fn page(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let form = match definition(&state, &session, &site_id, &block_id).await {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let asked = PreviewForm::default();
    block_page(
        &state,
        &session,
        &site_id,
        &block_id,
        &query,
        &form,
        None,
        (&asked, html! {}),
    )
    .await
    .into_response()
}

/// `POST /ui/sites/{siteId}/blocks/{blockId}/preview`: the block's page with what a page
/// would get for the product, category or contact asked.
pub async fn preview_page(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Signed(session): Signed,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    Form(asked): Form<PreviewForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &asked.csrf) {
        return refused;
    }
    let form = match definition(&state, &session, &site_id, &block_id).await {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let shown = preview(&state, peer, &session, &site_id, &block_id, &asked).await;
    let range = RangeQuery::default();
    block_page(
        &state,
        &session,
        &site_id,
        &block_id,
        &range,
        &form,
        None,
        (&asked, shown),
    )
    .await
    .into_response()
}

/// The block's definition as its form shows it, through the API's handler.
async fn definition(
    state: &Shared,
    session: &Session,
    site_id: &str,
    block_id: &str,
) -> Result<EditForm, Response> {
    let path = ApiPath((site_id.to_string(), block_id.to_string()));
    let answer = api::get_block(State(state.clone()), session.api_headers(), path).await;
    answer
        .map(|block| EditForm::of(&block.0))
        .map_err(error_page)
}

#[allow(clippy::too_many_arguments)]
async fn block_page(
    state: &Shared,
    session: &Session,
    site_id: &str,
    block_id: &str,
    range: &RangeQuery,
    form: &EditForm,
    problem: Option<(&str, &str)>,
    (asked, preview): (&PreviewForm, Markup),
) -> Page {
    let figures = match stats(
        state,
        session,
        site_id,
        block_id,
        nonempty(&range.from),
        nonempty(&range.to),
    )
    .await
    {
        Ok(answer) => (figures(&answer), Some((answer.from, answer.to))),
        Err(error) => (
            html! { p.field-error role="alert" { (error.message) } },
            None,
        ),
    };
    let (figures, shown_range) = figures;
    let (from, to) = match &shown_range {
        Some((from, to)) => (Some(from.as_str()), Some(to.as_str())),
        None => (nonempty(&range.from), nonempty(&range.to)),
    };
    let body = html! {
        @if range.saved.is_some() && problem.is_none() {
            p #saved .notice role="status" { "Saved: pages get the new definition from now on." }
        }
        form.range method="get" {
            label for="from" { "From" }
            input #from type="date" name="from" value=[from];
            label for="to" { "To" }
            input #to type="date" name="to" value=[to];
            button type="submit" { "Show" }
        }
        (figures)
        (edit_form(session, site_id, block_id, form, problem))
        (preview_form(session, site_id, block_id, asked, preview))
    };
    pages::site_page(
        session,
        site_id,
        Section::Blocks,
        &format!("Block {block_id}"),
        body,
    )
}

fn figures(answer: &StatsAnswer) -> Markup {
    let labels: Vec<String> = answer_days(answer);
    let series: Vec<(String, Vec<f64>, Vec<f64>)> = answer
        .variants
        .iter()
        .map(|variant| {
            let by_date: HashMap<&str, &api::Figures> = (variant.days.iter())
                .map(|d| (d.date.as_str(), &d.figures))
                .collect();
            let impressions = (labels.iter())
                .map(|d| {
                    by_date
                        .get(d.as_str())
                        .map_or(0.0, |f| f.impressions as f64)
                })
                .collect();
            let clicks = (labels.iter())
                .map(|d| by_date.get(d.as_str()).map_or(0.0, |f| f.clicks as f64))
                .collect();
            (
                variant_label(&variant.variant_id).to_string(),
                impressions,
                clicks,
            )
        })
        .collect();
    let impressions: Vec<Series> = (series.iter())
        .map(|(name, values, _)| Series {
            name,
            values: values.clone(),
        })
        .collect();
    let clicks: Vec<Series> = (series.iter())
        .map(|(name, _, values)| Series {
            name,
            values: values.clone(),
        })
        .collect();
    let short: Vec<String> = labels.iter().map(|d| d[5..].to_string()).collect();
    html! {
        section aria-labelledby="figures-h" {
            h2 #figures-h { "From " (answer.from) " to " (answer.to) }
            table #variants {
                thead { tr {
                    th scope="col" { "Variant" }
                    th.num scope="col" { "Impressions" } th.num scope="col" { "Clicks" }
                    th.num scope="col" { "CTR" } th.num scope="col" { "Orders" } th.num scope="col" { "Revenue" }
                } }
                tbody {
                    @for variant in &answer.variants {
                        tr data-variant=(variant.variant_id) {
                            th scope="row" { (variant_label(&variant.variant_id))
                                @if !variant.defined { " " span.hint { "(no longer defined)" } } }
                            td.num.impressions { (number(variant.total.impressions)) }
                            td.num.clicks { (number(variant.total.clicks)) }
                            td.num { (percent(variant.total.ctr)) }
                            td.num.orders { (number(variant.total.orders)) }
                            td.num { (variant.total.revenue) }
                        }
                    }
                }
            }
            @if !labels.is_empty() {
                (chart::lines("impressions", "Impressions per day", &short, &impressions))
                (chart::lines("clicks", "Clicks per day", &short, &clicks))
            }
            (comparison(answer))
        }
    }
}

/// Every date of the answer's range, oldest first.
fn answer_days(answer: &StatsAnswer) -> Vec<String> {
    let (Some(from), Some(to)) = (
        spoor_protocol::dates::parse_date(&answer.from),
        spoor_protocol::dates::parse_date(&answer.to),
    ) else {
        return Vec::new();
    };
    (from..=to)
        .map(spoor_protocol::dates::format_date)
        .collect()
}

fn comparison(answer: &StatsAnswer) -> Markup {
    let Some((control, others)) = answer.variants.split_first() else {
        return html! {};
    };
    if others.is_empty() {
        return html! {};
    }
    let control_name = variant_label(&control.variant_id);
    let rate = |hits, trials| Rate { hits, trials };
    html! {
        section aria-labelledby="compare-h" #comparison {
            h2 #compare-h { "Variants compared with " (control_name) }
            ul.verdicts {
                @for variant in others {
                    @let name = variant_label(&variant.variant_id);
                    @let ctr = compare::lift(
                        rate(control.total.clicks, control.total.impressions),
                        rate(variant.total.clicks, variant.total.impressions));
                    @let conversion = compare::lift(
                        rate(control.total.orders, control.total.impressions),
                        rate(variant.total.orders, variant.total.impressions));
                    li { (compare::verdict(name, control_name, ("CTR", "clicks"), ctr)) }
                    li { (compare::verdict(name, control_name, ("orders per impression", "orders"), conversion)) }
                }
            }
            p.hint { "Intervals at 95%: a difference is called only when its whole interval is on one side of zero." }
        }
    }
}

/// The block's definition as the form shows it: each part in its own field.
#[derive(Deserialize, Default)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    filters: String,
    #[serde(default)]
    variants: String,
    #[serde(default)]
    placement: String,
}

fn pretty(value: Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Object(ref map) if map.is_empty() => String::new(),
        Value::Array(ref list) if list.is_empty() => String::new(),
        value => serde_json::to_string_pretty(&value).unwrap_or_default(),
    }
}

impl EditForm {
    fn of(answer: &BlockAnswer) -> EditForm {
        let block = serde_json::to_value(&*answer.block).unwrap_or(Value::Null);
        let field = |name: &str| block.get(name).cloned().unwrap_or(Value::Null);
        EditForm {
            csrf: String::new(),
            name: field("name").as_str().unwrap_or("").to_string(),
            algorithm: match field("algorithm") {
                Value::Array(names) => (names.iter().filter_map(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.as_str().unwrap_or("").to_string(),
            },
            size: field("size").to_string(),
            filters: pretty(field("filters")),
            variants: pretty(field("variants")),
            placement: pretty(field("placement")),
        }
    }

    /// The block's JSON, or the field that could not be read and why.
    fn to_json(&self) -> Result<Value, (&'static str, String)> {
        let mut block = Map::new();
        if !self.name.trim().is_empty() {
            block.insert("name".into(), Value::String(self.name.trim().into()));
        }
        block.insert(
            "algorithm".into(),
            Value::String(self.algorithm.trim().into()),
        );
        if !self.size.trim().is_empty() {
            let size: u64 = (self.size.trim().parse())
                .map_err(|_| ("size", "expected a whole number".to_string()))?;
            block.insert("size".into(), Value::from(size));
        }
        for (name, text) in [
            ("filters", &self.filters),
            ("variants", &self.variants),
            ("placement", &self.placement),
        ] {
            if text.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(text).map_err(|e| (name, format!("not JSON: {e}")))?;
            block.insert(name.into(), value);
        }
        Ok(Value::Object(block))
    }
}

/// The form field an error of the block's API names: its path's first segment.
fn field_of(message: &str) -> &'static str {
    let path = message.split(':').next().unwrap_or("");
    let first = path.split(['.', '[']).next().unwrap_or("").trim();
    [
        "name",
        "algorithm",
        "size",
        "filters",
        "variants",
        "placement",
    ]
    .into_iter()
    .find(|field| *field == first)
    .unwrap_or("block")
}

fn edit_form(
    session: &Session,
    site_id: &str,
    block_id: &str,
    form: &EditForm,
    problem: Option<(&str, &str)>,
) -> Markup {
    let error_of = |field: &str| {
        problem
            .filter(|(f, _)| *f == field)
            .map(|(_, m)| m.to_string())
    };
    let field = |name: &'static str, label: &str, hint: &str, value: &str, multiline: bool| {
        let error = error_of(name);
        let id = format!("block-{name}");
        html! {
            div.field {
                label for=(id) { (label) }
                @if multiline {
                    textarea id=(id) name=(name) rows="6" spellcheck="false"
                        aria-invalid=[error.as_ref().map(|_| "true")]
                        aria-describedby={ (id) "-hint" @if error.is_some() { " " (id) "-error" } } { (value) }
                } @else {
                    input id=(id) name=(name) value=(value)
                        aria-invalid=[error.as_ref().map(|_| "true")]
                        aria-describedby={ (id) "-hint" @if error.is_some() { " " (id) "-error" } };
                }
                span.hint id={ (id) "-hint" } { (hint) }
                @if let Some(error) = &error {
                    p.field-error id={ (id) "-error" } role="alert" { (error) }
                }
            }
        }
    };
    let whole = error_of("block");
    html! {
        section aria-labelledby="edit-h" {
            h2 #edit-h { "Definition" }
            form.edit method="post" action={ "/ui/sites/" (site_id) "/blocks/" (block_id) } novalidate {
                (csrf_field(session))
                @if let Some(error) = &whole { p.field-error role="alert" { (error) } }
                (field("name", "Name", "Shown in reports only.", &form.name, false))
                (field("algorithm", "Algorithm", "A chain such as similar,popular.", &form.algorithm, false))
                (field("size", "Size", "Products per answer.", &form.size, false))
                (field("filters", "Filters (JSON)", "Rules products must meet; empty for none.", &form.filters, true))
                (field("variants", "Variants (JSON)", "A list of {\"id\", \"share\", ...}; empty for one variant.", &form.variants, true))
                (field("placement", "Placement (JSON)", "Where the browser script shows the block; empty for none.", &form.placement, true))
                button type="submit" { "Save" }
            }
        }
    }
}

/// `POST /ui/sites/{siteId}/blocks/{blockId}`: saves the definition through the API's
/// own handler; an error is shown at the field it names, with what was typed kept.
pub async fn save(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    Form(form): Form<EditForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let problem = match form.to_json() {
        Err((field, message)) => (field, format!("{field}: {message}")),
        Ok(json) => {
            let bytes = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
            let saved = api::put_block(
                State(state.clone()),
                session.api_headers(),
                ApiPath((site_id.clone(), block_id.clone())),
                SettingsBody(bytes),
            )
            .await;
            match saved {
                Ok(_) => {
                    let to = format!("/ui/sites/{site_id}/blocks/{block_id}?saved=1");
                    return Redirect::to(&to).into_response();
                }
                Err(error) => (field_of(&error.message), error.message),
            }
        }
    };
    let range = RangeQuery::default();
    let asked = PreviewForm::default();
    block_page(
        &state,
        &session,
        &site_id,
        &block_id,
        &range,
        &form,
        Some((problem.0, &problem.1)),
        (&asked, html! {}),
    )
    .await
    .with_status(StatusCode::UNPROCESSABLE_ENTITY)
}

/// What the recommendations route answers for the block and the chosen product,
/// category or contact, drawn as a list.
async fn preview(
    state: &Shared,
    peer: SocketAddr,
    session: &Session,
    site_id: &str,
    block_id: &str,
    query: &PreviewForm,
) -> Markup {
    let mut asked = vec![
        ("siteId".to_string(), site_id.to_string()),
        ("block".to_string(), block_id.to_string()),
    ];
    if let Some(product) = nonempty(&query.product) {
        asked.push(("productKey".into(), product.into()));
    }
    if let Some(category) = nonempty(&query.category) {
        asked.push(("categoryKey".into(), category.into()));
    }
    if let (Some(by), Some(who)) = (nonempty(&query.by), nonempty(&query.who)) {
        let number = Identifier::from_query(by, who).and_then(|id| {
            let engine = state.live.read();
            let site = engine.site(site_id)?;
            site.contact(&id)
                .map(|c| c.id)
                .filter(|number| !state.live.hides(site_id, *number))
        });
        match number {
            Some(number) => asked.push(("contactId".into(), number.to_string())),
            None => {
                return html! { p.field-error role="alert" { "No contact with this " (by) "." } };
            }
        }
    }
    match ask(state, peer, session, asked).await {
        Ok(products) => products_list("preview", &products),
        Err(message) => html! { p.field-error role="alert" { (message) } },
    }
}

/// The recommendations route's answer to `asked`: its products, or why it refused.
pub(crate) async fn ask(
    state: &Shared,
    peer: SocketAddr,
    session: &Session,
    asked: Vec<(String, String)>,
) -> Result<Vec<Value>, String> {
    let response = recommend::recommendations(
        State(state.clone()),
        ConnectInfo(peer),
        session.api_headers(),
        ApiQuery(asked),
    )
    .await;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), PREVIEW_BYTES)
        .await
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["message"].as_str().unwrap_or("the route refused");
        return Err(message.to_string());
    }
    Ok(answer["products"].as_array().cloned().unwrap_or_default())
}

/// Products as a page would show them: picture, name, key, price.
pub(crate) fn products_list(id: &str, products: &[Value]) -> Markup {
    html! {
        @if products.is_empty() {
            p id={ (id) "-empty" } { "No products." }
        } @else {
            ol.products id=(id) {
                @for product in products {
                    li {
                        @if let Some(picture) = product["imgurl"].as_str().filter(|u| u.starts_with("https://")) {
                            img src=(picture) alt="" loading="lazy" width="48" height="48";
                        }
                        span.name { (product["name"].as_str().unwrap_or("(no name)")) }
                        " " code { (product["productId"].as_str().unwrap_or("")) }
                        @if let Some(price) = product["unit_price"].as_str() { " " span.price { (price) } }
                        " " span.hint { "by " (product["algorithm"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

fn preview_form(
    session: &Session,
    site_id: &str,
    block_id: &str,
    range: &PreviewForm,
    shown: Markup,
) -> Markup {
    html! {
        section aria-labelledby="preview-h" {
            h2 #preview-h { "Preview" }
            p.hint { "What a page gets from this block: for a product page, a category page, or a contact." }
            form.preview method="post" action={ "/ui/sites/" (site_id) "/blocks/" (block_id) "/preview" } {
                (csrf_field(session))
                div.field {
                    label for="preview-product" { "Product key" }
                    input #preview-product name="product" value=[nonempty(&range.product)];
                }
                div.field {
                    label for="preview-category" { "Category key" }
                    input #preview-category name="category" value=[nonempty(&range.category)];
                }
                div.field {
                    label for="preview-by" { "Contact by" }
                    select #preview-by name="by" {
                        @for (value, label) in [("email", "Email"), ("sc", "Cookie (sc)"), ("externalCustomerId", "External id"), ("phone", "Phone")] {
                            option value=(value) selected[nonempty(&range.by) == Some(value)] { (label) }
                        }
                    }
                    label for="preview-who" { "Contact" }
                    input #preview-who name="who" value=[nonempty(&range.who)];
                }
                button type="submit" { "Preview" }
            }
            (shown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_goes_to_the_field_its_path_names() {
        assert_eq!(
            field_of("variants[1].share: expected a positive weight"),
            "variants"
        );
        assert_eq!(field_of("size: expected 1 to 100"), "size");
        assert_eq!(field_of("placement.selector: empty"), "placement");
        assert_eq!(field_of("unknown field `colour`"), "block");
    }

    #[test]
    fn the_form_reads_back_into_a_block() {
        let form = EditForm {
            algorithm: "similar,popular".into(),
            size: " 8 ".into(),
            variants: "[{\"id\": \"b\", \"share\": 1}]".into(),
            ..EditForm::default()
        };
        let json = form.to_json().unwrap();
        assert_eq!(json["size"], 8);
        assert_eq!(json["variants"][0]["id"], "b");
        let bad = EditForm {
            size: "eight".into(),
            ..EditForm::default()
        };
        assert_eq!(bad.to_json().unwrap_err().0, "size");
    }
}
