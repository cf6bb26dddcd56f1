//! The tracker wire contract: what shops post to `/api/v2`, parsed leniently into typed
//! events and validated with messages that name the offending field. No I/O lives here.
//!
//! ```
//! let body = br#"{"GeneralInfo": {"eventName": "CategoryPage", "siteId": "8A412DC",
//!                  "cookies": {"sc": "abc"}}, "CategoryPage": {"Category": {"categoryKey": "7"}}}"#;
//! let parsed = spoor_protocol::parse_request(body, 1_700_000_000_000).unwrap();
//! assert!(matches!(parsed, spoor_protocol::Incoming::Event(_)));
//! ```

pub mod batch;
pub mod dates;
pub mod error;
pub mod event;
pub mod feed;
pub mod identity;
pub mod ids;
pub mod json;
pub mod parse;
pub mod reader;
pub mod retries;
pub mod sealing;
pub mod stored;
mod tags;
mod text;
pub mod tree;

pub use error::{ErrorCode, ProtocolError};
pub use event::*;
pub use parse::{parse_request, parse_tree, parse_value};
