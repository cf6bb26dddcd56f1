//! The ingestor over a real file log: storing, refusing, deduplicating across restarts,
//! exporting and importing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use spoor_ingest::export::{ExportFilter, export};
use spoor_ingest::{DirectoryError, IngestError, Ingestor, Outcome, SiteDirectory};
use spoor_log::{AppendFuture, EventLog, FileLog, FileLogConfig, LogError, LogReader, Position};

const NOW: i64 = 1_700_000_000_000;

fn small_log() -> FileLogConfig {
    FileLogConfig {
        segment_bytes: 1024 * 1024,
        ..FileLogConfig::default()
    }
}

/// The registered sites, in memory: the settings' registry keeps them on disk.
#[derive(Default)]
struct Sites(Mutex<BTreeSet<String>>);

impl Sites {
    fn with(site_ids: &[&str]) -> Arc<Sites> {
        let ids = site_ids.iter().map(|id| id.to_string()).collect();
        Arc::new(Sites(Mutex::new(ids)))
    }
}

impl SiteDirectory for Sites {
    fn is_registered(&self, site_id: &str) -> bool {
        self.0.lock().unwrap().contains(site_id)
    }

    fn register_imported(&self, site_id: &str, _now_ms: i64) -> Result<bool, DirectoryError> {
        Ok(self.0.lock().unwrap().insert(site_id.to_string()))
    }
}

fn open(dir: &Path) -> Ingestor {
    let log = FileLog::open(&dir.join("log"), small_log(), None).unwrap();
    Ingestor::open(Arc::new(log), Sites::with(&["S1"]), NOW).unwrap()
}

fn view(sc: &str, product: &str) -> Vec<u8> {
    format!(
        r#"{{"GeneralInfo": {{"eventName": "ProductPage", "siteId": "S1", "cookies": {{"sc": "{sc}"}}}},
            "ProductPage": {{"Product": {{"productKey": "{product}", "price": "10 USD"}}}}}}"#
    )
    .into_bytes()
}

fn purchase(sc: &str, order: &str) -> Vec<u8> {
    purchase_of(sc, order, 1)
}

/// Order `order` of the visitor with cookie `sc` sent again, in another body.
fn resent(sc: &str, order: &str) -> Vec<u8> {
    purchase_of(sc, order, 2)
}

fn purchase_of(sc: &str, order: &str, quantity: u32) -> Vec<u8> {
    format!(
        r#"{{"GeneralInfo": {{"eventName": "PurchasedItems", "siteId": "S1", "cookies": "{sc}"}},
            "PurchasedItems": {{"OrderNumber": "{order}",
              "Products": [{{"product_id": "1", "unit_price": 2, "quantity": {quantity}}}]}}}}"#
    )
    .into_bytes()
}

fn outcome(result: Result<spoor_ingest::Accepted, IngestError>) -> Outcome {
    result.unwrap().outcome
}

#[tokio::test]
async fn retries_are_stored_once_even_after_a_restart_and_a_resent_order_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ingestor = open(dir.path());
        assert_eq!(
            outcome(ingestor.ingest_one(&view("a", "1"), NOW).await),
            Outcome::Stored(0)
        );
        assert_eq!(
            outcome(ingestor.ingest_one(&view("a", "1"), NOW + 5).await),
            Outcome::Duplicate
        );
        assert_eq!(
            outcome(ingestor.ingest_one(&purchase("a", "77"), NOW).await),
            Outcome::Stored(1)
        );
    }
    let ingestor = open(dir.path());
    assert_eq!(
        outcome(ingestor.ingest_one(&view("a", "1"), NOW + 10).await),
        Outcome::Duplicate
    );
    assert_eq!(
        outcome(ingestor.ingest_one(&purchase("a", "77"), NOW + 10).await),
        Outcome::Duplicate
    );
    // The same order in another body is stored (the state counts an order once per
    // contact): on the public tracker, a "duplicate" answer for an order number would
    // tell anyone which orders exist.
    assert_eq!(
        outcome(ingestor.ingest_one(&resent("a", "77"), NOW + 10).await),
        Outcome::Stored(2)
    );
    assert_eq!(ingestor.log().end(), 3);
}

#[tokio::test]
async fn a_batch_stores_its_valid_items_and_rejects_the_rest_with_nothing_stored_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let ingestor = open(dir.path());
    let unknown_site = String::from_utf8(view("c", "3"))
        .unwrap()
        .replace("S1", "NOPE");
    let items: Vec<Vec<u8>> = vec![
        b"{\"GeneralInfo\": 5}".to_vec(),
        view("a", "1"),
        unknown_site.into_bytes(),
        view("a", "1"),
        view("b", "2"),
    ];
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    let results = ingestor.ingest_many(&refs, NOW).await;
    assert!(matches!(results[0], Err(IngestError::Rejected { .. })));
    assert!(matches!(results[1], Ok(ref a) if a.outcome == Outcome::Stored(0)));
    let Err(IngestError::UnknownSite { site_id, .. }) = &results[2] else {
        panic!()
    };
    assert_eq!(site_id, "NOPE");
    assert!(
        results[2]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("POST /admin/v1/sites")
    );
    assert!(matches!(results[3], Ok(ref a) if a.outcome == Outcome::Duplicate));
    assert!(matches!(results[4], Ok(ref a) if a.outcome == Outcome::Stored(1)));
    assert_eq!(ingestor.log().end(), 2);
}

