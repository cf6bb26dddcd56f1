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
use crate::contacts::identity::ContactId;
use crate::contacts::{Contacts, SlotSnapshot};
use crate::interest::Interest;
use crate::recommend::Recommender;
use crate::timers::{Timers, TimersSnapshot};
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

impl SiteState {
    pub fn to_snapshot(&self) -> SiteSnapshot {
        SiteSnapshot {
            events: self.events,
            slots: self.contacts.to_slots(),
            products: self.catalogue.sorted().into_iter().cloned().collect(),
            recommender: Some(self.recommender.clone()),
            attribution: Some(self.attribution.clone()),
            timers: self.timers.to_snapshot(),
            interest: self.interest.to_snapshot(),
        }
    }

    /// The state saved in `snapshot`; the identifier index is derived from the contacts.
    pub fn from_snapshot(snapshot: SiteSnapshot) -> SiteState {
        let mut site = SiteState {
            events: snapshot.events,
            contacts: Contacts::from_slots(snapshot.slots),
            recommender: snapshot.recommender.unwrap_or_default(),
            attribution: snapshot.attribution.unwrap_or_default(),
            timers: Timers::from_snapshot(snapshot.timers),
            interest: Interest::from_snapshot(snapshot.interest),
            ..SiteState::default()
        };
        for product in snapshot.products {
            site.catalogue.insert(product);
        }
        site
    }

    /// SHA-256 over the site's whole state (contacts in number order, products in key
    /// order), as hex: equal digests mean equal state, to compare a rebuild with a
    /// running server.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for contact in self.contacts.live() {
            hasher.update(serde_json::to_vec(contact).expect("contacts serialise"));
        }
        for product in self.catalogue.sorted() {
            hasher.update(serde_json::to_vec(product).expect("products serialise"));
        }
        hex::encode(hasher.finalize())
    }
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
