//! `/admin/v1/sites/{siteId}/tuning`: the engine tunes a site's next-item settings on the
//! site's own recent sessions, and answers the site's questions with them from then on.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use spoor_engine::SiteState;
use spoor_engine::items::ItemId;
use spoor_engine::recommend::{
    BasketGoal, BasketSettings, BasketTuning, NextItemParams, Tuning, TuningGoal,
};
use spoor_eval::baskets::{Basket, tune_baskets};
use spoor_eval::{AnswerRule, tune_next_item_at};
use spoor_settings::SiteTuning;

use crate::app::{Shared, blocking, now_ms};
use crate::auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::known_site;

/// Fewer sessions than this hold too few held-out cases to choose anything.
pub const MIN_SESSIONS: usize = 1_000;
/// Fewer customers with a second order than this hold too few held-out baskets.
pub const MIN_REPEAT_CUSTOMERS: usize = 200;
/// Products per answer the tuning scores (HR and MRR at this k).
const TUNING_K: usize = 20;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningAnswer {
    site_id: String,
    /// Whether the site answers with tuned settings (else the built-in ones).
    tuned: bool,
    /// The next-item settings in force.
    next_item: NextItemParams,
    /// The blends over orders in force.
    baskets: BasketSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    tuned_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<Tuning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repeat_customers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    basket_report: Option<BasketTuning>,
    /// The item vectors answers use now (learned while serving, for settings that give
    /// them weight); `null` until they are learned.
    item_vectors: Option<VectorsInUse>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorsInUse {
    /// The site's view sessions when they were learned.
    sessions: usize,
    /// Products with a vector.
    products: usize,
}

/// The vectors the site's answers use now.
fn vectors_in_use(state: &Shared, site_id: &str) -> Option<VectorsInUse> {
    if !crate::vectors::weighted(&state.settings.tuning, site_id) {
        return None;
    }
    let engine = state.live.read();
    let (learned, from) = engine.site(site_id)?.recommender().embeddings()?;
    Some(VectorsInUse {
        sessions: from.sessions,
        products: learned.products(),
    })
}

fn answer(
    site_id: String,
    tuning: Option<SiteTuning>,
    item_vectors: Option<VectorsInUse>,
) -> TuningAnswer {
    let Some(tuning) = tuning else {
        return TuningAnswer {
            site_id,
            tuned: false,
            next_item: NextItemParams::default(),
            baskets: BasketSettings::default(),
            tuned_at: None,
            sessions: None,
            report: None,
            repeat_customers: None,
            basket_report: None,
            item_vectors,
        };
    };
    TuningAnswer {
        site_id,
        tuned: true,
        next_item: tuning.next_item,
        baskets: tuning.baskets.unwrap_or_default(),
        tuned_at: Some(tuning.tuned_at),
        sessions: Some(tuning.sessions),
        report: tuning.report,
        repeat_customers: Some(tuning.repeat_customers),
        basket_report: tuning.basket_report,
        item_vectors,
    }
}

/// `GET /admin/v1/sites/{siteId}/tuning`: the settings the site is answered with.
pub async fn get_tuning(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<Json<TuningAnswer>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let tuning = state.settings.tuning.get(&site_id).map(|t| (*t).clone());
    let vectors = vectors_in_use(&state, &site_id);
    Ok(Json(answer(site_id, tuning, vectors)))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TuneQuery {
    /// What the next-item choice maximises: `HR`, `MRR` or `both` (the default).
    goal: Option<String>,
    /// What the next-basket choice maximises: `recall` (the default) or `NDCG`.
    basket_goal: Option<String>,
}

/// `POST /admin/v1/sites/{siteId}/tuning`: tunes on the site's sessions (the most recent
/// tenth held out and predicted from the rest) and keeps the choice. Takes seconds to a
/// few minutes by the site's size; answers when done.
pub async fn tune(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(asked): ApiQuery<TuneQuery>,
) -> Result<Json<TuningAnswer>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let goal = goal_named(
        "goal",
        asked.goal.as_deref(),
        "HR, MRR or both",
        TuningGoal::parse,
    )?;
    let basket_goal = goal_named(
        "basketGoal",
        asked.basket_goal.as_deref(),
        "recall or NDCG",
        BasketGoal::parse,
    )?;
    let Some(_running) = state.tuning_running.start(&site_id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tuning_running",
            format!("site {site_id} is being tuned or backtested already; retry when that ends"),
        ));
    };
    // A copy of every session and every order: on a blocking thread, not the HTTP
    // thread's.
    let (live, id) = (state.live.clone(), site_id.clone());
    let (sessions, times, orders) = blocking(move || {
        let engine = live.read();
        match engine.site(&id) {
            Some(site) => {
                let (sessions, times) = site.recommender().session_keys();
                (sessions, times, site_orders(site))
            }
            None => Default::default(),
        }
    })
    .await?;
    let repeat_customers = repeat_customers(&orders);
    if sessions.len() < MIN_SESSIONS && repeat_customers < MIN_REPEAT_CUSTOMERS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_few_sessions",
            format!(
                "site {site_id} has {} view sessions and {repeat_customers} customers with \
                 two orders or more; tuning needs at least {MIN_SESSIONS} sessions or \
                 {MIN_REPEAT_CUSTOMERS} such customers (the built-in settings answer until \
                 then)",
                sessions.len()
            ),
        ));
    }
    tracing::info!(
        site_id = %site_id,
        sessions = sessions.len(),
        repeat_customers,
        "tuning started"
    );
    let count = sessions.len();
    let (next_item, report, basket_choice) = tokio::task::spawn_blocking(move || {
        let next_item = (count >= MIN_SESSIONS).then(|| {
            let threads = spoor_engine::recommend::embeddings::background_threads();
            tune_next_item_at(
                &sessions,
                &times,
                TUNING_K,
                goal,
                AnswerRule::AsServed,
                threads,
            )
        });
        let baskets = (repeat_customers >= MIN_REPEAT_CUSTOMERS)
            .then(|| tune_baskets(&as_baskets(orders), TUNING_K, basket_goal));
        (next_item, baskets)
    })
    .await
    .map(|(next_item, baskets)| {
        let (next_item, report) = next_item.unzip();
        (next_item, report, baskets)
    })
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tuning_failed",
            "tuning stopped inside spoor; the server's log says where",
        )
    })?;
    // A part without enough data this time keeps what an earlier tuning chose for it.
    let mut tuning = (state.settings.tuning.get(&site_id))
        .as_deref()
        .cloned()
        .unwrap_or_default();
    tuning.tuned_at = now_ms();
    if let Some(next_item) = next_item {
        tuning.next_item = next_item;
        tuning.sessions = count;
        tuning.report = report;
    }
    if let Some((baskets, basket_report)) = basket_choice {
        tuning.baskets = Some(baskets);
        tuning.repeat_customers = repeat_customers;
        tuning.basket_report = Some(basket_report);
    }
    let (registry, id, kept) = (
        state.settings.tuning.clone(),
        site_id.clone(),
        tuning.clone(),
    );
    blocking(move || registry.set(&id, Some(kept))).await??;
    tracing::info!(
        site_id = %site_id,
        next_item_hit_rate = tuning.report.as_ref().map(|r| r.hit_rate),
        next_item_mrr = tuning.report.as_ref().map(|r| r.mrr),
        next_basket_recall = tuning.basket_report.as_ref().map(|r| r.recall),
        "tuning chosen"
    );
    let vectors = vectors_in_use(&state, &site_id);
    Ok(Json(answer(site_id, Some(tuning), vectors)))
}

