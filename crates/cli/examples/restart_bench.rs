//! How long a restart takes over a large log: writes `records` events to a fresh log in a
//! temporary directory, then times each part of a start: opening the log, rebuilding the
//! duplicate index, and replaying the state; then a start after a crash (from the
//! snapshots a running server saved [`TAIL`] records before the end) and a start after a
//! clean stop (from snapshots of the whole log).
//!
//! `cargo run --release -p spoor --example restart_bench -- 1000000`

use std::sync::Arc;
use std::time::Instant;

use spoor_ingest::Ingestor;
use spoor_live::LiveState;
use spoor_log::{EventLog, FileLog, FileLogConfig};
use spoor_server::directory::RegisteredSites;
use spoor_settings::SiteRegistry;

const T0: i64 = 1_700_000_000_000;
/// Records written after the last periodic snapshots before the crash: a running server
/// saves its state and duplicate index every 250,000 records.
const TAIL: u64 = 250_000;

/// A product view by one of a hundred thousand visitors, as ingest stores it.
fn record(i: u64) -> Vec<u8> {
    format!(
        r#"{{"receivedAt":{at},"requestHash":"{i:032x}","event":{{"siteId":"S","datetime":{at},"visitor":{{"sc":"cookie-{visitor}"}},"eventName":"ProductPage","product":{{"productKey":"p{product}","price":{{"amount":"19.99","currency":"EUR"}},"inStock":true}}}}}}"#,
        at = T0 + i as i64,
        visitor = i % 100_000,
        product = i * 7919 % 50_000,
    )
    .into_bytes()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    let before_crash = records.saturating_sub(TAIL.min(records / 4));
    write(&log_dir, 0, before_crash).await?;
    let registry = Arc::new(SiteRegistry::open(dir.path())?);
    registry.register(Some("S"), None, T0)?;
    let sites = || Arc::new(RegisteredSites(registry.clone()));

    // A server ran up to `before_crash` and saved its snapshots there; then more records
    // came, and it was killed.
    let crash_state = dir.path().join("crash-state.snapshot");
    let crash_index = dir.path().join("crash-dedup.snapshot");
    {
        let log: Arc<dyn EventLog> =
            Arc::new(FileLog::open(&log_dir, FileLogConfig::default(), None)?);
        let ingestor = Ingestor::open(log.clone(), sites(), T0)?;
        ingestor.save_index(&crash_index)?;
        let live = replay(&log, before_crash)?;
        spoor_live::snapshot::save(&live.read(), live.applied(), &crash_state)?;
    }
    write(&log_dir, before_crash, records).await?;
    let crash_start = Instant::now();
    {
        let log: Arc<dyn EventLog> =
            Arc::new(FileLog::open(&log_dir, FileLogConfig::default(), None)?);
        let now = T0 + records as i64;
        let _ingestor = Ingestor::open_with_snapshot(log.clone(), sites(), now, &crash_index)?;
        // The follower brings the resumed state up to the log's end.
        let resumed = Arc::new(LiveState::resume(&*log, &crash_state));
        let follower = spoor_live::follow(log.clone(), resumed.clone())?;
        while resumed.applied() < records {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        resumed.stop();
        let _ = follower.join();
    }
    let after_crash_s = crash_start.elapsed().as_secs_f64();

    let started = Instant::now();
    let log: Arc<dyn EventLog> = Arc::new(FileLog::open(&log_dir, FileLogConfig::default(), None)?);
    let opened = started.elapsed().as_secs_f64();
    let ingestor = Ingestor::open(log.clone(), sites(), T0 + records as i64)?;
    let indexed = started.elapsed().as_secs_f64();
    let live = replay(&log, records)?;
    let replayed = started.elapsed().as_secs_f64();

    // The same start from a snapshot of that state.
    let snapshot = dir.path().join("state.snapshot");
    spoor_live::snapshot::save(&live.read(), live.applied(), &snapshot)?;
    let resumed_at = Instant::now();
    let resumed = LiveState::resume(&*log, &snapshot);
    let resume_s = resumed_at.elapsed().as_secs_f64();
    assert_eq!(resumed.applied(), records);
    let index_snapshot = dir.path().join("dedup.snapshot");
    ingestor.save_index(&index_snapshot)?;
    let index_at = Instant::now();
    let _reopened =
        Ingestor::open_with_snapshot(log.clone(), sites(), T0 + records as i64, &index_snapshot)?;
    let index_s = index_at.elapsed().as_secs_f64();
    println!(
        "{{\"records\": {records}, \"log_bytes\": {}, \"open_log_s\": {opened:.2}, \
         \"dedup_index_s\": {:.2}, \"state_replay_s\": {:.2}, \"ready_s\": {replayed:.2}, \
         \"snapshot_bytes\": {}, \"state_from_snapshot_s\": {resume_s:.2}, \
         \"dedup_index_from_snapshot_s\": {index_s:.2}, \
         \"ready_after_crash_s\": {after_crash_s:.2}, \"records_after_snapshots\": {}}}",
        log.size_bytes().unwrap_or(0),
        indexed - opened,
        replayed - indexed,
        std::fs::metadata(&snapshot)?.len(),
        records - before_crash,
    );
    Ok(())
}

/// Appends records `from..to` to the log in `dir`.
async fn write(dir: &std::path::Path, from: u64, to: u64) -> anyhow::Result<()> {
    let log = FileLog::open(dir, FileLogConfig::default(), None)?;
    let mut next = from;
    while next < to {
        let batch: Vec<Vec<u8>> = (next..(next + 10_000).min(to)).map(record).collect();
        next += batch.len() as u64;
        log.append(batch).await?;
    }
    Ok(())
}

/// The state of the log's first `records` records, applied by the follower.
fn replay(log: &Arc<dyn EventLog>, records: u64) -> anyhow::Result<Arc<LiveState>> {
    let live = Arc::new(LiveState::default());
    let follower = spoor_live::follow(log.clone(), live.clone())?;
    while live.applied() < records {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    live.stop();
    let _ = follower.join();
    Ok(live)
}
