//! The registered sites: events for any other siteId are refused.
//!
//! Kept in `sites.json` in the data directory, rewritten atomically (temporary file, fsync,
//! rename, fsync of the directory) on every change, so a crash leaves the old or the new
//! list, never a torn one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Setting, SettingsError};
use crate::file::{Codec, SettingsFile, SharedFile};

const FILE_NAME: &str = "sites.json";
const KEYS_FILE_NAME: &str = "api-keys.json";
const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub site_id: String,
    pub name: String,
    pub created_at: i64,
}

/// How a site's public recommendations endpoint may be called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSettings {
    /// The origins whose pages may read answers from the browser (CORS): `"*"` for any,
    /// or exact origins such as `"https://shop.example"`.
    #[serde(default = "any_origin")]
    pub cors_origins: Vec<String>,
    /// Requests per client address; `null` for no limit (a shop calling from its own
    /// servers, say).
    #[serde(default = "default_rate_limit")]
    pub rate_limit: Option<RateLimit>,
    /// Tracker events (`POST /api/v2`, each event of a batch) per client address; `null`
    /// (the default) for no limit, since a shop's own server posts for every visitor from
    /// one address.
    #[serde(default)]
    pub ingest_rate_limit: Option<RateLimit>,
    /// The shop sends an email, phone or customer id with a visitor's `sc` cookie only
    /// once the visitor proved it theirs (signed in): a cookie then gets its contact's
    /// history on the public recommendations route whatever else names the contact. Off
    /// by default, since anyone can post their cookie beside someone else's email; then
    /// only a contact named by that cookie alone is shown to it.
    #[serde(default)]
    pub trust_identity_links: bool,
    /// Whether the browser script waits for the visitor's consent (`eS('consent', true)`)
    /// before it sets a cookie or sends anything.
    #[serde(default)]
    pub consent: ConsentMode,
    /// The browser script sends nothing for a visitor whose browser sends the Global
    /// Privacy Control signal.
    #[serde(default)]
    pub honour_global_privacy_control: bool,
    /// Who may change the site's catalogue through the tracker (`ProductUpdate`).
    #[serde(default)]
    pub product_updates: ProductUpdates,
}

/// Who may send a site's `ProductUpdate` events to the tracker. The tracker takes
/// events without a key (the vendor's contract); a product's name, picture and page
/// then come from anyone, and the browser script shows them in placed blocks. A shop
/// whose catalogue comes from its feed or its servers can keep it theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProductUpdates {
    /// Any client, as the vendor's tracker.
    #[default]
    Anyone,
    /// Only requests with the site's API key (or the admin token) as
    /// `Authorization: Bearer`; feeds are keyed already.
    WithKey,
}

/// When the browser script may track a visitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsentMode {
    /// From the first page: the shop has its visitors' consent by other means, or needs
    /// none.
    #[default]
    NotRequired,
    /// Only once the page calls `eS('consent', true)`; the grant is remembered in a
    /// first-party cookie until withdrawn.
    Required,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

fn any_origin() -> Vec<String> {
    vec!["*".into()]
}

/// A page shows a few blocks and a visitor opens a few pages a second at most; an office
/// behind one address holds many visitors.
fn default_rate_limit() -> Option<RateLimit> {
    Some(RateLimit {
        per_second: 50,
        burst: 200,
    })
}

impl Default for SiteSettings {
    fn default() -> Self {
        SiteSettings {
            cors_origins: any_origin(),
            rate_limit: default_rate_limit(),
            ingest_rate_limit: None,
            trust_identity_links: false,
            consent: ConsentMode::NotRequired,
            honour_global_privacy_control: false,
            product_updates: ProductUpdates::Anyone,
        }
    }
}

impl SiteSettings {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if origin != "*" && !is_origin(origin) {
                return Err(SettingsError::invalid(
                    Setting::Site,
                    format!(
                        "corsOrigins[{i}]: expected \"*\" or an origin such as \
                     \"https://shop.example\" (scheme, host and port only), got {origin:?}"
                    ),
                ));
            }
        }
        for (field, limit) in [
            ("rateLimit", self.rate_limit),
            ("ingestRateLimit", self.ingest_rate_limit),
        ] {
            if let Some(limit) = limit
                && (limit.per_second == 0 || limit.burst == 0)
            {
                return Err(SettingsError::invalid(
                    Setting::Site,
                    format!("{field}: perSecond and burst must be at least 1 (null for no limit)"),
                ));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, nothing after.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', ' '])
}

/// A site as kept in `sites.json`. Its API key's digest is kept apart (`api-keys.json`),
/// so that changing the site's settings never carries an older key along: on nodes
/// that share settings, each is an entry of its own.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSite {
    #[serde(flatten)]
    site: Site,
    /// Where a data directory from before `api-keys.json` kept the digest: moved there
    /// at open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_key_sha256: Option<String>,
    #[serde(default)]
    settings: SiteSettings,
}

#[derive(Default, Serialize, Deserialize)]
struct SitesFile {
    sites: Vec<StoredSite>,
}

