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
    #[error(
        "{}: site {site_id:?} takes these events only with its API key \
         (`Authorization: Bearer <key>`), or from its product feed; see its \
         `productUpdates` setting", .event.as_str()
    )]
    KeyRequired { site_id: String, event: EventKind },
    #[error("{0}")]
    InvalidSite(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Storage(String),
}
