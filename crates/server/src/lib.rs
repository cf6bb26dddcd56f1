//! The HTTP edge of spoor. Translates requests into [`Ingestor`] calls and answers back;
//! every route, with its handler, is declared in [`router`].

pub mod access;
pub mod admin;
pub mod auth;
pub mod blocks;
pub mod body;
pub mod directory;
pub mod error;
pub mod metrics;
mod observe;
pub mod recommend;
pub mod state;
pub mod threads;
pub mod tracker;
pub mod triggers;
pub mod tuning;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use spoor_ingest::Ingestor;
use spoor_live::LiveState;
use spoor_log::EventLog;
use spoor_settings::Settings;

use crate::error::ApiError;
pub use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    /// The event log: the source of truth, read by exports and health checks.
    pub log: Arc<dyn EventLog>,
    /// Every site's settings: sites and keys, CORS and rate limits, blocks, tuning,
    /// triggers.
    pub settings: Arc<Settings>,
    /// The state derived from the log, kept current by its follower thread.
    pub live: Arc<LiveState>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Arc<str>,
    /// Rate limits of the public recommendations endpoint, per site and client.
    pub limiters: Arc<access::Limiters>,
    /// Take the client's address from `X-Forwarded-For` (spoor is behind a proxy).
    pub trust_forwarded_for: bool,
    pub tuning_running: Arc<tuning::Running>,
    /// The trigger firing and delivery loop.
    pub triggers: Arc<spoor_triggers::Triggers>,
    /// A runtime for requests whose work holds a thread for long (an import reads the
    /// whole log, or parses a feed of megabytes): each HTTP thread serves many
    /// connections (see [`threads`]), and none of them should wait behind an import.
    pub background: tokio::runtime::Handle,
}

impl AppState {
    /// Runs `work` on the [`AppState::background`] runtime and waits for it. The work goes
    /// on to its end even if the client hangs up meanwhile.
    pub async fn in_background<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.background.spawn(work).await.map_err(|error| {
            tracing::error!(%error, "background work of a request failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request's work stopped unexpectedly; the server's log says why",
            )
        })
    }
}

/// The handlers' state: one reference count per request instead of one per part.
pub(crate) type Shared = Arc<AppState>;

/// Route templates. Also the `route` label of request metrics: a fixed set, whatever path
/// a client sends.
mod routes {
    pub const TRACK: &str = "/api/v2";
    pub const TRACK_BATCH: &str = "/api/v2/batch";
    pub const RECOMMENDATIONS: &str = "/api/v2/recommendations";
    pub const SITES: &str = "/admin/v1/sites";
    pub const SITE_KEY: &str = "/admin/v1/sites/{site_id}/api-key";
    pub const SITE_SETTINGS: &str = "/admin/v1/sites/{site_id}/settings";
    pub const TUNING: &str = "/admin/v1/sites/{site_id}/tuning";
    pub const TRIGGER_SETTINGS: &str = "/admin/v1/sites/{site_id}/triggers";
    pub const TRIGGER_REPLAY: &str = "/admin/v1/sites/{site_id}/triggers/{trigger_id}/replay";
    pub const TRIGGERS_FIRED: &str = "/api/v1/sites/{site_id}/triggers";
    pub const FEED: &str = "/admin/v1/sites/{site_id}/feed";
    pub const BLOCKS: &str = "/admin/v1/sites/{site_id}/blocks";
    pub const BLOCK: &str = "/admin/v1/sites/{site_id}/blocks/{block_id}";
    pub const EXPORT: &str = "/admin/v1/events/export";
    pub const IMPORT: &str = "/admin/v1/events/import";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    pub const OPENAPI: &str = "/openapi.json";
    pub const SITE_STATE: &str = "/api/v1/sites/{site_id}";
    pub const CONTACT: &str = "/api/v1/sites/{site_id}/contacts";
    pub const CONTACT_EXPORT: &str = "/api/v1/sites/{site_id}/contacts/export";
    pub const PRODUCT: &str = "/api/v1/sites/{site_id}/products/{product_key}";
    pub const BLOCK_STATS: &str = "/api/v1/sites/{site_id}/blocks/{block_id}/stats";
    pub const ALL: [&str; 24] = [
        TRACK,
        TRACK_BATCH,
        RECOMMENDATIONS,
        SITES,
        SITE_KEY,
        SITE_SETTINGS,
        TUNING,
        TRIGGER_SETTINGS,
        TRIGGER_REPLAY,
        TRIGGERS_FIRED,
        FEED,
        BLOCKS,
        BLOCK,
        EXPORT,
        IMPORT,
        HEALTHZ,
        READYZ,
        METRICS,
        OPENAPI,
        SITE_STATE,
        CONTACT,
        CONTACT_EXPORT,
        PRODUCT,
        BLOCK_STATS,
    ];
}

