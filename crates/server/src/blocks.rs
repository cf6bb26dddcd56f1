//! `/admin/v1/sites/{siteId}/blocks/...`: recommendation blocks, defined by the shop (its
//! API key) or an admin, asked for by `GET /api/v2/recommendations?block=`.

use std::sync::Arc;

use crate::body::SettingsBody;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spoor_engine::attribution::DayCounts;
use spoor_eval::backtest::{self as replay, BacktestReport, Variant};
use spoor_protocol::dates::{self, DAY_MS, format_date};
use spoor_settings::blocks::{Block, container_type};

use crate::app::{AppState, Shared, blocking, now_ms};
use crate::auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::{enter, known_site};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAnswer {
    pub(crate) block_id: String,
    /// What answers, impressions and clicks carry: one per variant.
    pub(crate) container_types: Vec<String>,
    #[serde(flatten)]
    pub(crate) block: Arc<Block>,
}

impl BlockAnswer {
    fn new(block_id: String, block: Arc<Block>) -> BlockAnswer {
        let container_types = block
            .variant_ids()
            .into_iter()
            .map(|variant| container_type(&block_id, variant))
            .collect();
        BlockAnswer {
            block_id,
            container_types,
            block,
        }
    }
}

#[derive(Serialize)]
pub struct BlockList {
    pub(crate) blocks: Vec<BlockAnswer>,
}

pub fn unknown_block(site_id: &str, block_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_block",
        format!(
            "no block {block_id:?} is defined for site {site_id}; define it with PUT \
             /admin/v1/sites/{site_id}/blocks/{block_id}, or ask by algorithm=NAME"
        ),
    )
}

/// `PUT /admin/v1/sites/{siteId}/blocks/{blockId}`: 201 when new, 200 when replaced.
pub async fn put_block(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    SettingsBody(body): SettingsBody,
) -> Result<Response, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let block = Block::from_json(&body).map_err(|message| {
        ApiError::bad_request(
            "invalid_block",
            format!("{message} (a block is {{\"algorithm\": \"similar,popular\", \"size\": 8, \"filters\": {{...}}, \"variants\": [...]}})"),
        )
    })?;
    let (blocks, site, id) = (
        state.settings.blocks.clone(),
        site_id.clone(),
        block_id.clone(),
    );
    let created = blocking(move || blocks.put(&site, &id, block)).await??;
    tracing::info!(site_id = %site_id, block_id = %block_id, created, "block defined");
    let block = state
        .settings
        .blocks
        .get(&site_id, &block_id)
        .ok_or_else(|| unknown_block(&site_id, &block_id))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(BlockAnswer::new(block_id, block))).into_response())
}

/// `GET /admin/v1/sites/{siteId}/blocks/{blockId}`
pub async fn get_block(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
) -> Result<Json<BlockAnswer>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    let block = state
        .settings
        .blocks
        .get(&site_id, &block_id)
        .ok_or_else(|| unknown_block(&site_id, &block_id))?;
    Ok(Json(BlockAnswer::new(block_id, block)))
}

/// `DELETE /admin/v1/sites/{siteId}/blocks/{blockId}`: 204; 404 when there is none.
pub async fn delete_block(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    let (blocks, site, id) = (
        state.settings.blocks.clone(),
        site_id.clone(),
        block_id.clone(),
    );
    if blocking(move || blocks.delete(&site, &id)).await?? {
        tracing::info!(site_id = %site_id, block_id = %block_id, "block deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown_block(&site_id, &block_id))
    }
}

/// `GET /admin/v1/sites/{siteId}/blocks`
pub async fn list_blocks(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<Json<BlockList>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let blocks = state
        .settings
        .blocks
        .list(&site_id)
        .into_iter()
        .map(|(id, block)| BlockAnswer::new(id, block))
        .collect();
    Ok(Json(BlockList { blocks }))
}

/// The longest span `/stats` answers for at once.
const MAX_STATS_DAYS: i64 = 3_660;
const DEFAULT_STATS_DAYS: i64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) after: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsAnswer {
    pub(crate) site_id: String,
    pub(crate) block_id: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) variants: Vec<VariantStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VariantStats {
    pub(crate) variant_id: String,
    pub(crate) container_type: String,
    /// Whether the block defines this variant now (counts of removed variants stay).
    pub(crate) defined: bool,
    pub(crate) total: Figures,
    pub(crate) days: Vec<DayFigures>,
}

