//! The registered sites: events for any other siteId are refused.
//!
//! Kept in `sites.json` in the data directory, rewritten atomically (temporary file, fsync,
//! rename, fsync of the directory) on every change, so a crash leaves the old or the new
//! list, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::IngestError;

const FILE_NAME: &str = "sites.json";
const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub site_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct SitesFile {
    sites: Vec<Site>,
}

pub struct SiteRegistry {
    path: PathBuf,
    sites: RwLock<BTreeMap<String, Site>>,
}

/// Whether [`SiteRegistry::register`] added the site or found it there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    Existing,
}

impl SiteRegistry {
    pub fn open(data_dir: &Path) -> Result<Self, IngestError> {
        let path = data_dir.join(FILE_NAME);
        let sites = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<SitesFile>(&bytes)
                    .map_err(|e| {
                        IngestError::Storage(format!("{} is not valid: {e}", path.display()))
                    })?
                    .sites
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(IngestError::Storage(format!(
                    "read {}: {e}",
                    path.display()
                )));
            }
        };
        let sites = sites.into_iter().map(|s| (s.site_id.clone(), s)).collect();
        Ok(SiteRegistry {
            path,
            sites: RwLock::new(sites),
        })
    }

    pub fn contains(&self, site_id: &str) -> bool {
        self.sites.read().expect("sites lock").contains_key(site_id)
    }

    pub fn get(&self, site_id: &str) -> Option<Site> {
        self.sites.read().expect("sites lock").get(site_id).cloned()
    }

    pub fn list(&self) -> Vec<Site> {
        self.sites
            .read()
            .expect("sites lock")
            .values()
            .cloned()
            .collect()
    }

    /// Registers a site; with no id, a fresh 7-character hex id (`8A412DC`) is generated.
    /// Registering an existing id changes nothing and says so.
    pub fn register(
        &self,
        site_id: Option<&str>,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<(Site, Registration), IngestError> {
        let mut sites = self.sites.write().expect("sites lock");
        let site_id = match site_id {
            Some(id) => {
                validate_site_id(id)?;
                id.to_string()
            }
            None => fresh_site_id(&sites)?,
        };
        if let Some(existing) = sites.get(&site_id) {
            return Ok((existing.clone(), Registration::Existing));
        }
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(&site_id);
        if name.chars().count() > MAX_NAME_LEN {
            return Err(IngestError::InvalidSite(format!(
                "name: expected at most {MAX_NAME_LEN} characters"
            )));
        }
        let site = Site {
            site_id: site_id.clone(),
            name: name.to_string(),
            created_at: now_ms,
        };
        sites.insert(site_id, site.clone());
        self.persist(&sites)?;
        Ok((site, Registration::Created))
    }

    fn persist(&self, sites: &BTreeMap<String, Site>) -> Result<(), IngestError> {
        let file = SitesFile {
            sites: sites.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("sites serialise");
        write_atomically(&self.path, &bytes)
            .map_err(|e| IngestError::Storage(format!("write {}: {e}", self.path.display())))
    }
}

/// Site ids are what shops already use with the vendor: short, printable, no spaces.
fn validate_site_id(id: &str) -> Result<(), IngestError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IngestError::InvalidSite(format!(
            "siteId: expected 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.', got {id:?}"
        )))
    }
}

fn fresh_site_id(existing: &BTreeMap<String, Site>) -> Result<String, IngestError> {
    for _ in 0..64 {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| IngestError::Storage(format!("random: {e}")))?;
        let id = format!("{:07X}", u32::from_le_bytes(bytes) & 0x0FFF_FFFF);
        if !existing.contains_key(&id) {
            return Ok(id);
        }
    }
    Err(IngestError::Storage("could not find a free site id".into()))
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SiteRegistry::open(dir.path()).unwrap();
        let (site, how) = registry.register(Some("8A412DC"), Some("Shop"), 1).unwrap();
        assert_eq!((site.name.as_str(), how), ("Shop", Registration::Created));
        let (_, how) = registry
            .register(Some("8A412DC"), Some("Other"), 2)
            .unwrap();
        assert_eq!(how, Registration::Existing);
        let (generated, _) = registry.register(None, None, 3).unwrap();
        assert_eq!(generated.site_id.len(), 7);
        assert!(
            generated
                .site_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );

        let reopened = SiteRegistry::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 2);
        assert_eq!(reopened.get("8A412DC").unwrap().name, "Shop");
        assert!(registry.register(Some("bad id"), None, 4).is_err());
    }
}
