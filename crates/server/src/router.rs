//! Every route spoor serves, with its handler, in one place.

use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Router, middleware};

use crate::app::{AppState, Shared};
use crate::error::ApiError;
use crate::{
    access, admin, blocks, guesses, observe, operations, recommend, routes, state, tracker,
    triggers, tuning,
};

/// Every route spoor serves.
pub fn router(state: AppState) -> Router {
    let state: Shared = Arc::new(state);
    let open = Router::new()
        // The tracker API, as shops already call it.
        .route(routes::TRACK, post(tracker::track))
        .route(routes::TRACK_BATCH, post(tracker::track_batch))
        // Operations.
        .route(routes::HEALTHZ, get(operations::healthz))
        .route(routes::READYZ, get(operations::readyz))
        .route(routes::METRICS, get(operations::metrics_text))
        .route(routes::OPENAPI, get(operations::openapi));
    // Routes that take a key; an address that sends many refused keys waits.
    let keyed = Router::new()
        // Recommendations: public, but a contact number needs the site's key.
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
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guesses::guard,
        ));
    open.merge(keyed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(observe::ObserveLayer::new(state.clone()))
        .with_state(state)
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
        let document: serde_json::Value =
            serde_json::from_str(operations::OPENAPI_DOCUMENT).unwrap();
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