#[derive(Serialize)]
pub(crate) struct Figures {
    pub(crate) impressions: u64,
    pub(crate) clicks: u64,
    /// Clicks per impression; null without impressions.
    pub(crate) ctr: Option<f64>,
    pub(crate) orders: u64,
    pub(crate) revenue: Decimal,
}

impl From<&DayCounts> for Figures {
    fn from(counts: &DayCounts) -> Figures {
        Figures {
            impressions: counts.impressions,
            clicks: counts.clicks,
            ctr: counts.ctr(),
            orders: counts.orders,
            revenue: counts.revenue.normalize(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct DayFigures {
    pub(crate) date: String,
    #[serde(flatten)]
    pub(crate) figures: Figures,
}

/// `GET /api/v1/sites/{siteId}/blocks/{blockId}/stats?from=&to=`: impressions, clicks,
/// CTR, orders and revenue per variant per day (UTC dates, both ends included; the last
/// 30 days by default).
pub async fn block_stats(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<StatsAnswer>, ApiError> {
    enter(&state, &headers, &site_id, query.after).await?;
    let to = match &query.to {
        Some(text) => parse_date("to", text)?,
        None => now_ms().div_euclid(DAY_MS),
    };
    let from = match &query.from {
        Some(text) => parse_date("from", text)?,
        None => to - (DEFAULT_STATS_DAYS - 1),
    };
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!(
                "from: {} is after to {}",
                format_date(from),
                format_date(to)
            ),
        ));
    }
    if to - from >= MAX_STATS_DAYS {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("from, to: at most {MAX_STATS_DAYS} days at once"),
        ));
    }
    let block = state.settings.blocks.get(&site_id, &block_id);
    let engine = state.live.read();
    let counted = engine
        .site(&site_id)
        .map(|site| site.attribution().block(&block_id, from, to))
        .unwrap_or_default();
    // The defined variants first, in their order, counted or not; then any other
    // container type of the block the events mention.
    let defined: Vec<String> = block
        .as_ref()
        .map(|b| b.variant_ids().into_iter().map(String::from).collect())
        .unwrap_or_default();
    let mut containers: Vec<(String, bool)> = defined
        .iter()
        .map(|variant| (container_type(&block_id, variant), true))
        .collect();
    for container in counted.keys() {
        if !containers.iter().any(|(c, _)| c == container) {
            containers.push((container.to_string(), false));
        }
    }
    if containers.is_empty() {
        return Err(unknown_block(&site_id, &block_id));
    }
    let variants = containers
        .into_iter()
        .map(|(container, defined)| {
            let days = counted.get(container.as_str()).cloned().unwrap_or_default();
            let mut total = DayCounts::default();
            for (_, counts) in &days {
                total.add(counts);
            }
            VariantStats {
                variant_id: container
                    .strip_prefix(&format!("{block_id}_"))
                    .unwrap_or("")
                    .to_string(),
                total: Figures::from(&total),
                days: days
                    .into_iter()
                    .map(|(day, counts)| DayFigures {
                        date: format_date(day),
                        figures: Figures::from(counts),
                    })
                    .collect(),
                container_type: container,
                defined,
            }
        })
        .collect();
    drop(engine);
    Ok(Json(StatsAnswer {
        site_id,
        block_id,
        from: format_date(from),
        to: format_date(to),
        variants,
    }))
}

/// `YYYY-MM-DD` as a day number, or an error naming the parameter.
fn parse_date(name: &str, text: &str) -> Result<i64, ApiError> {
    dates::parse_date(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_value",
            format!("{name}: expected a date as YYYY-MM-DD, got {text:?}"),
        )
    })
}

/// The key under which one backtest runs in the whole server at a time (site ids are
/// never empty).
const ONE_BACKTEST_AT_A_TIME: &str = "";
/// Contacts past which the server does not backtest a site itself: the replay holds a
/// second copy of the site's state beside the live one. `spoor eval backtest` runs it on
/// the data directory, in a process of its own.
pub const MAX_BACKTEST_CONTACTS: u64 = 250_000;

