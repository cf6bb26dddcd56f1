//! A per-site settings file (sites, blocks, tuning, triggers): read whole at start, kept
//! in memory, and rewritten atomically on each change, so a crash leaves the old settings
//! or the new ones.
//!
//! When several nodes share one log the settings are shared too (see [`SharedFile`]):
//! each site's entry is a value of a [`SharedTable`], stored there before it is kept, and
//! the file is then this node's copy of the table, rewritten as changes come.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use spoor_log::SharedTable;

use crate::error::{Setting, SettingsError};

/// How a file's sites are written: the default is a JSON object by site id.
pub struct Codec<V> {
    pub decode: fn(&[u8]) -> serde_json::Result<BTreeMap<String, V>>,
    pub encode: fn(&BTreeMap<String, V>) -> Vec<u8>,
}

impl<V: Serialize + DeserializeOwned> Codec<V> {
    pub fn by_site() -> Codec<V> {
        Codec {
            decode: |bytes| serde_json::from_slice(bytes),
            encode: |sites| serde_json::to_vec_pretty(sites).expect("settings serialise"),
        }
    }
}

pub struct SettingsFile<V> {
    path: PathBuf,
    /// The file's name: also the first part of its entries' keys in a shared table.
    name: &'static str,
    /// What the file holds, named in its errors.
    setting: Setting,
    codec: Codec<V>,
    sites: RwLock<BTreeMap<String, V>>,
    /// Where changes are stored first, when the settings are shared.
    shared: OnceLock<Arc<dyn SharedTable>>,
    /// Held through a shared change: one at a time, without holding up readers.
    changing: Mutex<()>,
    /// Per site, this node's stored changes the table has not yet sent back: until the
    /// last of them comes back, the table's earlier values of the site are older than
    /// what this node holds, and are not taken.
    echoes: Mutex<HashMap<String, u32>>,
    /// Held while this node's copy of shared settings is written.
    writing: Mutex<()>,
}

impl<V: Clone + Serialize + DeserializeOwned> SettingsFile<V> {
    /// Opens `name` in `data_dir`; a missing file is no settings yet.
    pub fn open(
        data_dir: &Path,
        name: &'static str,
        setting: Setting,
    ) -> Result<Self, SettingsError> {
        SettingsFile::open_with(data_dir, name, setting, Codec::by_site())
    }

    /// [`SettingsFile::open`] for a file written in another form.
    pub fn open_with(
        data_dir: &Path,
        name: &'static str,
        setting: Setting,
        codec: Codec<V>,
    ) -> Result<Self, SettingsError> {
        let path = data_dir.join(name);
        let bytes = spoor_log::read_if_exists(&path).map_err(|e| {
            SettingsError::storage(setting, format!("read {}: {e}", path.display()))
        })?;
        let sites = match bytes {
            // Said without serde's message, which may quote a value (a webhook's secret).
            Some(bytes) => (codec.decode)(&bytes).map_err(|e| {
                SettingsError::storage(
                    setting,
                    format!(
                        "{} is not valid ({:?} error at line {} column {})",
                        path.display(),
                        e.classify(),
                        e.line(),
                        e.column()
                    ),
                )
            })?,
            None => BTreeMap::new(),
        };
        Ok(SettingsFile {
            path,
            name,
            setting,
            codec,
            sites: RwLock::new(sites),
            shared: OnceLock::new(),
            changing: Mutex::new(()),
            echoes: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
        })
    }

    /// Reads the settings of every site.
    pub fn read<R>(&self, look: impl FnOnce(&BTreeMap<String, V>) -> R) -> R {
        look(&self.sites.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes a copy of the settings; once `change` succeeds the copy is stored, and
    /// kept only if that succeeds too. A refused change stores nothing.
    pub fn change<R, E: From<SettingsError>>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, V>) -> Result<R, E>,
    ) -> Result<R, E> {
        if let Some(table) = self.shared.get() {
            return self.change_shared(table.as_ref(), change);
        }
        let mut sites = self.sites.write().unwrap_or_else(PoisonError::into_inner);
        let mut changed = sites.clone();
        let result = change(&mut changed)?;
        self.write(&changed)?;
        *sites = changed;
        Ok(result)
    }

    /// A change stored in the shared table, site by site, then kept here. Only the sites
    /// it changed are replaced, so another node's change that came meanwhile stays.
    fn change_shared<R, E: From<SettingsError>>(
        &self,
        table: &dyn SharedTable,
        change: impl FnOnce(&mut BTreeMap<String, V>) -> Result<R, E>,
    ) -> Result<R, E> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let before = self.read(BTreeMap::clone);
        let mut changed = before.clone();
        let result = change(&mut changed)?;
        let differences = differences(&before, &changed);
        for (site, value) in &differences {
            let encoded = value.as_ref().map(encode_entry);
            self.store(table, site, encoded.as_deref())?;
        }
        let mut sites = self.sites.write().unwrap_or_else(PoisonError::into_inner);
        for (site, value) in differences {
            set(&mut sites, site, value);
        }
        drop(sites);
        self.keep_copy();
        Ok(result)
    }

    /// Stores the site's entry in the table, its echo awaited.
    fn store(
        &self,
        table: &dyn SharedTable,
        site: &str,
        entry: Option<&[u8]>,
    ) -> Result<(), SettingsError> {
        self.count_echo(site, 1);
        table.put(&self.key(site), entry).map_err(|e| {
            // Whether or not the table took it, no echo is awaited: one that comes is
            // the table's value, taken as any other.
            self.count_echo(site, -1);
            SettingsError::storage(
                self.setting,
                format!("store the change in {}: {e}", table.describe()),
            )
        })
    }

    /// Changes the count of the site's echoes awaited; answers the count after.
    fn count_echo(&self, site: &str, by: i32) -> u32 {
        let mut echoes = self.echoes.lock().unwrap_or_else(PoisonError::into_inner);
        let count = echoes.entry(site.to_string()).or_default();
        *count = count.saturating_add_signed(by);
        let after = *count;
        if after == 0 {
            echoes.remove(site);
        }
        after
    }

    fn key(&self, site: &str) -> String {
        format!("{}/{site}", self.name)
    }

    fn write(&self, sites: &BTreeMap<String, V>) -> Result<(), SettingsError> {
        spoor_log::write_atomically(&self.path, &(self.codec.encode)(sites)).map_err(|e| {
            SettingsError::storage(self.setting, format!("write {}: {e}", self.path.display()))
        })
    }

    /// Writes this node's copy of shared settings: the table has them, so a failure
    /// (a full disk) is said and the node goes on from memory. Written outside the
    /// settings' lock, so readers on request threads never wait for an fsync; copies
    /// are taken and written one at a time, so the last write holds the latest settings.
    fn keep_copy(&self) {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let copy = self.read(BTreeMap::clone);
        if let Err(error) = self.write(&copy) {
            tracing::warn!(%error, "the local copy of shared settings was not written");
        }
    }
}