#[tokio::test]
async fn export_then_import_elsewhere_twice_stores_each_record_once() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    for i in 0..5 {
        source
            .ingest_one(&view("a", &i.to_string()), NOW + i)
            .await
            .unwrap();
    }
    source.ingest_one(&purchase("a", "9"), NOW).await.unwrap();
    let mut exported = Vec::new();
    assert_eq!(
        export(
            &**source.log(),
            None,
            &ExportFilter::default(),
            &mut exported
        )
        .unwrap(),
        6
    );
    let text = String::from_utf8(exported).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let target_dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(&target_dir.path().join("log"), small_log(), None).unwrap();
    let target = Ingestor::open(Arc::new(log), Sites::with(&[]), NOW).unwrap();
    let first = target.import(&lines, NOW).await.unwrap();
    assert_eq!(
        (first.imported, first.sites_registered.clone()),
        (6, vec!["S1".to_string()])
    );
    let second = target.import(&lines, NOW).await.unwrap();
    assert_eq!((second.imported, second.already_present), (0, 6));

    let mut again = Vec::new();
    export(&**target.log(), None, &ExportFilter::default(), &mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), text);

    let filtered = ExportFilter {
        site_id: Some("S1".into()),
        since_ms: Some(NOW + 3),
    };
    let mut some = Vec::new();
    assert_eq!(
        export(&**target.log(), None, &filtered, &mut some).unwrap(),
        2
    );
}