/// The goal a query parameter names, the default when it names none.
fn goal_named<T: Default>(
    parameter: &str,
    name: Option<&str>,
    expected: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, ApiError> {
    let Some(name) = name else {
        return Ok(T::default());
    };
    parse(name).ok_or_else(|| {
        let shown: String = name.chars().take(40).collect();
        ApiError::bad_request(
            "invalid_value",
            format!("{parameter}: expected {expected}, got {shown:?}"),
        )
    })
}

/// A customer's order: the contact's number, when, and the product numbers.
type HeldOrder = (u32, i64, Vec<ItemId>);

/// Every order of the site's contacts, as numbers only: copied under the state's read
/// lock, so nothing is allocated per product there.
fn site_orders(site: &SiteState) -> Vec<HeldOrder> {
    site.live_contacts()
        .flat_map(|contact| {
            (contact.orders.iter()).map(move |order| {
                (
                    contact.id,
                    order.at,
                    order.lines.iter().map(|l| l.item).collect(),
                )
            })
        })
        .collect()
}

/// The orders as the baskets the tuning reads (products by number: the tuning needs only
/// to tell them apart), in time order.
fn as_baskets(orders: Vec<HeldOrder>) -> Vec<Basket> {
    let mut baskets: Vec<Basket> = orders
        .into_iter()
        .enumerate()
        .filter(|(_, (_, _, items))| !items.is_empty())
        .map(|(index, (customer, at, mut items))| {
            // A product on two lines of an order is one product of the basket.
            items.sort_unstable();
            items.dedup();
            Basket {
                user: customer.to_string(),
                id: index.to_string(),
                at,
                items: items.iter().map(ItemId::to_string).collect(),
            }
        })
        .collect();
    baskets.sort_by_key(|basket| basket.at);
    baskets
}

/// The customers with two orders or more: the ones a next basket can be held out for.
fn repeat_customers(orders: &[HeldOrder]) -> usize {
    let mut count: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for (customer, _, items) in orders {
        if !items.is_empty() {
            *count.entry(*customer).or_default() += 1;
        }
    }
    count.values().filter(|n| **n >= 2).count()
}

/// `DELETE /admin/v1/sites/{siteId}/tuning`: back to the built-in settings.
pub async fn forget_tuning(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let registry = state.settings.tuning.clone();
    blocking(move || registry.set(&site_id, None)).await??;
    Ok(StatusCode::NO_CONTENT)
}