fn encode_entry<V: Serialize>(value: &V) -> Vec<u8> {
    serde_json::to_vec(value).expect("settings serialise")
}

fn set<V>(sites: &mut BTreeMap<String, V>, site: String, value: Option<V>) {
    match value {
        Some(value) => sites.insert(site, value),
        None => sites.remove(&site),
    };
}

/// The sites whose entries differ between `before` and `after`, with their new entries
/// (`None`: removed).
fn differences<V: Clone + Serialize>(
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<(String, Option<V>)> {
    let changed = (after.iter())
        .filter(|(site, value)| {
            before
                .get(*site)
                .is_none_or(|old| encode_entry(old) != encode_entry(*value))
        })
        .map(|(site, value)| (site.clone(), Some(value.clone())));
    let removed = (before.keys())
        .filter(|site| !after.contains_key(*site))
        .map(|site| (site.clone(), None));
    changed.chain(removed).collect()
}

/// A settings file as the sharing of settings sees it, whatever it holds.
pub trait SharedFile: Send + Sync {
    /// The file's name, the first part of its keys in the shared table.
    fn name(&self) -> &'static str;
    /// Whether the file has an entry for the site.
    fn holds(&self, site: &str) -> bool;
    /// Stores every site's entry in `table` (empty yet); answers how many.
    fn seed(&self, table: &dyn SharedTable) -> Result<usize, SettingsError>;
    /// From now on, changes are stored in `table` first.
    fn share(&self, table: Arc<dyn SharedTable>);
    /// Takes a change stored in the table (by this node or another).
    fn apply(&self, site: &str, entry: Option<&[u8]>) -> Result<(), SettingsError>;
    /// Replaces every site's entry with the table's.
    fn replace_all(&self, entries: &BTreeMap<String, Vec<u8>>) -> Result<(), SettingsError>;
}

impl<V> SharedFile for SettingsFile<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn holds(&self, site: &str) -> bool {
        self.read(|sites| sites.contains_key(site))
    }

    fn seed(&self, table: &dyn SharedTable) -> Result<usize, SettingsError> {
        let entries = self.read(|sites| {
            (sites.iter())
                .map(|(site, value)| (site.clone(), encode_entry(value)))
                .collect::<Vec<_>>()
        });
        for (site, entry) in &entries {
            self.store(table, site, Some(entry))?;
        }
        Ok(entries.len())
    }

    fn share(&self, table: Arc<dyn SharedTable>) {
        let _ = self.shared.set(table);
    }

    fn apply(&self, site: &str, entry: Option<&[u8]>) -> Result<(), SettingsError> {
        let value = entry
            .map(|bytes| self.decode_entry(site, bytes))
            .transpose()?;
        // Decided and done under the lock: a change of this node stored meanwhile either
        // counted its echo before (and this value is skipped) or is kept after this one.
        let mut sites = self.sites.write().unwrap_or_else(PoisonError::into_inner);
        let awaited =
            (self.echoes.lock().unwrap_or_else(PoisonError::into_inner)).contains_key(site);
        if awaited && self.count_echo(site, -1) > 0 {
            return Ok(());
        }
        set(&mut sites, site.to_string(), value);
        drop(sites);
        self.keep_copy();
        Ok(())
    }

    fn replace_all(&self, entries: &BTreeMap<String, Vec<u8>>) -> Result<(), SettingsError> {
        // An entry this version cannot read (a newer node's, during an upgrade) is left
        // out and said, rather than keep the node from starting.
        let decoded: BTreeMap<String, V> = (entries.iter())
            .filter_map(|(site, bytes)| match self.decode_entry(site, bytes) {
                Ok(value) => Some((site.clone(), value)),
                Err(error) => {
                    tracing::warn!(%error, "a shared setting was not taken");
                    None
                }
            })
            .collect();
        let mut sites = self.sites.write().unwrap_or_else(PoisonError::into_inner);
        *sites = decoded;
        drop(sites);
        self.keep_copy();
        Ok(())
    }
}

impl<V: DeserializeOwned> SettingsFile<V> {
    fn decode_entry(&self, site: &str, bytes: &[u8]) -> Result<V, SettingsError> {
        // Said without serde's message, which may quote a value (a webhook's secret).
        serde_json::from_slice(bytes).map_err(|e| {
            SettingsError::storage(
                self.setting,
                format!(
                    "the shared entry {}/{site} is not valid ({:?} error at line {} column {})",
                    self.name,
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}
