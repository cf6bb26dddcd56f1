//! Live ingest: a request's bytes parsed, checked against the registered sites and the
//! duplicate index, appended, and answered once durable.

use std::sync::{Arc, Mutex};

use spoor_log::keys::KeyStored;
use spoor_log::{EventLog, Handoff, Keyed, Keyring, LogError, Position};
use spoor_protocol::sealing;
use spoor_protocol::stored::{RecordContent, StoredRecord, hash_hex};
use spoor_protocol::tree::Json;
use spoor_protocol::{EventKind, Incoming, TrackerEvent};

use crate::dedup::{Claim, DedupIndex, Keys, keys_of};
use crate::error::IngestError;
use crate::sites::SiteDirectory;
use crate::unsettled::Unsettled;

/// Bytes a stored record takes beyond its request body, about (its receive time and
/// request hash, and field names spelt out in full).
const RECORD_OVERHEAD: usize = 256;

/// What became of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable in the log at this position.
    Stored(Position),
    /// Acknowledged, but the same bytes were stored within the retry window: not stored
    /// again.
    Duplicate,
    /// A shop plugin's diagnostic record: acknowledged and not stored.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub outcome: Outcome,
    pub event: Option<EventKind>,
}

/// A request parsed, checked and encoded, waiting to be appended.
pub(crate) struct Prepared {
    pub(crate) bytes: Vec<u8>,
    /// What `bytes` decode to, for the state's follower (see [`Ingestor::hand_off_to`]).
    pub(crate) record: StoredRecord,
    pub(crate) keys: Keys,
    pub(crate) event: Option<EventKind>,
    /// Keys made for sealing it that must be stored before it is appended.
    pub(crate) storing: Vec<(String, KeyStored)>,
}

// Nearly every step appends: boxing the record would cost each an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step {
    Done(Result<Accepted, IngestError>),
    Append(Prepared),
}

pub struct Ingestor {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) sites: Arc<dyn SiteDirectory>,
    pub(crate) dedup: Arc<DedupIndex>,
    pub(crate) unsettled: Arc<Unsettled>,
    /// The log position the last saved index snapshot covers; held while saving, so
    /// that saves take turns at the one file.
    pub(crate) index_saved_at: Mutex<Position>,
    /// Where each record about to be appended is also handed, decoded, to the state's
    /// follower in this process.
    pub(crate) handoff: Option<Arc<Handoff<StoredRecord>>>,
    /// On a log that keeps personal parts sealed, the keys they are sealed with.
    pub(crate) keys: Option<Arc<Keyring>>,
}

