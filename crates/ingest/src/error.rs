//! Why an event was not stored.

use spoor_log::LogError;
use spoor_protocol::{EventKind, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{error}")]
    Rejected {
        error: ProtocolError,
        /// The event's name, when the body got far enough to tell.
        event: Option<EventKind>,
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
    #[error("{0}")]
    InvalidSite(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Storage(String),
}
