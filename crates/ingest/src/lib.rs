//! From request bytes to a durable log record.
//!
//! [`Ingestor`] parses and validates each event (`spoor_protocol`), refuses sites that are
//! not registered, recognises retries and repeated orders, and appends the rest to the
//! [`EventLog`]; it answers only once the records are durable. It knows nothing of HTTP:
//! the server hands it bytes and a receive time.

pub mod dedup;
pub mod export;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spoor_log::{EventLog, Handoff, LogError, Position};
use spoor_protocol::{EventBody, EventKind, Incoming, ProtocolError, TrackerEvent};

use dedup::{Claim, DedupIndex, DuplicateOf, Keys, order_key};
use spoor_protocol::stored::{self, FeedItems, RecordContent, StoredRecord, hash_hex};
use spoor_protocol::tree::Json;

/// Records read per step when scanning the log.
const SCAN_CHUNK: usize = 4096;
/// Bytes a stored record takes beyond its request body, about (its receive time and
/// request hash, and field names spelt out in full).
const RECORD_OVERHEAD: usize = 256;
/// Feed items stored per log record.
pub const FEED_ITEMS_PER_RECORD: usize = 1000;

/// The sites whose events are accepted. The server's per-site settings answer; ingest
/// needs no more of them than this.
pub trait SiteDirectory: Send + Sync {
    fn is_registered(&self, site_id: &str) -> bool;
    /// Registers a site whose records an import brings; `Ok(true)` when it was new.
    fn register_imported(&self, site_id: &str, now_ms: i64) -> Result<bool, String>;
}

/// What a feed import did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedSummary {
    /// Items in the feed.
    pub items: u64,
    /// Items stored.
    pub imported: u64,
    /// The same feed was imported within the retry window: nothing stored again.
    pub unchanged_repeat: bool,
    /// Items left out, with why.
    pub rejected: Vec<spoor_protocol::feed::FeedItemError>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{error}")]
    Rejected {
        error: ProtocolError,
        /// The event's name, when the body got far enough to tell.
        event: Option<EventKind>,
    },
    #[error(
        "site {site_id:?} is not registered: register it with `spoor serve --site {site_id}` \
         or POST /admin/v1/sites {{\"siteId\": \"{site_id}\"}}"
    )]
    UnknownSite { site_id: String, event: EventKind },
    #[error("{0}")]
    InvalidSite(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Storage(String),
}

/// What became of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable in the log at this position.
    Stored(Position),
    /// Acknowledged, but already stored: not stored again.
    Duplicate(DuplicateOf),
    /// A shop plugin's diagnostic record: acknowledged and not stored.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub outcome: Outcome,
    pub event: Option<EventKind>,
}

/// A request parsed, checked and encoded, waiting to be appended.
struct Prepared {
    bytes: Vec<u8>,
    /// What `bytes` decode to, for the state's follower (see [`Ingestor::hand_off_to`]).
    record: StoredRecord,
    keys: Keys,
    event: Option<EventKind>,
}

// Nearly every step appends: boxing the record would cost each an allocation.
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(Result<Accepted, IngestError>),
    Append(Prepared),
}

pub struct Ingestor {
    log: Arc<dyn EventLog>,
    sites: Arc<dyn SiteDirectory>,
    dedup: Arc<DedupIndex>,
    unsettled: Arc<Unsettled>,
    /// The log position the last saved index snapshot covers; held while saving, so
    /// that saves take turns at the one file.
    index_saved_at: Mutex<Position>,
    /// Where each record about to be appended is also handed, decoded, to the state's
    /// follower in this process.
    handoff: Option<Arc<Handoff<StoredRecord>>>,
}

/// Appends whose claims are not settled yet, counted by the log's end when each began.
/// Their records lie at or after that end, and every record before the lowest such end
/// has its key settled in the index: an index snapshot is complete up to there.
#[derive(Default)]
struct Unsettled(Mutex<BTreeMap<Position, usize>>);

impl Unsettled {
    /// Notes an append about to start; dropping the guard ends it.
    fn begin(self: &Arc<Self>, log: &dyn EventLog) -> UnsettledAppend {
        let mut floors = self.0.lock().expect("unsettled appends");
        // Read under the lock: a snapshot either sees this append or an end before it.
        let floor = log.end();
        *floors.entry(floor).or_default() += 1;
        UnsettledAppend {
            all: self.clone(),
            floor,
        }
    }