#[tokio::test]
async fn a_sealing_ingestor_stores_no_one_in_the_clear_and_an_import_takes_no_sealed_part() {
    let dir = tempfile::tempdir().unwrap();
    let keys = spoor_log::Keyring::open(Arc::new(spoor_log::MemoryTable::default())).unwrap();
    let ingestor = open(dir.path()).sealing_with(Some(keys.clone()));
    for i in 0..3 {
        let stored = ingestor
            .ingest_one(&view("visitor-cookie", &i.to_string()), NOW + i)
            .await
            .unwrap();
        assert!(matches!(stored.outcome, Outcome::Stored(_)));
    }
    assert!(!keys.has_pending(), "the key was stored before the records");
    let mut reader = ingestor.log().reader(0).unwrap();
    let records = reader.next_batch(10, std::time::Duration::ZERO).unwrap();
    assert_eq!(records.len(), 3);
    for record in &records {
        let text = String::from_utf8_lossy(&record.payload);
        assert!(
            !text.contains("visitor-cookie") && text.contains("sealed"),
            "{text}"
        );
    }
    let exported = |keys: Option<&spoor_log::Keyring>| {
        let mut out = Vec::new();
        export(&**ingestor.log(), keys, &ExportFilter::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let opened = exported(Some(&keys));
    assert_eq!(opened.matches("visitor-cookie").count(), 3, "{opened}");
    assert!(!opened.contains("sealed"), "{opened}");
    let keyless = exported(None);
    assert!(!keyless.contains("visitor-cookie") && !keyless.contains("sealed"));

    // A sealed part or an erasure mark given to an import is refused, line by line.
    let line = opened.lines().next().unwrap();
    let mut sealed: serde_json::Value = serde_json::from_str(line).unwrap();
    sealed["requestHash"] = serde_json::json!("ab".repeat(16));
    sealed["sealed"] = serde_json::json!({"keys": [], "box": "AAAA"});
    let mark = serde_json::json!({"position": 9, "receivedAt": NOW, "requestHash": "cd".repeat(16),
                                  "erasure": {"siteId": "S1"}});
    let lines = [sealed.to_string(), mark.to_string()];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let summary = ingestor.import(&lines, NOW).await.unwrap();
    assert_eq!(
        (summary.imported, summary.error_count),
        (0, 2),
        "{summary:?}"
    );
    assert!(summary.errors[0].1.starts_with("sealed: "), "{summary:?}");
}

#[tokio::test]
async fn an_index_snapshot_from_an_earlier_clean_stop_plus_the_tail_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let reopen = || {
        let log = FileLog::open(&dir.path().join("log"), small_log(), None).unwrap();
        Ingestor::open_with_snapshot(Arc::new(log), Sites::with(&["S1"]), NOW, &snapshot).unwrap()
    };
    {
        let ingestor = open(dir.path());
        ingestor.ingest_one(&purchase("a", "1"), NOW).await.unwrap();
        ingestor.save_index(&snapshot).unwrap();
    }
    {
        // Records after the snapshot, then a crash: no new snapshot.
        let ingestor = reopen();
        assert_eq!(
            outcome(ingestor.ingest_one(&purchase("b", "2"), NOW).await),
            Outcome::Stored(1)
        );
    }
    let ingestor = reopen();
    assert_eq!(
        outcome(ingestor.ingest_one(&purchase("a", "1"), NOW).await),
        Outcome::Duplicate,
        "from the snapshot"
    );
    assert_eq!(
        outcome(ingestor.ingest_one(&purchase("b", "2"), NOW).await),
        Outcome::Duplicate,
        "from the log's tail"
    );
    assert_eq!(ingestor.log().end(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_snapshots_saved_while_clients_post_miss_no_stored_record() {
    const CLIENTS: usize = 16;
    const EACH: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Arc::new(open(dir.path()));
    let body = |client: usize, n: usize| view(&format!("c{client}-{n}"), &n.to_string());

    // Clients post while snapshots are saved as fast as they can be, each kept aside.
    let posting = (0..CLIENTS).map(|client| {
        let ingestor = ingestor.clone();
        tokio::spawn(async move {
            for n in 0..EACH {
                ingestor.ingest_one(&body(client, n), NOW).await.unwrap();
            }
        })
    });
    let posting: Vec<_> = posting.collect();
    let saving = {
        let (ingestor, dir) = (ingestor.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let mut kept = Vec::new();
            loop {
                let path = dir.join("dedup.snapshot");
                ingestor.save_index(&path).unwrap();
                kept.push(std::fs::read(&path).unwrap());
                if kept.len() == 40 || ingestor.log().end() == (CLIENTS * EACH) as u64 {
                    return kept;
                }
            }
        })
    };
    for client in posting {
        client.await.unwrap();
    }
    let kept = saving.await.unwrap();

    // A start after a crash at any of those moments knows every stored body: what the
    // snapshot holds, plus the log after the position it names.
    for (number, bytes) in kept.iter().enumerate() {
        let path = dir.path().join(format!("kept-{number}.snapshot"));
        std::fs::write(&path, bytes).unwrap();
        let log = ingestor.log().clone();
        let sites = Sites::with(&["S1"]);
        let restarted = Ingestor::open_with_snapshot(log, sites, NOW, &path).unwrap();
        for client in 0..CLIENTS {
            for n in 0..EACH {
                assert_eq!(
                    outcome(restarted.ingest_one(&body(client, n), NOW + 1).await),
                    Outcome::Duplicate,
                    "snapshot {number}: client {client}'s body {n} was not recognised"
                );
            }
        }
    }
    assert_eq!(ingestor.log().end(), (CLIENTS * EACH) as u64);
}

/// The real log, whose appends begin only once the gate opens: a test can keep a write
/// from finishing for as long as it needs, whatever runs the append and however fast
/// the disk.
struct GatedLog {
    log: Arc<FileLog>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl GatedLog {
    fn open(dir: &Path) -> Arc<Self> {
        let log = FileLog::open(&dir.join("log"), small_log(), None).unwrap();
        Arc::new(GatedLog {
            log: Arc::new(log),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        })
    }

    fn open_gate(&self) {
        self.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
    }
}

impl EventLog for GatedLog {
    fn append(&self, records: Vec<Vec<u8>>) -> AppendFuture {
        let (log, gate) = (self.log.clone(), self.gate.clone());
        Box::pin(async move {
            let _passed = gate.acquire().await.map_err(|_| LogError::Closed)?;
            log.append(records).await
        })
    }

    fn reader(&self, from: Position) -> Result<Box<dyn LogReader>, LogError> {
        self.log.reader(from)
    }

    fn end(&self) -> Position {
        self.log.end()
    }
}

fn open_gated(dir: &Path) -> (Ingestor, Arc<GatedLog>) {
    let log = GatedLog::open(dir);
    (
        Ingestor::open(log.clone(), Sites::with(&["S1"]), NOW).unwrap(),
        log,
    )
}

/// Polls a request once, so that it claims its body and sets its append going, and drops
/// it there, as a server does when the client goes away.
fn abandon(request: impl Future) {
    let mut request = std::pin::pin!(request);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(request.as_mut().poll(&mut context).is_pending());
}

#[tokio::test]
async fn a_request_abandoned_mid_write_is_stored_once_and_its_retry_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (ingestor, log) = open_gated(dir.path());
    let body = view("gone", "1");
    abandon(ingestor.ingest_one(&body, NOW));
    log.open_gate();
    let retry = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ingestor.ingest_one(&body, NOW + 1),
    )
    .await
    .expect("the retry is answered, not left waiting for the abandoned write");
    assert_eq!(outcome(retry), Outcome::Duplicate);
    assert_eq!(ingestor.log().end(), 1);
}
