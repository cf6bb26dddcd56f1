//! A per-site settings file (blocks, tuning, triggers): read whole at start, kept in
//! memory, and rewritten atomically on each change, so a crash leaves the old settings or
//! the new ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Setting, SettingsError};

pub struct SettingsFile<V> {
    path: PathBuf,
    /// What the file holds, named in its errors.
    setting: Setting,
    sites: RwLock<BTreeMap<String, V>>,
}

impl<V: Clone + Serialize + DeserializeOwned> SettingsFile<V> {
    /// Opens `name` in `data_dir`; a missing file is no settings yet.
    pub fn open(data_dir: &Path, name: &str, setting: Setting) -> Result<Self, SettingsError> {
        let path = data_dir.join(name);
        let bytes = spoor_log::read_if_exists(&path).map_err(|e| {
            SettingsError::storage(setting, format!("read {}: {e}", path.display()))
        })?;
        let sites = match bytes {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SettingsError::storage(setting, format!("{} is not valid: {e}", path.display()))
            })?,
            None => BTreeMap::new(),
        };
        Ok(SettingsFile {
            path,
            setting,
            sites: RwLock::new(sites),
        })
    }

    /// Reads the settings of every site.
    pub fn read<R>(&self, look: impl FnOnce(&BTreeMap<String, V>) -> R) -> R {
        look(&self.sites.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes a copy of the settings; once `change` succeeds the copy is written, and
    /// kept only if the write succeeds too. A refused change writes nothing.
    pub fn change<R, E: From<SettingsError>>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, V>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = sites.clone();
        let result = change(&mut changed)?;
        let bytes = serde_json::to_vec_pretty(&changed).expect("settings serialise");
        spoor_log::write_atomically(&self.path, &bytes).map_err(|e| {
            SettingsError::storage(self.setting, format!("write {}: {e}", self.path.display()))
        })?;
        *sites = changed;
        Ok(result)
    }
}