/// 409 for a site too large to replay inside the serving process.
fn refuse_large_backtest(state: &AppState, site_id: &str) -> Result<(), ApiError> {
    let contacts = (state.live.read().site(site_id)).map_or(0, |site| site.counts().contacts);
    if contacts > MAX_BACKTEST_CONTACTS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_large_to_backtest_here",
            format!(
                "site {site_id} has {contacts} contacts: a backtest would hold a second copy \
                 of its state in the server (it does up to {MAX_BACKTEST_CONTACTS}); run \
                 `spoor eval backtest --data DIR --site {site_id} --block ID` instead"
            ),
        ));
    }
    Ok(())
}

/// Days a backtest may look back: the log is replayed whole either way, and the days
/// asked are what is scored.
const MAX_BACKTEST_DAYS: u32 = 365;
const DEFAULT_BACKTEST_DAYS: u32 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestQuery {
    days: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BacktestAnswer {
    site_id: String,
    block_id: String,
    days: u32,
    /// Moments dated from this day on (UTC; by the event, never later than its arrival)
    /// were scored.
    from: String,
    #[serde(flatten)]
    report: BacktestReport,
}

/// `POST /admin/v1/sites/{siteId}/blocks/{blockId}/backtest?days=N`: replays the site's
/// log and scores what each of the block's variants would have recommended at each
/// product view, cart and purchase of the last `days` days against what the visitor did
/// next. Takes as long as a replay of the log; one heavy job (this or a tuning) per site
/// at a time.
pub async fn backtest(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, block_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<BacktestQuery>,
) -> Result<Json<BacktestAnswer>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let days = query.days.unwrap_or(DEFAULT_BACKTEST_DAYS);
    if !(1..=MAX_BACKTEST_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("days: expected 1 to {MAX_BACKTEST_DAYS}, got {days}"),
        ));
    }
    let block = (state.settings.blocks)
        .get(&site_id, &block_id)
        .ok_or_else(|| unknown_block(&site_id, &block_id))?;
    let variants = backtest_variants(&block_id, &block);
    refuse_large_backtest(&state, &site_id)?;
    let busy = |what: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "busy",
            format!(
                "{what}; retry when that ends (or run `spoor eval backtest` on the data directory)"
            ),
        )
    };
    // Each held by the job itself, not the request: a client that hangs up and asks again
    // does not start a second replay beside the first.
    let site_guard = (state.tuning_running)
        .start_owned(&site_id)
        .ok_or_else(|| {
            busy(&format!(
                "site {site_id} is being tuned or backtested already"
            ))
        })?;
    let server_guard = (state.tuning_running)
        .start_owned(ONE_BACKTEST_AT_A_TIME)
        .ok_or_else(|| busy("another site's backtest is running"))?;
    let from_day = now_ms().div_euclid(DAY_MS) - i64::from(days) + 1;
    let tuned = state.settings.tuning.get(&site_id);
    let (log, site, keys) = (state.log.clone(), site_id.clone(), state.live.keyring());
    let report = blocking(move || {
        let _held = (site_guard, server_guard);
        let next_item = tuned.as_ref().map(|t| &t.next_item);
        let baskets = tuned.as_ref().and_then(|t| t.baskets.as_ref());
        let mut records = spoor_live::records::records(&*log, keys);
        let from = from_day * DAY_MS;
        let report = replay::backtest(&site, &mut records, from, &variants, next_item, baskets);
        records.failed.map_or(Ok(report), Err)
    })
    .await?
    .map_err(|error| ApiError::unavailable(format!("the log could not be read: {error}; retry")))?;
    tracing::info!(site_id = %site_id, block_id = %block_id, days, moments = report.moments, "block backtested");
    Ok(Json(BacktestAnswer {
        site_id,
        block_id,
        days,
        from: format_date(from_day),
        report,
    }))
}

/// Each variant of the block as the recommendations route answers it.
pub fn backtest_variants(block_id: &str, block: &Block) -> Vec<Variant> {
    (block.variant_ids().into_iter())
        .filter_map(|id| block.setup(block_id, None, Some(id)).ok())
        .map(|setup| Variant {
            variant_id: setup.variant_id,
            algorithms: setup.algorithms,
            limit: setup.size,
            filters: setup.filters,
        })
        .collect()
}
