//! Snapshot files: the state saved with the log position it reflects (`<data>/state.snapshot`).
//! A snapshot is a cache: the log stays the source of truth, and a snapshot that is
//! missing, unreadable, of another format version or ahead of the log is simply not used.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use spoor_engine::Engine;
use spoor_engine::snapshot::Snapshot;
use spoor_log::SteppedFile;

/// Writes the engine's state at `position` to `path`, atomically: a crash leaves the
/// previous snapshot or the new one.
pub fn save(engine: &Engine, position: u64, path: &Path) -> std::io::Result<()> {
    write(&Snapshot::of(engine, position), path)
}

/// Writes `file` to `path`, atomically: a crash leaves the previous snapshot or the new
/// one.
pub fn write(file: &Snapshot, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = SteppedFile::create(&tmp).and_then(|stepped| {
        // Synced a step at a time, so the log's fsyncs never queue behind the whole
        // snapshot.
        let mut writer = BufWriter::with_capacity(1 << 20, stepped);
        serde_json::to_writer(&mut writer, file)?;
        writer.into_inner().map_err(|e| e.into_error())?.finish()
    });
    if let Err(error) = written {
        // A full disk keeps the previous snapshot, and not the part of a new one.
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
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
    let file: Snapshot = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "state snapshot not readable; replaying the whole log");
            return None;
        }
    };
    match file.restore() {
        Ok(restored) => Some(restored),
        Err(version) => {
            tracing::info!(
                version,
                "state snapshot from another version; replaying the whole log"
            );
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_protocol::stored::{RecordContent, StoredRecord};
    use spoor_protocol::{Incoming, parse_request};

    fn engine_with_a_view() -> Engine {
        let body = br#"{"GeneralInfo": {"eventName": "ProductPage", "siteId": "S",
            "datetime": 1700000000000, "cookies": {"sc": "c1"}},
            "ProductPage": {"Product": {"productKey": "p1", "price": "5"}}}"#;
        let Ok(Incoming::Event(event)) = parse_request(body, 1_700_000_000_000) else {
            panic!("an event");
        };
        let mut engine = Engine::default();
        engine.apply(&StoredRecord {
            sealed: None,
            received_at: 1_700_000_000_000,
            request_hash: "0".repeat(32),
            content: RecordContent::Event(event),
        });
        engine
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_an_unusable_one_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snapshot");
        assert!(load(&path).is_none(), "no snapshot yet");
        let engine = engine_with_a_view();
        save(&engine, 1, &path).unwrap();
        let (loaded, position) = load(&path).unwrap();
        assert_eq!(position, 1);
        let digest = |e: &Engine| e.site("S").unwrap().digest();
        assert_eq!(digest(&loaded), digest(&engine));
        assert!(!dir.path().join("state.tmp").exists());

        let mut other_version: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        other_version["version"] = serde_json::json!(spoor_engine::snapshot::VERSION + 1);
        fs::write(&path, other_version.to_string()).unwrap();
        assert!(load(&path).is_none(), "another version is not used");
        fs::write(&path, b"{\"version\": 4, \"posit").unwrap();
        assert!(load(&path).is_none(), "a torn file is not used");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
