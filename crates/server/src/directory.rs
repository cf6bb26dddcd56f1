//! The settings' site registry, seen by ingest as a [`SiteDirectory`]: ingest needs to
//! know which sites exist, and nothing else of their settings.

use std::sync::Arc;

use spoor_ingest::{DirectoryError, SiteDirectory};
use spoor_settings::{Registration, SettingsError, SiteRegistry};

pub struct RegisteredSites(pub Arc<SiteRegistry>);

impl SiteDirectory for RegisteredSites {
    fn is_registered(&self, site_id: &str) -> bool {
        self.0.contains(site_id)
    }

    fn register_imported(&self, site_id: &str, now_ms: i64) -> Result<bool, DirectoryError> {
        let (_, registration) =
            (self.0)
                .register(Some(site_id), None, now_ms)
                .map_err(|e| match e {
                    SettingsError::Invalid { message, .. } => DirectoryError::Invalid(message),
                    SettingsError::Storage { message, .. } => DirectoryError::Storage(message),
                })?;
        Ok(registration == Registration::Created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_sites_are_registered_once_and_bad_ids_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(SiteRegistry::open(dir.path()).unwrap());
        let sites = RegisteredSites(registry.clone());
        assert!(!sites.is_registered("S1"));
        assert!(sites.register_imported("S1", 1).unwrap(), "new");
        assert!(!sites.register_imported("S1", 2).unwrap(), "already there");
        assert!(sites.is_registered("S1"));
        assert!(
            SiteRegistry::open(dir.path()).unwrap().contains("S1"),
            "kept on disk"
        );
        assert!(matches!(
            sites.register_imported("bad id", 3),
            Err(DirectoryError::Invalid(_))
        ));
    }
}
