//! `GET /api/v2/recommendations`: products for a page, public like the tracker endpoint
//! (a shop's page calls it from the browser), answered from the live state.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::rules::Rules;
use spoor_engine::recommend::{Algorithm, Request};
use spoor_engine::{Contact, Identifier, Product, SiteState};
use spoor_protocol::TagMap;
use spoor_settings::blocks::container_type;

use spoor_settings::SiteSettings;

use crate::app::{AppState, Shared, now_ms};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::{access, auth};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;
/// Products a request may name (`productKey`, `productKeys`...): a page's, or a cart's.
pub const MAX_PRODUCT_KEYS: usize = 50;

/// What a request asks, checked.
struct Ask {
    site_id: String,
    chosen: Chosen,
    sc: Option<String>,
    contact_id: Option<u32>,
    product_keys: Vec<String>,
    category_key: Option<String>,
    /// Set when the request says so: it overrides the block's setting.
    limit: Option<usize>,
    include_out_of_stock: Option<bool>,
    exclude_cart: Option<bool>,
    exclude_bought: Option<bool>,
    /// Rules from the `filters` parameter, on top of the block's.
    rules: Rules,
    after: Option<u64>,
}

/// A block by id, or algorithms by name for quick use.
enum Chosen {
    Nothing,
    Algorithms {
        chain: Vec<Algorithm>,
        label: String,
    },
    Block {
        id: String,
        variant: Option<String>,
    },
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

/// Algorithms a fallback chain may name: each reads candidates, under the state's lock.
const MAX_CHAIN: usize = 8;

fn parse_algorithms(value: &str) -> Result<Vec<Algorithm>, ApiError> {
    let mut chain = Vec::new();
    for name in value.split(',') {
        let algorithm = Algorithm::parse(name.trim()).ok_or_else(|| {
            invalid(format!(
                "algorithm: unknown algorithm {name:?}; expected one of {}, or several \
                 separated by commas as a fallback chain",
                Algorithm::names()
            ))
        })?;
        if !chain.contains(&algorithm) {
            chain.push(algorithm);
        }
    }
    if chain.len() > MAX_CHAIN {
        return Err(invalid(format!(
            "algorithm: expected at most {MAX_CHAIN} algorithms in a chain, got {}",
            chain.len()
        )));
    }
    Ok(chain)
}

fn parse_ask(query: Vec<(String, String)>) -> Result<Ask, ApiError> {
    let mut ask = Ask {
        site_id: String::new(),
        chosen: Chosen::Nothing,
        sc: None,
        contact_id: None,
        product_keys: Vec::new(),
        category_key: None,
        limit: None,
        include_out_of_stock: None,
        exclude_cart: None,
        exclude_bought: None,
        rules: Rules::default(),
        after: None,
    };
    let mut variant = None;
    for (key, value) in query {
        let value = value.trim().to_string();
        match key.as_str() {
            "siteId" => ask.site_id = value,
            "algorithm" => choose(&mut ask.chosen, {
                let chain = parse_algorithms(&value)?;
                // The chain as parsed, not as sent: the label goes into every
                // product's container type and url.
                let label = chain.iter().map(ToString::to_string).collect::<Vec<_>>();
                Chosen::Algorithms {
                    chain,
                    label: label.join(","),
                }
            })?,
            "block" => choose(
                &mut ask.chosen,
                Chosen::Block {
                    id: value,
                    variant: None,
                },
            )?,
            "variantId" => variant = Some(value).filter(|v| !v.is_empty()),
            "sc" => ask.sc = Some(value).filter(|v| !v.is_empty()),
            "contactId" => {
                let number = value.parse().map_err(|_| {
                    invalid(format!(
                        "contactId: expected a contact number, got {value:?}"
                    ))
                })?;
                ask.contact_id = Some(number);
            }
            "productKey" | "productKeys" | "productId" | "productIds" => {
                ask.product_keys.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(String::from),
                );
                // A cart page of many products keeps its block: the first are used.
                ask.product_keys.truncate(MAX_PRODUCT_KEYS);
            }
            "categoryKey" => ask.category_key = Some(value).filter(|v| !v.is_empty()),
            "limit" => {
                ask.limit = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            invalid(format!("limit: expected 1 to {MAX_LIMIT}, got {value:?}"))
                        })?,
                );
            }
            "includeOutOfStock" => ask.include_out_of_stock = Some(flag(&key, &value)?),
            "excludeCart" => ask.exclude_cart = Some(flag(&key, &value)?),
            "excludeBought" => ask.exclude_bought = Some(flag(&key, &value)?),
            "filters" => {
                ask.rules = Rules::from_json(value.as_bytes()).map_err(|message| {
                    invalid(format!(
                        "{message} (filters is JSON: {{\"include\": [{{\"name\": \"brand\", \
                         \"values\": [\"Acme\"]}}], \"exclude\": [...], \"should\": [...]}})"
                    ))
                })?
            }
            "after" => {
                ask.after = Some(value.parse().map_err(|_| {
                    invalid(format!("after: expected a log position, got {value:?}"))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "{other}: unknown parameter; expected siteId, block, variantId, algorithm, \
                     sc, contactId, productKey, productKeys, categoryKey, limit, filters, \
                     includeOutOfStock, excludeCart, excludeBought or after"
                )));
            }
        }
    }
    if ask.site_id.is_empty() {
        return Err(ApiError::bad_request("missing_field", "siteId: required"));
    }
    match (&mut ask.chosen, variant) {
        (Chosen::Nothing, _) => {
            return Err(ApiError::bad_request(
                "missing_field",
                format!(
                    "block: required (the id of a block defined for the site), or \
                     algorithm=NAME, one of {}",
                    Algorithm::names()
                ),
            ));
        }
        (Chosen::Block { variant, .. }, chosen) => *variant = chosen,
        (Chosen::Algorithms { .. }, Some(_)) => {
            return Err(invalid(
                "variantId: applies to blocks only; ask by block=ID".into(),
            ));
        }
        (Chosen::Algorithms { .. }, None) => {}
    }
    Ok(ask)
}

