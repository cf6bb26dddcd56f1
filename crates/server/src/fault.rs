//! Faults on request, for the tests of what a panic does: compiled only into builds with
//! the `fault-injection` feature (which the tests of the `spoor` binary turn on, and
//! `cargo build` does not), and active only when spoor starts with
//! `SPOOR_FAULT_INJECTION=1`. A request with
//! `Spoor-Fault: panic` panics in its handling; `Spoor-Fault: follower` makes the state's
//! follower panic the next time it applies records.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::app::Shared;

/// `routes`, with the fault switch when the environment asks for it.
pub fn layer(routes: Router<Shared>) -> Router<Shared> {
    if std::env::var_os("SPOOR_FAULT_INJECTION").is_some_and(|v| v == "1") {
        tracing::warn!("fault injection is on: requests may ask for panics");
        routes.layer(middleware::from_fn(inject))
    } else {
        routes
    }
}

async fn inject(request: Request, next: Next) -> Response {
    match request.headers().get("spoor-fault").map(|v| v.as_bytes()) {
        Some(b"panic") => panic!("a request panic injected by a test"),
        Some(b"follower") => spoor_live::fault::panic_next_apply(),
        _ => {}
    }
    next.run(request).await
}
