//! Why an event was not stored.

use spoor_log::LogError;
use spoor_protocol::{EventKind, ProtocolError};

use crate::ingestor::KeyProblem;

/// What a client is told of a key its event needed: what was wrong, and what to send.
fn key_message(site_id: &str, event: EventKind, problem: KeyProblem) -> String {
    let needs = format!(
        "{}: site {site_id:?} takes these events only with its API key or the admin token \
         (`Authorization: Bearer <key>`; a Basic header is not read), or from its product \
         feed (its `productUpdates` setting)",
        event.as_str()
    );
    match problem {
        KeyProblem::Missing => format!("{needs}; none was sent"),
        KeyProblem::NotTheSites => format!("{needs}; the key sent is not it"),
        KeyProblem::TooManyRefused(wait) => format!(
            "{needs}; this address sent too many refused keys, retry in {} s",
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{error}")]
    Rejected {
        error: ProtocolError,
        /// The event's name, when the body got far enough to tell.
        event: Option<EventKind>,
        /// The registered site the event names, when it can be read.
        site_id: Option<String>,
    },
    #[error(
        "site {site_id:?} is not registered: register it with `spoor serve --site {site_id}` \
         or POST /admin/v1/sites {{\"siteId\": \"{site_id}\"}}"
    )]
    UnknownSite { site_id: String, event: EventKind },
    #[error(
        "this client sent site {site_id:?} more events than its ingest rate limit allows; \
         retry in {} ms", wait.as_millis().max(1)
    )]
    RateLimited {
        site_id: String,
        event: EventKind,
        wait: std::time::Duration,
    },
    #[error("{}", key_message(site_id, *event, *problem))]
    KeyRequired {
        site_id: String,
        event: EventKind,
        problem: KeyProblem,
    },
    #[error("{0}")]
    InvalidSite(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Storage(String),
}
