//! How long a restart takes over a large log: writes `records` events to a fresh log in a
//! temporary directory, then times each part of a start: opening the log (every record's
//! checksum verified), rebuilding the duplicate index, and replaying the state.
//!
//! `cargo run --release -p spoor --example restart_bench -- 1000000`

use std::sync::Arc;
use std::time::Instant;

use spoor_engine::LiveState;
use spoor_ingest::{Ingestor, SiteRegistry};
use spoor_log::{EventLog, FileLog, FileLogConfig};

const T0: i64 = 1_700_000_000_000;

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
    {
        let log = FileLog::open(&log_dir, FileLogConfig::default(), None)?;
        let mut next = 0;
        while next < records {
            let batch: Vec<Vec<u8>> = (next..(next + 10_000).min(records)).map(record).collect();
            next += batch.len() as u64;
            log.append(batch).await?;
        }
    }
    let started = Instant::now();
    let log: Arc<dyn EventLog> = Arc::new(FileLog::open(&log_dir, FileLogConfig::default(), None)?);
    let opened = started.elapsed().as_secs_f64();
    let sites = SiteRegistry::open(dir.path())?;
    sites.register(Some("S"), None, T0)?;
    let ingestor = Ingestor::open(log.clone(), sites, T0 + records as i64)?;
    let indexed = started.elapsed().as_secs_f64();
    let live = Arc::new(LiveState::default());
    let follower = spoor_engine::follow(log.clone(), live.clone())?;
    while live.applied() < records {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let replayed = started.elapsed().as_secs_f64();
    live.stop();
    let _ = follower.join();

    // The same start from a snapshot of that state.
    let snapshot = dir.path().join("state.snapshot");
    spoor_engine::snapshot::save(&live.read(), live.applied(), &snapshot)?;
    let resumed_at = Instant::now();
    let resumed = LiveState::resume(&*log, &snapshot);
    let resume_s = resumed_at.elapsed().as_secs_f64();
    assert_eq!(resumed.applied(), records);
    let index_snapshot = dir.path().join("dedup.snapshot");
    ingestor.save_index(&index_snapshot)?;
    let index_at = Instant::now();
    let sites = SiteRegistry::open(dir.path())?;
    let _reopened =
        Ingestor::open_with_snapshot(log.clone(), sites, T0 + records as i64, &index_snapshot)?;
    let index_s = index_at.elapsed().as_secs_f64();
    println!(
        "{{\"records\": {records}, \"log_bytes\": {}, \"open_log_s\": {opened:.2}, \
         \"dedup_index_s\": {:.2}, \"state_replay_s\": {:.2}, \"ready_s\": {replayed:.2}, \
         \"snapshot_bytes\": {}, \"state_from_snapshot_s\": {resume_s:.2}, \
         \"dedup_index_from_snapshot_s\": {index_s:.2}}}",
        log.size_bytes().unwrap_or(0),
        indexed - opened,
        replayed - indexed,
        std::fs::metadata(&snapshot)?.len(),
    );
    Ok(())
}