impl Ingestor {
    pub(crate) fn with_index(
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
            keys: None,
        }
    }

    /// Seals each record's personal part with `keys` before it is appended (see
    /// `spoor_protocol::sealing`).
    pub fn sealing_with(mut self, keys: Option<Arc<Keyring>>) -> Self {
        self.keys = keys;
        self
    }

    /// Hands every record this ingestor appends, decoded, to `handoff` as well: a
    /// follower of the log in this process then takes it from there instead of decoding
    /// the bytes it reads back.
    pub fn hand_off_to(mut self, handoff: Arc<Handoff<StoredRecord>>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Ingests one request body.
    pub async fn ingest_one(&self, body: &[u8], now_ms: i64) -> Result<Accepted, IngestError> {
        self.ingest_one_admitted(body, now_ms, &admit_all).await
    }

    /// [`Ingestor::ingest_one`], for a client that `admit` may hold back per site.
    pub async fn ingest_one_admitted(
        &self,
        body: &[u8],
        now_ms: i64,
        admit: &Admit<'_>,
    ) -> Result<Accepted, IngestError> {
        let mut results = self.ingest_many_admitted(&[body], now_ms, admit).await;
        results.pop().expect("one result per item")
    }

    /// Ingests several events (a batch): one result per item, in order. Valid items are
    /// stored even when others are rejected; all that are stored share one durable append.
    pub async fn ingest_many(
        &self,
        items: &[&[u8]],
        now_ms: i64,
    ) -> Vec<Result<Accepted, IngestError>> {
        self.ingest_many_admitted(items, now_ms, &admit_all).await
    }

    /// [`Ingestor::ingest_many`], for a client that `admit` may hold back per site.
    pub async fn ingest_many_admitted(
        &self,
        items: &[&[u8]],
        now_ms: i64,
        admit: &Admit<'_>,
    ) -> Vec<Result<Accepted, IngestError>> {
        let steps: Vec<Step> = items
            .iter()
            .map(|item| match self.prepare(item, now_ms, admit) {
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
    pub(crate) fn prepare(
        &self,
        body: &[u8],
        now_ms: i64,
        admit: &Admit<'_>,
    ) -> Result<Option<Prepared>, IngestError> {
        let (peeked, parsed) = spoor_protocol::json::with_tree(body, |tree| {
            let parsed = spoor_protocol::parse_tree(tree, now_ms);
            // The event's name counts a rejection by event type, its site by site; an
            // accepted event has both.
            let peeked = parsed.is_err().then(|| peek_general(tree)).flatten();
            (peeked.unwrap_or_default(), parsed)
        })
        .map_err(|error| IngestError::Rejected {
            error,
            event: None,
            site_id: None,
        })?;
        let content = match parsed {
            Ok(Incoming::Event(mut event)) => {
                if !self.sites.is_registered(&event.site_id) {
                    return Err(IngestError::UnknownSite {
                        event: event.kind(),
                        site_id: event.site_id.into(),
                    });
                }
                match admit(&event.site_id, event.kind()) {
                    Ok(()) => {}
                    Err(Refusal::Wait(wait)) => {
                        return Err(IngestError::RateLimited {
                            event: event.kind(),
                            site_id: event.site_id.into(),
                            wait,
                        });
                    }
                    Err(Refusal::Key(problem)) => {
                        return Err(IngestError::KeyRequired {
                            event: event.kind(),
                            site_id: event.site_id.into(),
                            problem,
                        });
                    }
                }
                event.datetime.get_or_insert(now_ms);
                RecordContent::Event(event)
            }
            Ok(Incoming::ContactLink(link)) => RecordContent::ContactLink(link),
            Ok(Incoming::PluginLog(_)) => return Ok(None),
            Err(error) => {
                // Counted by site only for a registered one: others are no one's to see.
                let site_id = (peeked.site_id).filter(|site| self.sites.is_registered(site));
                return Err(IngestError::Rejected {
                    error,
                    event: peeked.event,
                    site_id,
                });
            }
        };
        let record = StoredRecord {
            sealed: None,
            received_at: now_ms,
            request_hash: hash_hex(request_hash(body)),
            content,
        };
        Ok(Some(self.encode(record, body.len())))
    }

    /// Encodes `record`, about `size_hint` bytes once encoded: written into a buffer of
    /// about that size, it is not copied into larger ones as it grows.
    pub(crate) fn encode(&self, record: StoredRecord, size_hint: usize) -> Prepared {
        let mut bytes = Vec::with_capacity(size_hint + RECORD_OVERHEAD);
        let mut storing = Vec::new();
        match &self.keys {
            Some(keys) => {
                let mut sealed = record.clone();
                let made: Result<(), std::convert::Infallible> =
                    sealing::seal(&mut sealed, |name| {
                        let key = keys.key_for(name);
                        storing.extend(key.storing.map(|s| (key.id.clone(), s)));
                        Ok((key.id, key.key))
                    });
                made.expect("keys are made in memory");
                serde_json::to_writer(&mut bytes, &sealed)
            }
            None => serde_json::to_writer(&mut bytes, &record),
        }
        .expect("records serialise");
        Prepared {
            bytes,
            keys: keys_of(&record).expect("a record made here has a valid hash"),
            event: record.event().map(TrackerEvent::kind),
            record,
            storing,
        }
    }

    /// Appends the records of `keys` (claimed) and settles the claims. In a task of its
    /// own: a request whose client goes away mid-write would otherwise drop this future,
    /// leave the claims unsettled and its retries waiting for ever.
    pub(crate) async fn append_and_settle(
        &self,
        records: Vec<Keyed>,
        keys: Vec<Keys>,
        storing: Vec<(String, KeyStored)>,
    ) -> Result<Position, LogError> {
        if records.is_empty() {
            return Ok(self.log.end());
        }
        let (log, dedup, unsettled) =
            (self.log.clone(), self.dedup.clone(), self.unsettled.clone());
        let sealing_keys = self.keys.clone();
        let task = tokio::spawn(async move {
            let _unsettled = unsettled.begin(&*log);
            let appended = match keys_stored(sealing_keys, storing).await {
                Ok(()) => log.append_keyed(records).await,
                Err(error) => Err(error),
            };
            for keys in keys {
                dedup.settle(keys, appended.is_ok());
            }
            appended
        });
        task.await.unwrap_or(Err(LogError::Failed))
    }

    /// Claims each prepared record's keys, appends the new ones in one durable write,
    /// settles the claims, and waits for duplicates of records that were in flight.
    pub(crate) async fn commit(
        &self,
        steps: Vec<Step>,
        now_ms: i64,
    ) -> Vec<Result<Accepted, IngestError>> {
        enum Pending {
            Done(Result<Accepted, IngestError>),
            New(Keys, Option<EventKind>),
            Waiting(Option<EventKind>, tokio::sync::oneshot::Receiver<bool>),
        }
        let mut to_append = Vec::new();
        let mut storing = Vec::new();
        let mut not_appended = Vec::new();
        let pending: Vec<Pending> = steps
            .into_iter()
            .map(|step| match step {
                Step::Done(result) => Pending::Done(result),
                Step::Append(p) => match self.dedup.claim(p.keys, now_ms) {
                    Claim::New => {
                        // A site's records keep their order together in a partitioned log.
                        let key = p.record.site_id().map(str::to_string);
                        if let Some(handoff) = &self.handoff {
                            handoff.deposit(&p.bytes, p.record);
                        }
                        to_append.push(Keyed {
                            key,
                            payload: p.bytes,
                        });
                        storing.extend(p.storing);
                        Pending::New(p.keys, p.event)
                    }
                    Claim::Duplicate => {
                        not_appended.extend(p.storing);
                        Pending::Done(Ok(Accepted {
                            outcome: Outcome::Duplicate,
                            event: p.event,
                        }))
                    }
                    Claim::InFlight(rx) => {
                        not_appended.extend(p.storing);
                        Pending::Waiting(p.event, rx)
                    }
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
        if !not_appended.is_empty() {
            // Keys made for records not appended are still stored: settled once they are,
            // so that none waits unnoticed and a failed one is never sealed with.
            tokio::spawn(keys_stored(self.keys.clone(), not_appended));
        }
        let appended = self.append_and_settle(to_append, new_keys, storing).await;
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
                Pending::Waiting(event, rx) => match rx.await {
                    Ok(true) => Ok(Accepted {
                        outcome: Outcome::Duplicate,
                        event,
                    }),
                    _ => Err(IngestError::Log(LogError::Failed)),
                },
            });
        }
        results
    }

    /// The keys records are sealed with, on a log that keeps them.
    pub fn sealing_keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// For `/metrics`: request hashes held for the retry window.
    pub fn dedup_size(&self) -> usize {
        self.dedup.len()
    }
}

/// Waits until the keys the records about to be appended were sealed with are stored: a
/// reader that finds a record must find its keys.
async fn keys_stored(
    keys: Option<Arc<Keyring>>,
    storing: Vec<(String, KeyStored)>,
) -> Result<(), LogError> {
    let Some(keys) = keys else {
        return Ok(());
    };
    let mut outcome = Ok(());
    for (id, stored) in storing {
        let stored = stored.wait().await;
        keys.settle(&id, stored.is_ok());
        if outcome.is_ok() {
            outcome = stored;
        }
    }
    outcome
}

/// Whether a client may send a site another event of a kind: `Err` says why not.
pub type Admit<'a> = dyn Fn(&str, EventKind) -> Result<(), Refusal> + Sync + 'a;

/// Why a client may not send an event now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its rate limit: it may again after this long.
    Wait(std::time::Duration),
    /// The site takes events of this kind only with its key, and the request's did not do.
    Key(KeyProblem),
}

/// What was wrong with the key of a request that needed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// None was sent (as `Authorization: Bearer`).
    Missing,
    /// The one sent is not the site's (nor the admin token).
    NotTheSites,
    /// The address sent too many refused keys lately: it may try again after this long.
    TooManyRefused(std::time::Duration),
}

fn admit_all(_site_id: &str, _kind: EventKind) -> Result<(), Refusal> {
    Ok(())
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
        LogError::Stalled(reason) => LogError::Stalled(reason.clone()),
        LogError::Unavailable(reason) => LogError::Unavailable(reason.clone()),
        _ => LogError::Failed,
    }
}

/// The event name and site of a body, as far as they can be read, for counting
/// rejections by event type and by site.
fn peek_general(value: &Json<'_>) -> Option<Peeked> {
    let peek_in = |info: &Json<'_>| Peeked {
        event: info
            .get("eventName")
            .and_then(Json::as_str)
            .and_then(EventKind::from_name),
        site_id: info
            .get("siteId")
            .and_then(Json::as_str)
            .map(str::to_string),
    };
    match value.get("GeneralInfo")? {
        // `GeneralInfo` sent as a string holding JSON.
        Json::String(text) => Some(peek_in(&serde_json::from_str::<Json<'_>>(text).ok()?)),
        info => Some(peek_in(info)),
    }
}

/// What a refused event's `GeneralInfo` says, as far as it can be read.
#[derive(Default)]
struct Peeked {
    event: Option<EventKind>,
    site_id: Option<String>,
}
