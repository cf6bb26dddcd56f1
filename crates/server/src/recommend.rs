//! `GET /api/v2/recommendations`: products for a page, public like the tracker endpoint
//! (a shop's page calls it from the browser), answered from the live state.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::{Algorithm, Request};
use spoor_engine::{Identifier, Product, SiteState};

use crate::error::ApiError;
use crate::{AppState, now_ms};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

/// What a request asks, checked.
struct Ask {
    site_id: String,
    algorithms: Vec<Algorithm>,
    container_type: String,
    sc: Option<String>,
    contact_id: Option<u32>,
    product_keys: Vec<String>,
    category_key: Option<String>,
    limit: usize,
    filters: Filters,
    after: Option<u64>,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_value", message)
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(invalid(format!(
            "{name}: expected 1, 0, true or false, got {value:?}"
        ))),
    }
}

fn parse_algorithms(value: &str) -> Result<Vec<Algorithm>, ApiError> {
    value
        .split(',')
        .map(|name| {
            Algorithm::parse(name.trim()).ok_or_else(|| {
                invalid(format!(
                    "algorithm: unknown algorithm {name:?}; expected one of {}, or several \
                     separated by commas as a fallback chain",
                    Algorithm::names()
                ))
            })
        })
        .collect()
}

fn parse_ask(query: Vec<(String, String)>) -> Result<Ask, ApiError> {
    let mut ask = Ask {
        site_id: String::new(),
        algorithms: Vec::new(),
        container_type: String::new(),
        sc: None,
        contact_id: None,
        product_keys: Vec::new(),
        category_key: None,
        limit: DEFAULT_LIMIT,
        filters: Filters::default(),
        after: None,
    };
    let mut block = None;
    for (key, value) in query {
        let value = value.trim().to_string();
        match key.as_str() {
            "siteId" => ask.site_id = value,
            "algorithm" => {
                ask.algorithms = parse_algorithms(&value)?;
                ask.container_type = value;
            }
            "block" => block = Some(value),
            "sc" => ask.sc = Some(value).filter(|v| !v.is_empty()),
            "contactId" => {
                let number = value.parse().map_err(|_| {
                    invalid(format!(
                        "contactId: expected a contact number, got {value:?}"
                    ))
                })?;
                ask.contact_id = Some(number);
            }
            "productKey" | "productKeys" => ask.product_keys.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from),
            ),
            "categoryKey" => ask.category_key = Some(value).filter(|v| !v.is_empty()),
            "limit" => {
                ask.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(format!("limit: expected 1 to {MAX_LIMIT}, got {value:?}"))
                    })?;
            }
            "includeOutOfStock" => ask.filters.include_out_of_stock = flag(&key, &value)?,
            "excludeCart" => ask.filters.exclude_cart = flag(&key, &value)?,
            "excludeBought" => ask.filters.exclude_bought = flag(&key, &value)?,
            "after" => {
                ask.after = Some(value.parse().map_err(|_| {
                    invalid(format!("after: expected a log position, got {value:?}"))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "{other}: unknown parameter; expected siteId, algorithm, sc, contactId, \
                     productKey, productKeys, categoryKey, limit, includeOutOfStock, \
                     excludeCart, excludeBought or after"
                )));
            }
        }
    }
    if ask.site_id.is_empty() {
        return Err(ApiError::bad_request("missing_field", "siteId: required"));
    }
    if let Some(block) = block {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_block",
            format!(
                "block: no block {block:?} is defined for site {}; ask by algorithm=NAME \
                 (one of {})",
                ask.site_id,
                Algorithm::names()
            ),
        ));
    }
    if ask.algorithms.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            format!("algorithm: required, one of {}", Algorithm::names()),
        ));
    }
    Ok(ask)
}

