//! The settings' site registry, seen by ingest as a [`SiteDirectory`]: ingest needs to
//! know which sites exist, and nothing else of their settings.

use std::sync::Arc;

use spoor_ingest::SiteDirectory;
use spoor_settings::{Registration, SiteRegistry};

pub struct RegisteredSites(pub Arc<SiteRegistry>);

impl SiteDirectory for RegisteredSites {
    fn is_registered(&self, site_id: &str) -> bool {
        self.0.contains(site_id)
    }

    fn register_imported(&self, site_id: &str, now_ms: i64) -> Result<bool, String> {
        let (_, registration) = (self.0)
            .register(Some(site_id), None, now_ms)
            .map_err(|e| e.to_string())?;
        Ok(registration == Registration::Created)
    }
}