fn choose(chosen: &mut Chosen, choice: Chosen) -> Result<(), ApiError> {
    if !matches!(chosen, Chosen::Nothing) {
        return Err(invalid(
            "block, algorithm: give one of them, once: a block carries its own algorithm".into(),
        ));
    }
    *chosen = choice;
    Ok(())
}

/// What the engine is asked: the block variant's setup, or the named algorithms, with
/// the request's own settings on top.
struct Resolved {
    container_type: String,
    algorithms: Vec<Algorithm>,
    limit: usize,
    filters: Filters,
}

fn resolve(state: &AppState, ask: &Ask, contact: Option<&Contact>) -> Result<Resolved, ApiError> {
    let mut resolved = match &ask.chosen {
        Chosen::Algorithms { chain, label } => Resolved {
            container_type: label.clone(),
            algorithms: chain.clone(),
            limit: DEFAULT_LIMIT,
            filters: Filters::default(),
        },
        Chosen::Block { id, variant } => {
            let block = state
                .settings
                .blocks
                .get(&ask.site_id, id)
                .ok_or_else(|| crate::blocks::unknown_block(&ask.site_id, id))?;
            let visitor = visitor_key(ask, contact);
            let setup = block
                .setup(id, visitor.as_deref(), variant.as_deref())
                .map_err(|message| {
                    ApiError::new(StatusCode::NOT_FOUND, "unknown_variant", message)
                })?;
            Resolved {
                container_type: container_type(id, &setup.variant_id),
                algorithms: setup.algorithms,
                limit: setup.size,
                filters: setup.filters,
            }
        }
        Chosen::Nothing => unreachable!("parse_ask requires a choice"),
    };
    let filters = &mut resolved.filters;
    resolved.limit = ask.limit.unwrap_or(resolved.limit);
    filters.include_out_of_stock = ask
        .include_out_of_stock
        .unwrap_or(filters.include_out_of_stock);
    filters.exclude_cart = ask.exclude_cart.unwrap_or(filters.exclude_cart);
    filters.exclude_bought = ask.exclude_bought.unwrap_or(filters.exclude_bought);
    if !ask.rules.is_empty() {
        filters.rules = filters.rules.extended(&ask.rules);
    }
    Ok(resolved)
}

/// Whom an A/B split keeps apart: the visitor's cookie, which stays the same from their
/// first page on (before any event has made them a known contact); for a request by
/// contact number (an email), the first cookie the contact was seen with.
fn visitor_key(ask: &Ask, contact: Option<&Contact>) -> Option<String> {
    if let Some(sc) = &ask.sc {
        return Some(sc.clone());
    }
    let contact = contact?;
    Some(match contact.identifiers.cookies.first() {
        Some(cookie) => cookie.to_string(),
        None => format!("contact:{}", contact.id),
    })
}