pub struct SiteRegistry {
    file: SettingsFile<StoredSite>,
    /// The SHA-256 of each site's API key, never the key.
    keys: SettingsFile<String>,
}

/// Whether [`SiteRegistry::register`] added the site or found it there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    Existing,
}

/// `sites.json` is a list of sites, each with its id.
fn sites_codec() -> Codec<StoredSite> {
    Codec {
        decode: |bytes| {
            let file: SitesFile = serde_json::from_slice(bytes)?;
            Ok((file.sites.into_iter())
                .map(|s| (s.site.site_id.clone(), s))
                .collect())
        },
        encode: |sites| {
            let file = SitesFile {
                sites: sites.values().cloned().collect(),
            };
            serde_json::to_vec_pretty(&file).expect("sites serialise")
        },
    }
}

fn not_registered(site_id: &str) -> SettingsError {
    SettingsError::invalid(Setting::Site, format!("site {site_id:?} is not registered"))
}

impl SiteRegistry {
    pub fn open(data_dir: &Path) -> Result<Self, SettingsError> {
        let registry = SiteRegistry {
            file: SettingsFile::open_with(data_dir, FILE_NAME, Setting::Site, sites_codec())?,
            keys: SettingsFile::open(data_dir, KEYS_FILE_NAME, Setting::Site)?,
        };
        registry.move_inline_keys()?;
        Ok(registry)
    }

    /// Moves digests kept in `sites.json` by an earlier version into `api-keys.json`
    /// (written first: a crash between the two writes loses nothing; a key issued since
    /// is kept). At open, and again once settings are shared (a table may hold them).
    pub(crate) fn move_inline_keys(&self) -> Result<(), SettingsError> {
        let inline: Vec<(String, String)> = self.file.read(|sites| {
            (sites.iter())
                .filter_map(|(id, s)| Some((id.clone(), s.api_key_sha256.clone()?)))
                .collect()
        });
        if inline.is_empty() {
            return Ok(());
        }
        self.keys.change(|keys| {
            for (id, digest) in &inline {
                keys.entry(id.clone()).or_insert_with(|| digest.clone());
            }
            Ok::<(), SettingsError>(())
        })?;
        self.file.change(|sites| {
            for site in sites.values_mut() {
                site.api_key_sha256 = None;
            }
            Ok(())
        })
    }

    pub(crate) fn files(&self) -> [&dyn SharedFile; 2] {
        [&self.file, &self.keys]
    }

    pub fn contains(&self, site_id: &str) -> bool {
        self.file.read(|sites| sites.contains_key(site_id))
    }

    pub fn get(&self, site_id: &str) -> Option<Site> {
        self.file
            .read(|sites| sites.get(site_id).map(|s| s.site.clone()))
    }

    pub fn list(&self) -> Vec<Site> {
        self.file
            .read(|sites| sites.values().map(|s| s.site.clone()).collect())
    }

    /// The site's limit on tracker events per client address, if it has one: read for
    /// every event, so without copying the rest of the settings.
    pub fn ingest_rate_limit(&self, site_id: &str) -> Option<RateLimit> {
        self.file
            .read(|sites| sites.get(site_id)?.settings.ingest_rate_limit)
    }

    /// Who may send the site's `ProductUpdate` events; `Anyone` for a site not registered
    /// (whose events are refused anyway).
    pub fn product_updates(&self, site_id: &str) -> ProductUpdates {
        self.file.read(|sites| {
            sites
                .get(site_id)
                .map_or(ProductUpdates::Anyone, |s| s.settings.product_updates)
        })
    }

    /// The site's settings; `None` for a site not registered.
    pub fn settings(&self, site_id: &str) -> Option<SiteSettings> {
        self.file
            .read(|sites| sites.get(site_id).map(|s| s.settings.clone()))
    }

    /// Replaces the site's settings, once checked.
    pub fn set_settings(&self, site_id: &str, settings: SiteSettings) -> Result<(), SettingsError> {
        settings.validate()?;
        self.file.change(|sites| {
            let site = sites
                .get_mut(site_id)
                .ok_or_else(|| not_registered(site_id))?;
            site.settings = settings;
            Ok(())
        })
    }

    /// Issues a new API key for the site's read API, replacing any earlier one. The key
    /// is returned once; only its SHA-256 is kept.
    pub fn issue_api_key(&self, site_id: &str) -> Result<String, SettingsError> {
        if !self.contains(site_id) {
            return Err(not_registered(site_id));
        }
        // Answered only once stored: a key answered but not stored would not work after a
        // restart, and one stored but not answered locks the shop out.
        self.keys.change(|keys| {
            let key = fresh_api_key()?;
            keys.insert(site_id.to_string(), sha256_hex(&key));
            Ok(key)
        })
    }

