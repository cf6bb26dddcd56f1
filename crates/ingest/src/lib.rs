//! From request bytes to a durable log record.
//!
//! [`Ingestor`] parses and validates each event (`spoor_protocol`), refuses sites that are
//! not registered, recognises retries and repeated orders, and appends the rest to the
//! [`EventLog`]; it answers only once the records are durable. It knows nothing of HTTP:
//! the server hands it bytes and a receive time.

pub mod dedup;
mod error;
pub mod export;
mod feed;
mod import;
mod ingestor;
mod recovery;
mod scan;
mod sites;
mod unsettled;

pub use error::IngestError;
pub use feed::{FEED_ITEMS_PER_RECORD, FeedSummary};
pub use ingestor::{Accepted, Admit, Ingestor, KeyProblem, Outcome, Refusal, request_hash};
pub use scan::scan_from;
pub use sites::{DirectoryError, SiteDirectory};
