//! Every route spoor serves, with its handler, in one place.

use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::{AppState, Shared};
use crate::error::ApiError;
use crate::role::{self, Role};
use crate::{
    access, admin, blocks, guesses, observe, operations, recommend, routes, script, state, tracker,
    triggers, tuning,
};

/// Routes as the router is built from them: a path and its methods' handlers.
type Routes = Vec<(&'static str, MethodRouter<Shared>)>;

/// Routes that take no key.
fn open_routes() -> Routes {
    vec![
        // The tracker API, as shops already call it; pages' scripts read its answers.
        (
            routes::TRACK,
            post(tracker::track).layer(middleware::map_response(tracker::readable_anywhere)),
        ),
        (
            routes::TRACK_BATCH,
            post(tracker::track_batch).layer(middleware::map_response(tracker::readable_anywhere)),
        ),
        // The browser script.
        (routes::SCRIPT, get(script::script)),
        (routes::SCRIPT_AT_VENDOR_PATH, get(script::script)),
        // Operations.
        (routes::HEALTHZ, get(operations::healthz)),
        (routes::READYZ, get(operations::readyz)),
        (routes::METRICS, get(operations::metrics_text)),
        (routes::OPENAPI, get(operations::openapi)),
    ]
}

/// Routes that take a key (an address that sends many refused keys waits).
fn keyed_routes() -> Routes {
    vec![
        // Recommendations: public, but a contact number needs the site's key.
        (
            routes::RECOMMENDATIONS,
            get(recommend::recommendations).options(recommend::preflight),
        ),
        // Administration: admin token required.
        (
            routes::SITES,
            get(admin::list_sites).post(admin::create_site),
        ),
        (routes::SITE_KEY, post(admin::issue_api_key)),
        (
            routes::TRIGGER_SETTINGS,
            get(triggers::get_settings).put(triggers::put_settings),
        ),
        (routes::TRIGGER_REPLAY, post(triggers::replay)),
        (routes::TRIGGERS_FIRED, get(triggers::list_fired)),
        (
            routes::TUNING,
            get(tuning::get_tuning)
                .post(tuning::tune)
                .delete(tuning::forget_tuning),
        ),
        (
            routes::SITE_SETTINGS,
            get(access::get_settings).put(access::put_settings),
        ),
        (routes::FEED, post(admin::import_feed)),
        (routes::BLOCKS, get(blocks::list_blocks)),
        (
            routes::BLOCK,
            get(blocks::get_block)
                .put(blocks::put_block)
                .delete(blocks::delete_block),
        ),
        (routes::BLOCK_BACKTEST, post(blocks::backtest)),
        (routes::EXPORT, get(admin::export_events)),
        (routes::IMPORT, post(admin::import_events)),
        (
            routes::STATE_SNAPSHOT,
            post(admin::save_snapshot).get(admin::send_snapshot),
        ),
        // The state derived from the log: a key required.
        (routes::SITE_STATE, get(state::site)),
        (
            routes::CONTACT,
            get(state::contact).delete(state::erase_contact),
        ),
        (routes::CONTACT_EXPORT, get(state::export_contact)),
        (routes::PRODUCT, get(state::product)),
        (routes::BLOCK_STATS, get(blocks::block_stats)),
    ]
}

/// The path of every API route served, read from the tables the router is built from:
/// what the OpenAPI document is checked against.
pub fn paths() -> Vec<&'static str> {
    (open_routes().into_iter().chain(keyed_routes()))
        .map(|(path, _)| path)
        .collect()
}

/// The API's paths and the dashboard's (HTML pages, outside the OpenAPI document): the
/// labels of request metrics.
fn labelled_paths() -> Vec<&'static str> {
    let dashboard = crate::ui::routes().into_iter().map(|(path, _)| path);
    paths().into_iter().chain(dashboard).collect()
}

/// Adds `routes`; one this node's role does not serve answers where to go instead.
fn add(router: Router<Shared>, routes: Routes, role: Role) -> Router<Shared> {
    (routes.into_iter()).fold(router, |router, (path, methods)| {
        if role.serves(path) {
            router.route(path, methods)
        } else {
            router.route(
                path,
                any(move |method, uri| role::elsewhere(role, method, uri)),
            )
        }
    })
}

/// Every route spoor serves.
pub fn router(state: AppState) -> Router {
    let role = state.role;
    let state: Shared = Arc::new(state);
    let open = add(Router::new(), open_routes(), role);
    let keyed = add(Router::new(), keyed_routes(), role).route_layer(
        middleware::from_fn_with_state(state.clone(), guesses::guard),
    );
    let dashboard = add(Router::new(), crate::ui::routes(), role)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ui::same_origin,
        ))
        .layer(middleware::from_fn(crate::ui::timed));
    let routes = open
        .merge(keyed)
        .merge(dashboard)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    #[cfg(feature = "fault-injection")]
    let routes = crate::fault::layer(routes);
    routes
        // Inside the metrics: a panic is counted as the 500 it is answered with.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(observe::ObserveLayer::new(state.clone(), labelled_paths()))
        .with_state(state)
}

/// A request whose handling panicked: answered 500 alone, the server goes on. The panic's
/// message is logged only when it is fixed text (a formatted one may quote a request).
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = payload
        .downcast_ref::<&'static str>()
        .copied()
        .unwrap_or("(a formatted message, not logged)");
    tracing::error!(
        panic = message,
        "a request's handling panicked; answered 500"
    );
    axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "spoor failed inside while answering this request, and logged it; what the request \
         asked may not have been done: retry it",
    ))
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
        let served: std::collections::BTreeSet<&str> = paths().into_iter().collect();
        assert_eq!(documented, served);
        assert_eq!(served.len(), paths().len(), "a path is routed twice");
    }
}
