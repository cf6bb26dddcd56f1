//! Triggers over HTTP: a site's trigger settings and webhooks, the fired triggers with
//! their delivery state (the pull API), and replaying dead letters.

use crate::body::SettingsBody;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spoor_settings::TriggerSettings;
use spoor_triggers::TriggerError;
use spoor_triggers::outbox::{DeliveryStatus, Entry};
use spoor_triggers::payload::payload;

use crate::app::{Shared, blocking, now_ms};
use crate::auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::{enter, known_site};

impl From<TriggerError> for ApiError {
    fn from(error: TriggerError) -> ApiError {
        let TriggerError::Storage(message) = error;
        tracing::error!(%message, "trigger storage failed");
        ApiError::unavailable(
            "the trigger store could not be written; nothing changed, retry later",
        )
    }
}

const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1_000;

/// `GET /admin/v1/sites/{siteId}/triggers`: the settings in force (webhook secrets left
/// out).
pub async fn get_settings(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<Json<TriggerSettings>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    Ok(Json(
        state.settings.triggers.get(&site_id).without_secrets(),
    ))
}

/// `PUT /admin/v1/sites/{siteId}/triggers`: the whole settings; fields left out take
/// their defaults, and a webhook sent without its secret keeps the one it had.
pub async fn put_settings(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    SettingsBody(body): SettingsBody,
) -> Result<Json<TriggerSettings>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let mut json = serde_json::Deserializer::from_slice(&body);
    let settings: TriggerSettings = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request("invalid_settings", format!("{path}: {}", e.into_inner()))
    })?;
    for (i, webhook) in settings.webhooks.iter().enumerate() {
        if let Err(refusal) = state.targets.check(&webhook.url).await {
            let message = format!("webhooks[{i}].url: {refusal}");
            return Err(ApiError::bad_request("invalid_settings", message));
        }
    }
    let (triggers, id) = (state.settings.triggers.clone(), site_id.clone());
    blocking(move || triggers.set(&id, settings)).await??;
    tracing::info!(site_id = %site_id, "trigger settings changed");
    Ok(Json(
        state.settings.triggers.get(&site_id).without_secrets(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FiredList {
    triggers: Vec<FiredView>,
    /// How long a trigger whose deliveries are all delivered or dead stays listed after
    /// its last attempt, in days (the site's `retentionDays`, or longer where its timers
    /// wait longer).
    kept_after_settled_days: f64,
}

#[derive(Serialize)]
struct FiredView {
    #[serde(flatten)]
    entry: Entry,
    /// What a delivery would carry now; absent once the contact is no longer held.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
}

/// `GET /api/v1/sites/{siteId}/triggers?status=pending|delivered|dead&limit=`: fired
/// triggers, newest first, with each webhook's delivery state and the payload: for shops
/// that pull rather than receive.
pub async fn list_fired(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<FiredList>, ApiError> {
    enter(&state, &headers, &site_id, query.after).await?;
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("dead") => Some(DeliveryStatus::Dead),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("status: expected pending, delivered or dead, got {other:?}"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
    let keep_ms = state.settings.triggers.get(&site_id).keep_settled_ms();
    let entries = state.triggers.outbox().list(&site_id, status, limit);
    let now = now_ms();
    let tuned = state.settings.tuning.get(&site_id);
    let engine = state.live.read();
    let triggers = entries
        .into_iter()
        .map(|entry| FiredView {
            payload: engine
                .site(&site_id)
                .and_then(|site| payload(site, &entry.fired, now, tuned.as_deref())),
            entry,
        })
        .collect();
    Ok(Json(FiredList {
        triggers,
        kept_after_settled_days: keep_ms as f64 / 86_400_000.0,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    pub(crate) webhook: String,
}

/// `POST /admin/v1/sites/{siteId}/triggers/{triggerId}/replay?webhook=ID`: a dead letter
/// is owed again, from its first attempt.
pub async fn replay(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, trigger_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<StatusCode, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let owned_by_site =
        (state.triggers.outbox()).is_dead_letter(&site_id, &trigger_id, &query.webhook);
    let replayed = owned_by_site
        && state
            .triggers
            .outbox()
            .replay(&trigger_id, &query.webhook, now_ms())
            .await?;
    if replayed {
        tracing::info!(site_id = %site_id, webhook = %query.webhook, "dead letter replayed");
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_dead_letter",
            format!(
                "no dead letter {trigger_id:?} for webhook {:?} of site {site_id}; list them \
                 with GET /api/v1/sites/{site_id}/triggers?status=dead",
                query.webhook
            ),
        ))
    }
}
