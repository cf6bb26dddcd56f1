//! Snapshots read at start: the state's (JSON) and the duplicate index's (binary).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor_engine::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) {
        let _ = snapshot.restore();
    }
    let _ = spoor_ingest::dedup::DedupIndex::from_bytes(data);
});
