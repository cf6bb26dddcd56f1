//! Per-site settings, in one home: what a shop configures rather than what its visitors
//! do. Settings are not events: they are kept in files of their own in the data directory
//! (each read whole at start and rewritten atomically on each change, see [`file`]), not
//! in the log, and a state rebuild leaves them alone. On a log that several nodes share
//! (Kafka) they are shared too, through a compacted table beside it ([`sharing`]), and the
//! files are each node's copy.
//!
//! | file | what | type |
//! | --- | --- | --- |
//! | `sites.json` | registered sites, CORS origins, rate limits | [`sites::SiteRegistry`] |
//! | `api-keys.json` | each site's API key digest (SHA-256) | [`sites::SiteRegistry`] |
//! | `blocks.json` | recommendation blocks, their rules and A/B variants | [`blocks::BlockRegistry`] |
//! | `tuning.json` | next-item settings tuned on a site's own sessions | [`tuning::TuningRegistry`] |
//! | `triggers.json` | trigger types, delays, quiet hours, webhooks | [`triggers::TriggerRegistry`] |

pub mod blocks;
mod error;
pub mod file;
pub mod sharing;
pub mod sites;
pub mod triggers;
pub mod tuning;

use std::path::Path;
use std::sync::Arc;

pub use blocks::{Block, BlockRegistry, PageType, Placement, Position};
pub use error::{Setting, SettingsError};
pub use sharing::Sharing;
pub use sites::{
    ConsentMode, ProductUpdates, RateLimit, Registration, Site, SiteRegistry, SiteSettings,
};
pub use triggers::{TriggerRegistry, TriggerSettings, Webhook};
pub use tuning::{SiteTuning, TuningRegistry};

/// Every site's settings, opened together from the data directory; each shared with the
/// parts that use it (the trigger runner holds the trigger settings).
#[derive(Clone)]
pub struct Settings {
    pub sites: Arc<SiteRegistry>,
    pub blocks: Arc<BlockRegistry>,
    pub tuning: Arc<TuningRegistry>,
    pub triggers: Arc<TriggerRegistry>,
}

impl Settings {
    pub fn open(data_dir: &Path) -> Result<Settings, SettingsError> {
        Ok(Settings {
            sites: Arc::new(SiteRegistry::open(data_dir)?),
            blocks: Arc::new(BlockRegistry::open(data_dir)?),
            tuning: Arc::new(TuningRegistry::open(data_dir)?),
            triggers: Arc::new(TriggerRegistry::open(data_dir)?),
        })
    }
}