    /// The position below which every appended record's key is settled.
    fn settled_end(&self, log: &dyn EventLog) -> Position {
        let floors = self.0.lock().expect("unsettled appends");
        floors.keys().next().copied().unwrap_or_else(|| log.end())
    }
}

struct UnsettledAppend {
    all: Arc<Unsettled>,
    floor: Position,
}

impl Drop for UnsettledAppend {
    fn drop(&mut self) {
        let mut floors = self.all.0.lock().expect("unsettled appends");
        if let Some(count) = floors.get_mut(&self.floor) {
            *count -= 1;
            if *count == 0 {
                floors.remove(&self.floor);
            }
        }
    }
}

impl Ingestor {
    /// Builds the ingestor over an opened log, rebuilding the duplicate index from it.
    pub fn open(
        log: Arc<dyn EventLog>,
        sites: Arc<dyn SiteDirectory>,
        now_ms: i64,
    ) -> Result<Self, IngestError> {
        let dedup = DedupIndex::default();
        index_records(&dedup, &*log, 0, now_ms)?;
        Ok(Ingestor::with_index(log, sites, dedup, 0))
    }

    fn with_index(
        log: Arc<dyn EventLog>,
        sites: Arc<dyn SiteDirectory>,
        dedup: DedupIndex,
        saved_at: Position,
    ) -> Self {
        Ingestor {
            log,
            sites,
            dedup: Arc::new(dedup),
            unsettled: Arc::default(),
            index_saved_at: Mutex::new(saved_at),
            handoff: None,
        }
    }