    /// Whether `key` is the site's current API key.
    pub fn verify_api_key(&self, site_id: &str, key: &str) -> bool {
        let digest = sha256_hex(key);
        self.keys.read(|keys| {
            let Some(expected) = keys.get(site_id) else {
                return false;
            };
            // Digests compared in constant time: timing tells nothing of the stored digest.
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), digest.as_bytes()).into()
        })
    }

    /// The site whose API key `key` is, if any.
    pub fn site_of_key(&self, key: &str) -> Option<String> {
        let digest = sha256_hex(key);
        self.keys.read(|keys| {
            (keys.iter())
                .find(|(_, stored)| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        stored.as_bytes(),
                        digest.as_bytes(),
                    ))
                })
                .map(|(site_id, _)| site_id.clone())
        })
    }

    /// Registers a site; with no id, a fresh 7-character hex id (`8A412DC`) is generated.
    /// Registering an existing id changes nothing and says so. A new site gets an API key
    /// for its read API: use [`SiteRegistry::issue_api_key`] to get one to show.
    pub fn register(
        &self,
        site_id: Option<&str>,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<(Site, Registration), SettingsError> {
        // A site registered already changes nothing, so nothing is written: a server
        // started with `--site` on a full disk still starts.
        let registered = site_id.and_then(|id| {
            self.file
                .read(|sites| sites.get(id).map(|s| s.site.clone()))
        });
        if let Some(site) = registered {
            return Ok((site, Registration::Existing));
        }
        self.file.change(|sites| {
            let site_id = match site_id {
                Some(id) => {
                    validate_site_id(id)?;
                    id.to_string()
                }
                None => fresh_site_id(sites)?,
            };
            if let Some(existing) = sites.get(&site_id) {
                return Ok((existing.site.clone(), Registration::Existing));
            }
            let name = name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or(&site_id);
            if name.chars().count() > MAX_NAME_LEN {
                return Err(SettingsError::invalid(
                    Setting::Site,
                    format!("name: expected at most {MAX_NAME_LEN} characters"),
                ));
            }
            let site = Site {
                site_id: site_id.clone(),
                name: name.to_string(),
                created_at: now_ms,
            };
            let stored = StoredSite {
                site: site.clone(),
                api_key_sha256: None,
                settings: SiteSettings::default(),
            };
            sites.insert(site_id, stored);
            Ok((site, Registration::Created))
        })
    }
}

/// Site ids are what shops already use with the vendor: short, printable, no spaces.
fn validate_site_id(id: &str) -> Result<(), SettingsError> {
    spoor_protocol::ids::check_id(id)
        .map_err(|e| SettingsError::invalid(Setting::Site, format!("siteId: {e}")))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SettingsError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| SettingsError::storage(Setting::Site, format!("random: {e}")))?;
    Ok(bytes)
}

/// `spoor_` and 64 hex digits: 256 random bits, recognisable in a config file.
fn fresh_api_key() -> Result<String, SettingsError> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(format!("spoor_{}", hex::encode(bytes)))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn fresh_site_id(existing: &BTreeMap<String, StoredSite>) -> Result<String, SettingsError> {
    for _ in 0..64 {
        let bytes: [u8; 4] = random_bytes()?;
        let id = format!("{:07X}", u32::from_le_bytes(bytes) & 0x0FFF_FFFF);
        if !existing.contains_key(&id) {
            return Ok(id);
        }
    }
    Err(SettingsError::storage(
        Setting::Site,
        "could not find a free site id",
    ))
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

    #[test]
    fn api_keys_are_kept_only_as_digests_and_replaced_when_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SiteRegistry::open(dir.path()).unwrap();
        registry.register(Some("S1"), None, 1).unwrap();
        assert!(!registry.verify_api_key("S1", ""));
        let key = registry.issue_api_key("S1").unwrap();
        assert!(key.starts_with("spoor_") && key.len() == 70);
        assert!(registry.verify_api_key("S1", &key));
        assert!(!registry.verify_api_key("S2", &key));
        for file in [FILE_NAME, KEYS_FILE_NAME] {
            let stored = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(!stored.contains(&key), "{file}");
        }
        let reopened = SiteRegistry::open(dir.path()).unwrap();
        assert!(reopened.verify_api_key("S1", &key));
        let newer = reopened.issue_api_key("S1").unwrap();
        assert!(!reopened.verify_api_key("S1", &key));
        assert!(reopened.verify_api_key("S1", &newer));
        assert!(reopened.issue_api_key("S9").is_err());
    }

    #[test]
    fn a_digest_kept_in_sites_json_by_an_earlier_version_is_moved_and_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let key = "spoor_0123";
        let earlier = serde_json::json!({"sites": [{"siteId": "S1", "name": "S1",
            "createdAt": 1, "apiKeySha256": sha256_hex(key)}]});
        std::fs::write(dir.path().join(FILE_NAME), earlier.to_string()).unwrap();
        let registry = SiteRegistry::open(dir.path()).unwrap();
        assert!(registry.verify_api_key("S1", key));
        assert_eq!(registry.site_of_key(key).as_deref(), Some("S1"));
        let sites = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!sites.contains("apiKeySha256"), "{sites}");
        assert!(
            SiteRegistry::open(dir.path())
                .unwrap()
                .verify_api_key("S1", key)
        );
    }
}
