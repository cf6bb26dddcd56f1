//! The HTTP edge of spoor. Translates requests into calls on spoor's parts (ingest, the
//! live state, the settings, the triggers) and answers back; every route, with its
//! handler, is declared in [`router()`].

pub mod access;
pub mod admin;
mod app;
pub mod auth;
pub mod blocks;
pub mod body;
pub mod directory;
pub mod error;
mod extract;
#[cfg(feature = "fault-injection")]
mod fault;
pub mod guesses;
pub mod metrics;
mod observe;
mod operations;
mod rate_limits;
pub mod recommend;
pub mod refusals;
pub mod role;
mod router;
mod routes;
pub mod script;
pub mod state;
pub mod threads;
pub mod tracker;
pub mod triggers;
pub mod tuning;
pub mod ui;
pub mod vectors;

pub use app::{AppState, now_ms};
pub use metrics::Metrics;
pub use role::Role;
pub use router::{paths as route_paths, router};