    /// Hands every record this ingestor appends, decoded, to `handoff` as well: a
    /// follower of the log in this process then takes it from there instead of decoding
    /// the bytes it reads back.
    pub fn hand_off_to(mut self, handoff: Arc<Handoff<StoredRecord>>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Like [`Ingestor::open`], but starting from the index saved at `snapshot` (by
    /// [`Ingestor::save_index`], at a clean stop or while running) and reading only the
    /// log after it. A snapshot that is missing, unreadable or ahead of the log is not
    /// used.
    pub fn open_with_snapshot(
        log: Arc<dyn EventLog>,
        sites: Arc<dyn SiteDirectory>,
        now_ms: i64,
        snapshot: &std::path::Path,
    ) -> Result<Self, IngestError> {
        let loaded = std::fs::read(snapshot)
            .ok()
            .and_then(|bytes| DedupIndex::from_bytes(&bytes))
            .filter(|(_, position)| *position <= log.end());
        let Some((dedup, position)) = loaded else {
            return Self::open(log, sites, now_ms);
        };
        index_records(&dedup, &*log, position, now_ms)?;
        tracing::info!(
            position,
            replayed = log.end() - position,
            "duplicate index loaded from its snapshot"
        );
        Ok(Ingestor::with_index(log, sites, dedup, position))
    }

    /// Saves the duplicate index for [`Ingestor::open_with_snapshot`], at any time: the
    /// snapshot covers the log up to the first append whose claims are still unsettled,
    /// and a start reads the log from there (keys it holds already are harmless). Saved
    /// while serving, it bounds how much of the log a start after a crash has to read.
    pub fn save_index(&self, snapshot: &std::path::Path) -> std::io::Result<()> {
        let mut saved_at = self.index_saved_at.lock().expect("index snapshot");
        self.save_index_locked(snapshot, &mut saved_at)
    }

    /// Saves the index when the log has grown by `every` records since the last save;
    /// returns whether it did.
    pub fn save_index_every(
        &self,
        snapshot: &std::path::Path,
        every: u64,
    ) -> std::io::Result<bool> {
        let mut saved_at = self.index_saved_at.lock().expect("index snapshot");
        if self.log.end() < *saved_at + every {
            return Ok(false);
        }
        self.save_index_locked(snapshot, &mut saved_at)?;
        Ok(true)
    }

    fn save_index_locked(
        &self,
        snapshot: &std::path::Path,
        saved_at: &mut Position,
    ) -> std::io::Result<()> {
        let position = self.unsettled.settled_end(&*self.log);
        let bytes = self.dedup.to_bytes(position);
        spoor_log::write_atomically(snapshot, &bytes)?;
        *saved_at = position;
        Ok(())
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Ingests one request body.
    pub async fn ingest_one(&self, body: &[u8], now_ms: i64) -> Result<Accepted, IngestError> {
        let mut results = self.ingest_many(&[body], now_ms).await;
        results.pop().expect("one result per item")
    }

    /// Ingests several events (a batch): one result per item, in order. Valid items are
    /// stored even when others are rejected; all that are stored share one durable append.
    pub async fn ingest_many(
        &self,
        items: &[&[u8]],
        now_ms: i64,
    ) -> Vec<Result<Accepted, IngestError>> {
        let steps: Vec<Step> = items
            .iter()
            .map(|item| match self.prepare(item, now_ms) {
                Ok(Some(prepared)) => Step::Append(prepared),
                Ok(None) => Step::Done(Ok(Accepted {
                    outcome: Outcome::Ignored,
                    event: None,
                })),
                Err(e) => Step::Done(Err(e)),
            })
            .collect();
        self.commit(steps, now_ms).await
    }

    /// Parses and checks one item; `None` for a plugin log record, which is not stored.
    fn prepare(&self, body: &[u8], now_ms: i64) -> Result<Option<Prepared>, IngestError> {
        let rejected = |error, event| IngestError::Rejected { error, event };
        let (named, parsed) = spoor_protocol::json::with_tree(body, |tree| {
            let parsed = spoor_protocol::parse_tree(tree, now_ms);
            // The event's name counts a rejection by event type; an accepted event has it.
            let named = parsed.is_err().then(|| peek_event_name(tree)).flatten();
            (named, parsed)
        })
        .map_err(|e| rejected(e, None))?;
        let content = match parsed {
            Ok(Incoming::Event(mut event)) => {
                if !self.sites.is_registered(&event.site_id) {
                    return Err(IngestError::UnknownSite {
                        event: event.kind(),
                        site_id: event.site_id.into(),
                    });
                }
                event.datetime.get_or_insert(now_ms);
                RecordContent::Event(event)
            }
            Ok(Incoming::ContactLink(link)) => RecordContent::ContactLink(link),
            Ok(Incoming::PluginLog(_)) => return Ok(None),
            Err(error) => return Err(rejected(error, named)),
        };
        let record = StoredRecord {
            received_at: now_ms,
            request_hash: hash_hex(request_hash(body)),
            content,
        };
        Ok(Some(self.encode(record, body.len())))
    }

    /// Encodes `record`, about `size_hint` bytes once encoded: written into a buffer of
    /// about that size, it is not copied into larger ones as it grows.
    fn encode(&self, record: StoredRecord, size_hint: usize) -> Prepared {
        let mut bytes = Vec::with_capacity(size_hint + RECORD_OVERHEAD);
        serde_json::to_writer(&mut bytes, &record).expect("records serialise");
        Prepared {
            bytes,
            keys: keys_of(&record).expect("a record made here has a valid hash"),
            event: record.event().map(TrackerEvent::kind),
            record,
        }
    }

    /// Appends the records of `keys` (claimed) and settles the claims. In a task of its
    /// own: a request whose client goes away mid-write would otherwise drop this future,
    /// leave the claims unsettled and its retries waiting for ever.
    async fn append_and_settle(
        &self,
        records: Vec<Vec<u8>>,
        keys: Vec<Keys>,
    ) -> Result<Position, LogError> {
        if records.is_empty() {
            return Ok(self.log.end());
        }
        let (log, dedup, unsettled) =
            (self.log.clone(), self.dedup.clone(), self.unsettled.clone());
        let task = tokio::spawn(async move {
            let _unsettled = unsettled.begin(&*log);
            let appended = log.append(records).await;
            for keys in keys {
                dedup.settle(keys, appended.is_ok());
            }
            appended
        });
        task.await.unwrap_or(Err(LogError::Failed))
    }

    /// Claims each prepared record's keys, appends the new ones in one durable write,
    /// settles the claims, and waits for duplicates of records that were in flight.
    async fn commit(&self, steps: Vec<Step>, now_ms: i64) -> Vec<Result<Accepted, IngestError>> {
        enum Pending {
            Done(Result<Accepted, IngestError>),
            New(Keys, Option<EventKind>),
            Waiting(
                DuplicateOf,
                Option<EventKind>,
                tokio::sync::oneshot::Receiver<bool>,
            ),
        }
        let mut to_append = Vec::new();
        let pending: Vec<Pending> = steps
            .into_iter()
            .map(|step| match step {
                Step::Done(result) => Pending::Done(result),
                Step::Append(p) => match self.dedup.claim(p.keys, now_ms) {
                    Claim::New => {
                        if let Some(handoff) = &self.handoff {
                            handoff.deposit(&p.bytes, p.record);
                        }
                        to_append.push(p.bytes);
                        Pending::New(p.keys, p.event)
                    }
                    Claim::Duplicate(of) => Pending::Done(Ok(Accepted {
                        outcome: Outcome::Duplicate(of),
                        event: p.event,
                    })),
                    Claim::InFlight(of, rx) => Pending::Waiting(of, p.event, rx),
                },
            })
            .collect();
        let new_keys: Vec<Keys> = pending
            .iter()
            .filter_map(|p| match p {
                Pending::New(keys, _) => Some(*keys),
                _ => None,
            })
            .collect();
        let appended = self.append_and_settle(to_append, new_keys).await;
        let mut next = appended.as_ref().ok().copied();
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            results.push(match p {
                Pending::Done(result) => result,
                Pending::New(_, event) => match (&appended, next.as_mut()) {
                    (Ok(_), Some(position)) => {
                        let stored = *position;
                        *position += 1;
                        Ok(Accepted {
                            outcome: Outcome::Stored(stored),
                            event,
                        })
                    }
                    (Err(e), _) => Err(IngestError::Log(clone_log_error(e))),
                    (Ok(_), None) => unreachable!("a position exists when the append succeeded"),
                },
                Pending::Waiting(of, event, rx) => match rx.await {
                    Ok(true) => Ok(Accepted {
                        outcome: Outcome::Duplicate(of),
                        event,
                    }),
                    _ => Err(IngestError::Log(LogError::Failed)),
                },
            });
        }
        results
    }

    /// Loads exported records (NDJSON lines of `spoor events export`), skipping any that
    /// this log holds already, so importing the same file twice stores it once. Sites the
    /// records name are registered when missing.
    pub async fn import(
        &self,
        lines: &[&str],
        now_ms: i64,
    ) -> Result<export::ImportSummary, IngestError> {
        let mut summary = export::ImportSummary::default();
        let present = export::record_identities(&*self.log)?;
        let mut steps = Vec::new();
        for (number, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = match serde_json::from_str::<stored::ExportedRecord>(line) {
                Ok(exported) => exported.record,
                Err(e) => {
                    summary.note_error(number + 1, format!("not an exported record: {e}"));
                    continue;
                }
            };
            let Some(identity) = export::identity(&record) else {
                summary.note_error(number + 1, "requestHash: expected 32 hex digits".into());
                continue;
            };
            if present.contains(&identity) {
                summary.already_present += 1;
                continue;
            }
            if let Some(site) = record.site_id()
                && (self.sites.register_imported(site, now_ms)).map_err(IngestError::InvalidSite)?
            {
                summary.sites_registered.push(site.to_string());
            }
            let mut prepared = self.encode(record, line.len());
            // Claim by identity rather than request bytes: an import keeps every record
            // that is not the same record, while orders are still stored once.
            prepared.keys.request = identity;
            steps.push(Step::Append(prepared));
        }
        for result in self.commit(steps, now_ms).await {
            match result? {
                Accepted {
                    outcome: Outcome::Stored(_),
                    ..
                } => summary.imported += 1,
                _ => summary.duplicate_orders += 1,
            }
        }
        Ok(summary)
    }

    /// Imports a product feed (Google Merchant RSS 2.0 or Atom) for a registered site: the
    /// readable items are stored, in records of at most [`FEED_ITEMS_PER_RECORD`], and the
    /// others reported. The same feed bytes imported again within the retry window are
    /// recognised and not stored twice.
    pub async fn import_feed(
        &self,
        site_id: &str,
        xml: &[u8],
        now_ms: i64,
    ) -> Result<FeedSummary, IngestError> {
        if !self.sites.is_registered(site_id) {
            return Err(IngestError::InvalidSite(format!(
                "site {site_id:?} is not registered"
            )));
        }
        let feed = spoor_protocol::feed::parse_feed(xml)
            .map_err(|error| IngestError::Rejected { error, event: None })?;
        let feed_hash = request_hash(xml);
        let steps = feed
            .items
            .chunks(FEED_ITEMS_PER_RECORD)
            .enumerate()
            .map(|(chunk, items)| {
                let record = StoredRecord {
                    received_at: now_ms,
                    request_hash: hash_hex(feed_hash ^ chunk as u128),
                    content: RecordContent::Feed(FeedItems {
                        site_id: site_id.to_string(),
                        items: items.to_vec(),
                    }),
                };
                Step::Append(self.encode(record, 0))
            })
            .collect();
        let mut summary = FeedSummary {
            items: (feed.items.len() + feed.errors.len()) as u64,
            imported: 0,
            unchanged_repeat: false,
            rejected: feed.errors,
        };
        for result in self.commit(steps, now_ms).await {
            match result?.outcome {
                Outcome::Stored(_) => summary.imported = feed.items.len() as u64,
                _ => summary.unchanged_repeat = true,
            }
        }
        Ok(summary)
    }

    /// Counts for `/metrics`: request hashes in the retry window, and order numbers held.
    pub fn dedup_sizes(&self) -> (usize, usize) {
        self.dedup.len()
    }
}

/// The hash that makes a client's retry recognisable: xxh3-128 of the request bytes.
pub fn request_hash(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

fn clone_log_error(error: &LogError) -> LogError {
    match error {
        LogError::Closed => LogError::Closed,
        LogError::ReadOnly => LogError::ReadOnly,
        LogError::RecordTooLarge(n) => LogError::RecordTooLarge(*n),
        _ => LogError::Failed,
    }
}

/// The event name of a body, when it has a recognisable one, for metrics on rejections.
fn peek_event_name(value: &Json<'_>) -> Option<EventKind> {
    let name_in = |info: &Json<'_>| EventKind::from_name(info.get("eventName")?.as_str()?);
    match value.get("GeneralInfo")? {
        // `GeneralInfo` sent as a string holding JSON.
        Json::String(text) => name_in(&serde_json::from_str::<Json<'_>>(text).ok()?),
        info => name_in(info),
    }
}

/// Adds to the index every record of the log from `from` on.
fn index_records(
    dedup: &DedupIndex,
    log: &dyn EventLog,
    from: Position,
    now_ms: i64,
) -> Result<(), IngestError> {
    scan_as(log, from, |_, view: KeysView| {
        dedup.insert_durable(view.keys()?, view.received_at, now_ms);
        Ok(())
    })
}

/// Just what the duplicate index needs of a stored record: rebuilding the index at start
/// reads every record, and skipping the rest of each is about twice as fast.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysView {
    received_at: i64,
    request_hash: String,
    event: Option<EventKeysView>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventKeysView {
    site_id: String,
    purchase: Option<OrderNumberView>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderNumberView {
    order_number: String,
}

impl KeysView {
    fn keys(&self) -> Result<Keys, IngestError> {
        let request = stored::parse_hash_hex(&self.request_hash).ok_or_else(|| {
            IngestError::Storage(format!(
                "record has a bad requestHash {:?}",
                self.request_hash
            ))
        })?;
        let order = self.event.as_ref().and_then(|event| {
            let purchase = event.purchase.as_ref()?;
            Some(order_key(&event.site_id, &purchase.order_number))
        });
        Ok(Keys { request, order })
    }
}

fn keys_of(record: &StoredRecord) -> Result<Keys, IngestError> {
    let request = stored::parse_hash_hex(&record.request_hash).ok_or_else(|| {
        IngestError::Storage(format!(
            "record has a bad requestHash {:?}",
            record.request_hash
        ))
    })?;
    let order = match record.event() {
        Some(TrackerEvent {
            site_id,
            body: EventBody::PurchasedItems { purchase },
            ..
        }) => Some(order_key(site_id, &purchase.order_number)),
        _ => None,
    };
    Ok(Keys { request, order })
}

/// Calls `visit` with every record at or after `from`, with its position.
pub fn scan_from(
    log: &dyn EventLog,
    from: Position,
    visit: impl FnMut(Position, StoredRecord) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    scan_as(log, from, visit)
}

/// Calls `visit` with every record at or after `from`, decoded as `T`: a whole
/// [`StoredRecord`], or a view of the few fields a scan needs.
fn scan_as<T: serde::de::DeserializeOwned>(
    log: &dyn EventLog,
    from: Position,
    mut visit: impl FnMut(Position, T) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut next = from;
    loop {
        let records = log.read(next, SCAN_CHUNK)?;
        let Some(last) = records.last() else {
            return Ok(());
        };
        next = last.position + 1;
        for record in records {
            let decoded = serde_json::from_slice(&record.payload).map_err(|e| {
                IngestError::Storage(format!(
                    "log record {} is not readable: {e}",
                    record.position
                ))
            })?;
            visit(record.position, decoded)?;
        }
    }
}
