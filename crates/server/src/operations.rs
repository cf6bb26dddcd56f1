//! The operator's routes: liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::Shared;
use crate::error::ApiError;

pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Ready while the log accepts writes; 503 after a failed write or fsync.
pub async fn readyz(State(state): State<Shared>) -> Response {
    if state.live.failed() {
        return ApiError::unavailable(
            "the state's follower stopped after a panic; spoor is stopping so that it \
             restarts from its snapshot and log",
        )
        .into_response();
    }
    // An engine node behind a load balancer takes reads only once it holds the whole
    // state; a node that also takes events is ready at once, so events are never refused
    // while it replays.
    if state.role == crate::Role::Engine && !state.live.is_current() {
        return ApiError::unavailable(format!(
            "catching up with the log: {} of {} records applied",
            state.live.applied(),
            state.log.end()
        ))
        .into_response();
    }
    // Without its keys, no event with an identifier can be taken.
    let keys = (state.ingestor.sealing_keys()).or_else(|| state.live.keys());
    if let Some(Err(error)) = keys.map(|keys| keys.health()) {
        return ApiError::unavailable(error.to_string()).into_response();
    }
    match state.log.health() {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(error) => ApiError::unavailable(error.to_string()).into_response(),
    }
}

pub async fn metrics_text(State(state): State<Shared>) -> Response {
    let log = &state.log;
    // A node without the state has no lag to tell.
    let lag = if state.role.holds_state() {
        log.end().saturating_sub(state.live.applied())
    } else {
        0
    };
    let text = state.metrics.render(
        log.size_bytes(),
        log.end(),
        state.ingestor.dedup_size(),
        (state.ingestor.sealing_keys())
            .or_else(|| state.live.keys())
            .map_or(0, |keys| keys.len()),
        state.role.holds_state() && state.triggers.outbox().sends(),
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
pub const OPENAPI_DOCUMENT: &str = include_str!("../openapi.json");

pub async fn openapi() -> Response {
    let mut response = OPENAPI_DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