#[derive(Serialize)]
pub struct RecommendationAnswer<'a> {
    container_type: &'a str,
    products: Vec<ProductView<'a>>,
    /// Why fewer products than asked came from an algorithm of the chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// `GET /api/v2/recommendations?siteId=&block=|algorithm=&sc=|contactId=&productKey=&productKeys=&categoryKey=&limit=`
/// Every answer, errors included, carries the CORS headers the site allows, so that a
/// page's script can read why it got nothing.
pub async fn recommendations(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Response {
    let settings = site_settings(&state, &query);
    let client = access::client_address(&state, &headers, peer);
    let response = match answer(&state, &headers, &settings, client, query).await {
        Ok(response) => response,
        Err(response) => response,
    };
    access::with_cors(response, access::allowed_origin(&settings, &headers))
}

/// The settings of the site a query names (the defaults for a site not registered).
fn site_settings(state: &AppState, query: &[(String, String)]) -> SiteSettings {
    query
        .iter()
        .find(|(key, _)| key == "siteId")
        .and_then(|(_, site_id)| state.settings.sites.settings(site_id.trim()))
        .unwrap_or_default()
}

/// `OPTIONS /api/v2/recommendations`: a browser's preflight, answered by the site's CORS
/// settings.
pub async fn preflight(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Response {
    let settings = site_settings(&state, &query);
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answer = response.headers_mut();
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        answer.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    answer.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    access::with_cors(response, access::allowed_origin(&settings, &headers))
}

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    settings: &SiteSettings,
    client: IpAddr,
    query: Vec<(String, String)>,
) -> Result<Response, Response> {
    let ask = parse_ask(query).map_err(IntoResponse::into_response)?;
    if !state.settings.sites.contains(&ask.site_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_site",
            format!("siteId: site {:?} is not registered", ask.site_id),
        )
        .into_response());
    }
    if let Some(refusal) = access::rate_limit_refusal(state, &ask.site_id, settings, client) {
        return Err(refusal);
    }
    // A contact number is small and sequential: anyone could walk them, so naming one
    // needs the site's key (a page names its visitor by the `sc` cookie they hold). And a
    // key, when one is sent, must be good: a wrong one is refused (and counted against
    // the address), never quietly taken for no key.
    let keyed = auth::bearer(headers).is_some();
    if keyed || ask.contact_id.is_some() {
        auth::require_site(headers, state, &ask.site_id).map_err(IntoResponse::into_response)?;
    }
    // Anyone can post their own cookie beside someone else's email: a cookie is shown
    // its contact's history only while nothing else names the contact, unless the shop
    // vouches for its identity links or asks with its key.
    let links_trusted = settings.trust_identity_links || keyed;
    recommend(state, ask, links_trusted)
        .await
        .map_err(IntoResponse::into_response)
}

async fn recommend(state: &AppState, ask: Ask, links_trusted: bool) -> Result<Response, ApiError> {
    crate::state::state_usable(state)?;
    crate::state::wait_for(state, ask.after).await?;
    let tuned = state.settings.tuning.get(&ask.site_id);
    let engine = state.live.read();
    let empty = SiteState::default();
    let site = engine.site(&ask.site_id).unwrap_or(&empty);
    let contact = match (&ask.sc, ask.contact_id) {
        (_, Some(number)) => site.contact_by_id(number),
        (Some(sc), None) => site
            .contact(&Identifier::Sc(sc.as_str().into()))
            .filter(|contact| links_trusted || contact.identifiers.only_cookie_is(sc)),
        (None, None) => None,
    }
    .filter(|contact| !state.live.hides(&ask.site_id, contact.id));
    let resolved = resolve(state, &ask, contact)?;
    let request = Request {
        algorithms: resolved.algorithms,
        contact,
        product_keys: ask.product_keys.iter().map(String::as_str).collect(),
        category_key: ask.category_key.as_deref(),
        limit: resolved.limit,
        now: now_ms(),
        filters: resolved.filters,
        next_item: tuned.as_ref().map(|t| &t.next_item),
        baskets: tuned.as_ref().and_then(|t| t.baskets.as_ref()),
    };
    let found = site.recommend(&request);
    let products = found
        .products
        .iter()
        .zip(&found.sources)
        .map(|(product, source)| product_view(product, *source, &resolved.container_type))
        .collect();
    let mut notes = found.notes;
    if (ask.sc.is_some() || ask.contact_id.is_some()) && contact.is_none() {
        notes.insert(0, "the visitor is not known yet".into());
    }
    let answer = RecommendationAnswer {
        container_type: &resolved.container_type,
        products,
        notes,
    };
    // Written while the state is read: the answer borrows the catalogue's products.
    let body = serde_json::to_vec(&answer).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the answer could not be written: {e}"),
        )
    })?;
    drop(engine);
    let json = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, json)], body).into_response())
}

