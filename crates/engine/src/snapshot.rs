//! The state saved with the log position it reflects, so that a start replays only the
//! log's tail. A snapshot is a cache: the log stays the source of truth, and a snapshot
//! that is missing, unreadable or ahead of the log is simply not used.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use serde::{Deserialize, Serialize};
use spoor_log::SteppedFile;

use crate::attribution::Attribution;
use crate::catalogue::Product;
use crate::contact::Contact;
use crate::identity::ContactId;
use crate::recommend::Recommender;
use crate::triggers::TimersSnapshot;
use crate::{Engine, SiteState};

/// Bumped when the snapshot's shape changes; an older snapshot is then not used.
const VERSION: u32 = 4;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    /// Log records the state reflects: replay resumes here.
    position: u64,
    sites: BTreeMap<String, SiteSnapshot>,
}

#[derive(Serialize, Deserialize)]
pub struct SiteSnapshot {
    pub events: u64,
    pub slots: Vec<SlotSnapshot>,
    pub products: Vec<Product>,
    /// The recommendation models (sessions, baskets, counts).
    #[serde(default)]
    pub recommender: Option<Recommender>,
    /// Block impressions, clicks and orders.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Trigger timers waiting.
    #[serde(default)]
    pub timers: TimersSnapshot,
    /// Product -> contacts who put it in a cart or a wishlist (for price-drop and
    /// back-in-stock triggers; those who viewed it are in the recommender's sessions).
    #[serde(default)]
    pub interest: Vec<(String, Vec<ContactId>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SlotSnapshot {
    Live(Box<Contact>),
    MergedInto(ContactId),
}

/// Writes the engine's state at `position` to `path`, atomically: a crash leaves the
/// previous snapshot or the new one.
pub fn save(engine: &Engine, position: u64, path: &Path) -> std::io::Result<()> {
    let file = SnapshotFile {
        version: VERSION,
        position,
        sites: engine
            .sites()
            .into_iter()
            .map(|(id, site)| (id.to_string(), site.to_snapshot()))
            .collect(),
    };
    let tmp = path.with_extension("tmp");
    // Synced a step at a time, so the log's fsyncs never queue behind the whole snapshot.
    let mut writer = BufWriter::with_capacity(1 << 20, SteppedFile::create(&tmp)?);
    serde_json::to_writer(&mut writer, &file)?;
    writer.into_inner().map_err(|e| e.into_error())?.finish()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The state and position saved at `path`, if there is a usable snapshot.
pub fn load(path: &Path) -> Option<(Engine, u64)> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "state snapshot not readable; replaying the whole log");
            return None;
        }
    };
    let file: SnapshotFile = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "state snapshot not readable; replaying the whole log");
            return None;
        }
    };
    if file.version != VERSION {
        tracing::info!(
            version = file.version,
            "state snapshot from another version; replaying the whole log"
        );
        return None;
    }
    let mut engine = Engine::default();
    for (id, site) in file.sites {
        engine.insert_site(id, SiteState::from_snapshot(site));
    }
    Some((engine, file.position))
}

/// Removes the snapshot, durably (after an erasure, it may hold what was erased).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
