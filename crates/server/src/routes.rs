//! Route templates. Also the `route` label of request metrics: a fixed set, whatever path
//! a client sends.

pub const TRACK: &str = "/api/v2";
pub const TRACK_BATCH: &str = "/api/v2/batch";
/// The browser script: `/js/<siteId>.js`, the loader snippet's shape.
pub const SCRIPT: &str = "/js/{file}";
/// The same script at the vendor's path, for a loader snippet whose host alone changed.
pub const SCRIPT_AT_VENDOR_PATH: &str = "/scripts/{file}";
pub const RECOMMENDATIONS: &str = "/api/v2/recommendations";
pub const SITES: &str = "/admin/v1/sites";
pub const SITE_KEY: &str = "/admin/v1/sites/{site_id}/api-key";
pub const SITE_SETTINGS: &str = "/admin/v1/sites/{site_id}/settings";
pub const TUNING: &str = "/admin/v1/sites/{site_id}/tuning";
pub const TRIGGER_SETTINGS: &str = "/admin/v1/sites/{site_id}/triggers";
pub const TRIGGER_REPLAY: &str = "/admin/v1/sites/{site_id}/triggers/{trigger_id}/replay";
pub const TRIGGERS_FIRED: &str = "/api/v1/sites/{site_id}/triggers";
pub const FEED: &str = "/admin/v1/sites/{site_id}/feed";
pub const BLOCKS: &str = "/admin/v1/sites/{site_id}/blocks";
pub const BLOCK: &str = "/admin/v1/sites/{site_id}/blocks/{block_id}";
pub const BLOCK_BACKTEST: &str = "/admin/v1/sites/{site_id}/blocks/{block_id}/backtest";
pub const EXPORT: &str = "/admin/v1/events/export";
pub const IMPORT: &str = "/admin/v1/events/import";
pub const STATE_SNAPSHOT: &str = "/admin/v1/state/snapshot";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";
pub const OPENAPI: &str = "/openapi.json";
pub const SITE_STATE: &str = "/api/v1/sites/{site_id}";
pub const CONTACT: &str = "/api/v1/sites/{site_id}/contacts";
pub const CONTACT_EXPORT: &str = "/api/v1/sites/{site_id}/contacts/export";
pub const PRODUCT: &str = "/api/v1/sites/{site_id}/products/{product_key}";
pub const BLOCK_STATS: &str = "/api/v1/sites/{site_id}/blocks/{block_id}/stats";