/// A product as a block shows it, with the feed's field names, and its url carrying
/// `sc_content` so that the visit it brings is credited to the block. Serialised straight
/// from the catalogue's product: answers are built on every page view.
#[derive(Serialize)]
struct ProductView<'a> {
    product_id: &'a str,
    container_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imgurl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_currency_code: Option<&'a str>,
    #[serde(rename = "isInStock", skip_serializing_if = "Option::is_none")]
    is_in_stock: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    category_id: &'a [String],
    #[serde(flatten)]
    tags: &'a TagMap,
    algorithm: &'static str,
}

fn product_view<'a>(
    product: &'a Product,
    source: Algorithm,
    container_type: &'a str,
) -> ProductView<'a> {
    let price = product.price.as_ref().map(|p| &p.value);
    ProductView {
        product_id: &product.product_key,
        container_type,
        url: product
            .url
            .as_deref()
            .map(|url| with_sc_content(url, container_type)),
        name: product.name.as_deref(),
        imgurl: product.image_url.as_deref(),
        unit_price: price.map(|p| p.amount.to_string()),
        price_currency_code: price.and_then(|p| p.currency.as_deref()),
        is_in_stock: product.in_stock.as_ref().map(|s| u8::from(s.value)),
        brand: product.brand.as_deref(),
        category_id: &product.category_ids,
        tags: &product.tags,
        algorithm: source.name(),
    }
}

/// The product's url with `sc_content=<container type>` added to its query, before any
/// fragment; the rest of the url is left exactly as the shop wrote it.
fn with_sc_content(product_url: &str, container_type: &str) -> String {
    let (before, fragment) = match product_url.find('#') {
        Some(at) => product_url.split_at(at),
        None => (product_url, ""),
    };
    let separator = match before.find('?') {
        None => "?",
        Some(at) if at + 1 == before.len() || before.ends_with('&') => "",
        Some(_) => "&",
    };
    let encoded: String = form_urlencoded::byte_serialize(container_type.as_bytes()).collect();
    format!("{before}{separator}sc_content={encoded}{fragment}")
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
        assert_eq!(
            with_sc_content("https://shop.example/p/1?", "home_a"),
            "https://shop.example/p/1?sc_content=home_a"
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
        assert!(matches!(
            &ask.chosen,
            Chosen::Algorithms { chain, .. } if *chain == [Algorithm::Similar, Algorithm::Popular]
        ));
        assert_eq!(ask.product_keys, vec!["a", "b", "c"]);
        assert_eq!(ask.exclude_cart, Some(true));
        let many = (0..=MAX_PRODUCT_KEYS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>();
        let ask = parse_ask(query(&[
            ("siteId", "S"),
            ("algorithm", "similar"),
            ("productKeys", &many.join(",")),
        ]))
        .unwrap();
        assert_eq!(
            ask.product_keys.len(),
            MAX_PRODUCT_KEYS,
            "the first are used"
        );
        assert!(
            err(&[("siteId", "S"), ("algorithm", "popular"), ("block", "home")])
                .unwrap()
                .starts_with("block, algorithm: give one of them")
        );
        assert!(
            err(&[
                ("siteId", "S"),
                ("algorithm", "popular"),
                ("variantId", "a")
            ])
            .unwrap()
            .starts_with("variantId: applies to blocks only")
        );
        let filters = r#"{"include": [{"name": "price", "min": "x"}]}"#;
        assert!(
            err(&[("siteId", "S"), ("block", "b"), ("filters", filters)])
                .unwrap()
                .starts_with("filters.include[0].min: expected a price such as 25.5, got \"x\"")
        );
    }
}