#[derive(Serialize)]
pub struct RecommendationAnswer {
    container_type: String,
    products: Vec<Value>,
    /// Why fewer products than asked came from an algorithm of the chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// `GET /api/v2/recommendations?siteId=&algorithm=&sc=|contactId=&productKey=&productKeys=&categoryKey=&limit=`
pub async fn recommendations(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let ask = parse_ask(query)?;
    if !state.ingestor.sites().contains(&ask.site_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_site",
            format!("siteId: site {:?} is not registered", ask.site_id),
        ));
    }
    crate::state::wait_for(&state, ask.after).await?;
    let engine = state.live.read();
    let empty = SiteState::default();
    let site = engine.site(&ask.site_id).unwrap_or(&empty);
    let contact = match (&ask.sc, ask.contact_id) {
        (_, Some(number)) => site.contact_by_id(number),
        (Some(sc), None) => site.contact(&Identifier::Sc(sc.clone())),
        (None, None) => None,
    };
    let request = Request {
        algorithms: ask.algorithms.clone(),
        contact,
        product_keys: ask.product_keys.iter().map(String::as_str).collect(),
        category_key: ask.category_key.as_deref(),
        limit: ask.limit,
        now: now_ms(),
        filters: ask.filters.clone(),
    };
    let found = site.recommend(&request);
    let products = found
        .products
        .iter()
        .zip(&found.sources)
        .map(|(product, source)| product_json(product, *source, &ask.container_type))
        .collect();
    let mut notes = found.notes;
    if (ask.sc.is_some() || ask.contact_id.is_some()) && contact.is_none() {
        notes.insert(0, "the visitor is not known yet".into());
    }
    drop(engine);
    let answer = RecommendationAnswer {
        container_type: ask.container_type,
        products,
        notes,
    };
    let mut response = Json(answer).into_response();
    // Called from shops' pages on their own domains; it reads no cookie and changes nothing.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

/// A product as a block shows it, with the feed's field names, and its url carrying
/// `sc_content` so that the visit it brings is credited to the block.
fn product_json(product: &Product, source: Algorithm, container_type: &str) -> Value {
    let mut fields = Map::new();
    let mut put = |key: &str, value: Value| {
        fields.insert(key.to_string(), value);
    };
    put("product_id", product.product_key.clone().into());
    put("container_type", container_type.into());
    if let Some(url) = &product.url {
        put("url", with_sc_content(url, container_type).into());
    }
    if let Some(name) = &product.name {
        put("name", name.clone().into());
    }
    if let Some(image) = &product.image_url {
        put("imgurl", image.clone().into());
    }
    if let Some(price) = &product.price {
        put("unit_price", price.value.amount.to_string().into());
        if let Some(currency) = &price.value.currency {
            put("price_currency_code", currency.clone().into());
        }
    }
    if let Some(stock) = &product.in_stock {
        put("isInStock", u8::from(stock.value).into());
    }
    if let Some(brand) = &product.brand {
        put("brand", brand.clone().into());
    }
    if !product.category_ids.is_empty() {
        put("category_id", product.category_ids.clone().into());
    }
    for (tag, values) in &product.tags {
        put(tag, values.clone().into());
    }
    put("algorithm", source.name().into());
    Value::Object(fields)
}

fn with_sc_content(product_url: &str, container_type: &str) -> String {
    match url::Url::parse(product_url) {
        Ok(mut parsed) => {
            parsed
                .query_pairs_mut()
                .append_pair("sc_content", container_type);
            parsed.into()
        }
        // A relative or odd url is the shop's business: append the parameter plainly.
        Err(_) => {
            let separator = if product_url.contains('?') { '&' } else { '?' };
            let encoded: String =
                url::form_urlencoded::byte_serialize(container_type.as_bytes()).collect();
            format!("{product_url}{separator}sc_content={encoded}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sc_content_joins_the_url() {
        assert_eq!(
            with_sc_content("https://shop.example/p/1?color=red#top", "similar"),
            "https://shop.example/p/1?color=red&sc_content=similar#top"
        );
        assert_eq!(
            with_sc_content("/p/1", "similar,popular"),
            "/p/1?sc_content=similar%2Cpopular"
        );
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn questions_are_checked() {
        let err = |pairs: &[(&str, &str)]| parse_ask(query(pairs)).err().map(|e| e.message);
        assert_eq!(
            err(&[("algorithm", "popular")]).as_deref(),
            Some("siteId: required")
        );
        assert!(
            err(&[("siteId", "S"), ("algorithm", "best")])
                .unwrap()
                .starts_with("algorithm: unknown algorithm \"best\"")
        );
        assert!(
            err(&[("siteId", "S"), ("algorithm", "popular"), ("limit", "0")])
                .unwrap()
                .starts_with("limit: expected 1 to 100")
        );
        assert!(
            err(&[("siteId", "S"), ("algorithm", "popular"), ("colour", "red")])
                .unwrap()
                .starts_with("colour: unknown parameter")
        );
        let ask = parse_ask(query(&[
            ("siteId", "S"),
            ("algorithm", "similar,popular"),
            ("productKeys", "a, b"),
            ("productKey", "c"),
            ("excludeCart", "1"),
        ]))
        .unwrap();
        assert_eq!(ask.algorithms, vec![Algorithm::Similar, Algorithm::Popular]);
        assert_eq!(ask.product_keys, vec!["a", "b", "c"]);
        assert!(ask.filters.exclude_cart);
    }
}
