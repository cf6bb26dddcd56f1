//! `/admin/v1/sites/{siteId}/tuning`: the engine tunes a site's next-item settings on the
//! site's own recent sessions, and answers the site's questions with them from then on.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use spoor_engine::recommend::{NextItemParams, TuningGoal};
use spoor_eval::tune_next_item_at;
use spoor_settings::SiteTuning;

use crate::app::{Shared, blocking, now_ms};
use crate::auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::known_site;

/// Fewer sessions than this hold too few held-out cases to choose anything.
pub const MIN_SESSIONS: usize = 1_000;
/// Products per answer the tuning scores (HR and MRR at this k).
const TUNING_K: usize = 20;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningAnswer {
    site_id: String,
    /// Whether the site answers with tuned settings (else the built-in ones).
    tuned: bool,
    next_item: NextItemParams,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    tuning: Option<SiteTuning>,
}

fn answer(site_id: String, tuning: Option<SiteTuning>) -> TuningAnswer {
    TuningAnswer {
        site_id,
        tuned: tuning.is_some(),
        next_item: tuning
            .as_ref()
            .map_or_else(NextItemParams::default, |t| t.next_item.clone()),
        tuning,
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
    Ok(Json(answer(site_id, tuning)))
}

#[derive(serde::Deserialize)]
pub struct TuneQuery {
    /// What the choice maximises: `HR`, `MRR` or `both` (the default).
    goal: Option<String>,
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
    let goal = match asked.goal.as_deref() {
        None => TuningGoal::default(),
        Some(name) => TuningGoal::parse(name).ok_or_else(|| {
            let shown: String = name.chars().take(40).collect();
            ApiError::bad_request(
                "invalid_value",
                format!("goal: expected HR, MRR or both, got {shown:?}"),
            )
        })?,
    };
    let Some(_running) = state.tuning_running.start(&site_id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tuning_running",
            format!("site {site_id} is being tuned or backtested already; retry when that ends"),
        ));
    };
    // A copy of every session: on a blocking thread, not the HTTP thread's.
    let (live, id) = (state.live.clone(), site_id.clone());
    let (sessions, times) = blocking(move || {
        let engine = live.read();
        (engine.site(&id))
            .map(|site| site.recommender().session_keys())
            .unwrap_or_default()
    })
    .await?;
    if sessions.len() < MIN_SESSIONS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_few_sessions",
            format!(
                "site {site_id} has {} view sessions; tuning needs at least {MIN_SESSIONS} \
                 (the built-in settings answer until then)",
                sessions.len()
            ),
        ));
    }
    tracing::info!(site_id = %site_id, sessions = sessions.len(), "tuning started");
    let count = sessions.len();
    let (next_item, report) =
        tokio::task::spawn_blocking(move || tune_next_item_at(&sessions, &times, TUNING_K, goal))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "tuning_failed",
                    "tuning stopped inside spoor; the server's log says where",
                )
            })?;
    let tuning = SiteTuning {
        next_item,
        tuned_at: now_ms(),
        sessions: count,
        report,
    };
    let (registry, id, kept) = (
        state.settings.tuning.clone(),
        site_id.clone(),
        tuning.clone(),
    );
    blocking(move || registry.set(&id, Some(kept))).await??;
    tracing::info!(
        site_id = %site_id,
        seconds = tuning.report.seconds,
        hit_rate = tuning.report.hit_rate,
        mrr = tuning.report.mrr,
        "tuning chosen"
    );
    Ok(Json(answer(site_id, Some(tuning))))
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