/// Every route spoor serves.
pub fn router(state: AppState) -> Router {
    let state: Shared = Arc::new(state);
    Router::new()
        // The tracker API, as shops already call it.
        .route(routes::TRACK, post(tracker::track))
        .route(routes::TRACK_BATCH, post(tracker::track_batch))
        // Recommendations: public, like the tracker API.
        .route(
            routes::RECOMMENDATIONS,
            get(recommend::recommendations).options(recommend::preflight),
        )
        // Administration: admin token required.
        .route(
            routes::SITES,
            get(admin::list_sites).post(admin::create_site),
        )
        .route(routes::SITE_KEY, post(admin::issue_api_key))
        .route(
            routes::TRIGGER_SETTINGS,
            get(triggers::get_settings).put(triggers::put_settings),
        )
        .route(routes::TRIGGER_REPLAY, post(triggers::replay))
        .route(routes::TRIGGERS_FIRED, get(triggers::list_fired))
        .route(
            routes::TUNING,
            get(tuning::get_tuning)
                .post(tuning::tune)
                .delete(tuning::forget_tuning),
        )
        .route(
            routes::SITE_SETTINGS,
            get(access::get_settings).put(access::put_settings),
        )
        .route(routes::FEED, post(admin::import_feed))
        .route(routes::BLOCKS, get(blocks::list_blocks))
        .route(
            routes::BLOCK,
            get(blocks::get_block)
                .put(blocks::put_block)
                .delete(blocks::delete_block),
        )
        .route(routes::EXPORT, get(admin::export_events))
        .route(routes::IMPORT, post(admin::import_events))
        // The state derived from the log: admin token required.
        .route(routes::SITE_STATE, get(state::site))
        .route(
            routes::CONTACT,
            get(state::contact).delete(state::erase_contact),
        )
        .route(routes::CONTACT_EXPORT, get(state::export_contact))
        .route(routes::PRODUCT, get(state::product))
        .route(routes::BLOCK_STATS, get(blocks::block_stats))
        // Operations.
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .route(routes::METRICS, get(metrics_text))
        .route(routes::OPENAPI, get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(observe::ObserveLayer::new(state.clone()))
        .with_state(state)
}

/// The current time in milliseconds since the epoch: the receive time of an event.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Ready while the log accepts writes; 503 after a failed write or fsync.
async fn readyz(State(state): State<Shared>) -> Response {
    if state.log.is_healthy() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable(
            "the event log refuses writes after a failed write or fsync; restart spoor",
        )
        .into_response()
    }
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let log = &state.log;
    let lag = log.end().saturating_sub(state.live.applied());
    let text = state.metrics.render(
        log.size_bytes(),
        log.end(),
        state.ingestor.dedup_sizes(),
        lag,
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Every route, described: kept true by a test that compares it with the router.
const OPENAPI_DOCUMENT: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI_DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; the tracker endpoint is POST /api/v2",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes_served() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
        let documented: std::collections::BTreeSet<&str> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let served: std::collections::BTreeSet<&str> = routes::ALL.into_iter().collect();
        assert_eq!(documented, served);
    }
}
