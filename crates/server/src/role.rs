//! What a node does when several share one log: take events, hold the state, or both.
//! A route this node's role does not serve is answered 421 with where to go instead, so
//! that a load balancer's mistake is plain from the answer.

use axum::http::{Method, StatusCode, Uri};

use crate::error::ApiError;
use crate::routes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes events and holds the state: one node alone, or every node alike.
    #[default]
    All,
    /// Takes tracker events (and feeds, imports) and appends them; holds no state.
    Ingest,
    /// Follows the log, holds the state, answers reads, recommendations, the dashboard;
    /// takes no events.
    Engine,
}

/// Which nodes answer a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Appends events: ingest nodes.
    Events,
    /// Reads the state (or the log as a whole): engine nodes.
    State,
    /// Operations, the script and the shared settings: every node.
    Any,
}

fn side(path: &str) -> Side {
    match path {
        routes::TRACK | routes::TRACK_BATCH | routes::FEED | routes::IMPORT => Side::Events,
        routes::HEALTHZ
        | routes::READYZ
        | routes::METRICS
        | routes::OPENAPI
        | routes::SCRIPT
        | routes::SCRIPT_AT_VENDOR_PATH
        | routes::SITES
        | routes::SITE_KEY
        | routes::SITE_SETTINGS
        | routes::TRIGGER_SETTINGS
        | routes::BLOCKS
        | routes::BLOCK => Side::Any,
        // What is not named (the tuning, the dashboard's pages) reads the state.
        _ => Side::State,
    }
}

impl Role {
    pub fn takes_events(self) -> bool {
        self != Role::Engine
    }

    pub fn holds_state(self) -> bool {
        self != Role::Ingest
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Engine => "engine",
        }
    }

    /// Whether a node of this role answers the route `path` (a template of [`routes`]).
    pub fn serves(self, path: &str) -> bool {
        match side(path) {
            Side::Events => self.takes_events(),
            Side::State => self.holds_state(),
            Side::Any => true,
        }
    }
}

/// The answer of a route the node's role does not serve.
pub async fn elsewhere(role: Role, method: Method, uri: Uri) -> ApiError {
    let go = match role {
        Role::Ingest => "an engine node (--role engine or all), which holds the state",
        Role::Engine | Role::All => "an ingest node (--role ingest or all), which takes events",
    };
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "wrong_role",
        format!(
            "this node runs --role {}: {method} {} is answered by {go}",
            role.name(),
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_nodes_take_events_engine_nodes_answer_reads_and_both_share_settings() {
        assert!(Role::Ingest.serves(routes::TRACK) && !Role::Engine.serves(routes::TRACK));
        assert!(!Role::Ingest.serves(routes::RECOMMENDATIONS));
        assert!(Role::Engine.serves(routes::RECOMMENDATIONS));
        assert!(Role::Ingest.serves(routes::BLOCK) && Role::Engine.serves(routes::BLOCK));
        assert!(!Role::Ingest.serves("/ui/sites/{site_id}/overview"));
        for path in crate::router::paths() {
            assert!(Role::All.serves(path), "{path}");
            assert!(
                Role::Ingest.serves(path) || Role::Engine.serves(path),
                "no role serves {path}"
            );
        }
    }
}
