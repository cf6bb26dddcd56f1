//! The persistent outbox: every fired trigger, and every delivery attempt, appended to a
//! log before anything is sent or acknowledged. A restart replays it: deliveries still
//! owed are retried, and a trigger that fired is never fired again.
//!
//! Two stores: the embedded outbox (`<data>/outbox`, the same checksummed, fsynced log as
//! the events), this process's alone; and on a shared log, one topic every engine node
//! follows, where lease records decide which node sends (see `outbox::shared`).
//!
//! Records name a trigger by its identity only (site, type, step, contact number, anchor
//! time, and a digest that checks the contact is still the same person); payloads are
//! built from the state when sent, so an erased contact leaves nothing here to send.

mod shared;

pub use shared::BATCH_DEADLINE;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spoor_engine::ContactId;
use spoor_engine::timers::TriggerKind;
use spoor_log::{EventLog, FileLog, FileLogConfig, Keyring, Position};
use spoor_protocol::dates::DAY_MS;
use spoor_protocol::sealing::Sealed;

use crate::error::TriggerError;
use shared::{Lease, SharedOutbox};

/// A trigger that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fired {
    /// The idempotency key of its deliveries: the same trigger always has the same id.
    pub id: String,
    pub site_id: String,
    pub kind: TriggerKind,
    pub step: u8,
    pub contact: ContactId,
    /// SHA-256 of the contact's email or phone when it fired, hex: a delivery is built
    /// only for that person.
    pub contact_check: String,
    /// How the contact is found when a delivery is built (contact numbers change when
    /// the state is rebuilt after an erasure). Personal data: overwritten when the
    /// contact is erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
    pub anchor: i64,
    /// The product of a price drop or a return to stock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    pub fired_at: i64,
    /// Not delivered before this time (the site's quiet hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// The webhooks it is owed to.
    pub webhooks: Vec<String>,
    /// On a shared outbox, where it is stored: `reach` and `contact_check`, sealed under
    /// the key of the contact's email or phone (erasing the contact deletes the key).
    /// Never set on a record held in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
}

/// The identifier a trigger's contact is found by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reach {
    Email(String),
    Phone(String),
}

impl Reach {
    pub fn identifier(&self) -> spoor_engine::Identifier {
        match self {
            Reach::Email(email) => spoor_engine::Identifier::Email(email.as_str().into()),
            Reach::Phone(phone) => spoor_engine::Identifier::Phone(phone.as_str().into()),
        }
    }
}

/// One delivery attempt and what it came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub id: String,
    pub webhook: String,
    pub at: i64,
    pub delivered: bool,
    /// `HTTP 200`, `HTTP 503`, `timed out`...
    pub outcome: String,
    /// When to try again; none after a delivery, and none once it is a dead letter.
    pub next_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "camelCase")]
enum Record {
    Fired(Fired),
    Attempt(Attempt),
    /// A dead letter sent again by hand.
    Replay {
        id: String,
        webhook: String,
        at: i64,
    },
    /// What a fired record became when its contact was erased (written over it, padded):
    /// its site, kind and day stay, so that what fired stays counted.
    Forgotten {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counted: Option<Counted>,
    },
    /// An engine node of a shared outbox sends the triggers, or claims to (see
    /// `outbox::shared`).
    Lease(Lease),
}

/// A fired trigger as the tally counts it: nothing about its contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    site_id: String,
    kind: TriggerKind,
    fired_at: i64,
}

impl Counted {
    fn of(fired: &Fired) -> Counted {
        Counted {
            site_id: fired.site_id.clone(),
            kind: fired.kind,
            fired_at: fired.fired_at,
        }
    }
}

/// Where the triggers fired per site and day of deleted outbox records are kept.
const FIRED_BEFORE_FILE: &str = "fired-days.json";

/// Triggers fired per site and day, of the records before `before`: the deleted ones
/// (and a few still on disk, not counted again when read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FiredBefore {
    before: Position,
    sites: BTreeMap<String, BTreeMap<i64, [u64; KINDS]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Every attempt failed: kept for inspection and replay.
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Dead,
    ];

    fn slot(self) -> usize {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Delivered => 1,
            DeliveryStatus::Dead => 2,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_at: Option<i64>,
    pub last_outcome: Option<String>,
    /// When it was last tried (or replayed): a settled trigger leaves the outbox a
    /// retention period after its last activity.
    pub last_attempt_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(flatten)]
    pub fired: Fired,
    pub deliveries: BTreeMap<String, Delivery>,
}

/// How long a settled trigger stays, and how long a first message counts against the
/// frequency cap: per site, from its trigger settings.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// A trigger whose deliveries are all delivered or dead leaves this long after its
    /// last activity.
    pub keep_ms: i64,
    pub frequency_cap_ms: i64,
}

#[derive(Default)]
struct State {
    /// By the position of their fired record: log order, so the first is the oldest
    /// record the outbox still needs.
    entries: BTreeMap<Position, Entry>,
    by_id: HashMap<String, Position>,
    /// Deliveries owed, by when: (next attempt at, entry, webhook). Finding the due ones
    /// costs what is due, not everything ever fired.
    owed: BTreeSet<(i64, Position, String)>,
    /// Contact check -> the positions of its fired records, for erasure.
    positions: HashMap<String, Vec<Position>>,
    /// Site -> contact check -> kind -> when its last first message fired (looked up by
    /// borrowed keys: no allocation per trigger).
    first_messages: HashMap<String, HashMap<String, Vec<(TriggerKind, i64)>>>,
    /// Site -> what fired per day and how its deliveries stand: kept as records apply, so
    /// a report reads counters, never every trigger held.
    tallies: HashMap<String, SiteTally>,
    /// The deliveries that are dead letters, by site and their trigger's position.
    dead: BTreeSet<(String, Position, String)>,
    /// What fired, as counted of records already deleted (see [`FiredBefore`]).
    fired_before: FiredBefore,
    /// On a shared outbox, the node that sends, as the lease records decide.
    sender: Option<Lease>,
}

/// Days of fired triggers counted per site: the latest.
pub const TALLY_DAYS: usize = 400;
const KINDS: usize = TriggerKind::ALL.len();

/// A site's triggers in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteTally {
    /// Day number -> triggers fired that day, by kind (in [`TriggerKind::ALL`]'s
    /// order), for the days the outbox's records still cover.
    pub fired: BTreeMap<i64, [u64; KINDS]>,
    /// Deliveries of the triggers held, by kind and state ([`DeliveryStatus::ALL`]'s
    /// order).
    pub deliveries: [[u64; 3]; KINDS],
}

fn add_fired(days: &mut BTreeMap<i64, [u64; KINDS]>, counted: &Counted) {
    let day = counted.fired_at.div_euclid(DAY_MS);
    days.entry(day).or_default()[kind_slot(counted.kind)] += 1;
    if days.len() > TALLY_DAYS {
        days.pop_first();
    }
}

fn kind_slot(kind: TriggerKind) -> usize {
    TriggerKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL")
}

impl SiteTally {
    fn count(&mut self, kind: TriggerKind, status: DeliveryStatus, change: i64) {
        let held = &mut self.deliveries[kind_slot(kind)][status.slot()];
        *held = held.saturating_add_signed(change);
    }
}

impl State {
    fn apply(&mut self, position: Position, record: Record) {
        match record {
            Record::Fired(fired) => {
                if self.by_id.contains_key(&fired.id) {
                    return;
                }
                if fired.step == 0 {
                    let kinds = self
                        .first_messages
                        .entry(fired.site_id.clone())
                        .or_default()
                        .entry(fired.contact_check.clone())
                        .or_default();
                    match kinds.iter_mut().find(|(kind, _)| *kind == fired.kind) {
                        Some((_, last)) => *last = (*last).max(fired.fired_at),
                        None => kinds.push((fired.kind, fired.fired_at)),
                    }
                }
                let first_at = fired
                    .not_before
                    .unwrap_or(fired.fired_at)
                    .max(fired.fired_at);
                let deliveries = fired
                    .webhooks
                    .iter()
                    .map(|hook| {
                        let pending = Delivery {
                            status: DeliveryStatus::Pending,
                            attempts: 0,
                            next_at: Some(first_at),
                            last_outcome: None,
                            last_attempt_at: None,
                        };
                        (hook.clone(), pending)
                    })
                    .collect();
                self.positions
                    .entry(fired.contact_check.clone())
                    .or_default()
                    .push(position);
                for hook in &fired.webhooks {
                    self.owed.insert((first_at, position, hook.clone()));
                }
                if position >= self.fired_before.before {
                    self.count_fired(&Counted::of(&fired));
                }
                let tally = self.tallies.entry(fired.site_id.clone()).or_default();
                let owed = fired.webhooks.len() as i64;
                tally.count(fired.kind, DeliveryStatus::Pending, owed);
                self.by_id.insert(fired.id.clone(), position);
                self.entries.insert(position, Entry { fired, deliveries });
            }
            Record::Attempt(attempt) => {
                self.unowe(&attempt.id, &attempt.webhook);
                if let (false, Some(next_at)) = (attempt.delivered, attempt.next_at) {
                    self.owe(&attempt.id, &attempt.webhook, next_at);
                }
                let status = match (attempt.delivered, attempt.next_at) {
                    (true, _) => DeliveryStatus::Delivered,
                    (false, Some(_)) => DeliveryStatus::Pending,
                    (false, None) => DeliveryStatus::Dead,
                };
                let Some(delivery) = self.delivery(&attempt.id, &attempt.webhook) else {
                    return;
                };
                let before = delivery.status;
                delivery.attempts += 1;
                delivery.last_outcome = Some(attempt.outcome);
                delivery.last_attempt_at = Some(attempt.at);
                delivery.next_at = attempt.next_at;
                delivery.status = status;
                self.moved(&attempt.id, &attempt.webhook, before, status);
            }
            Record::Forgotten { counted, .. } => {
                if let Some(counted) = counted
                    && position >= self.fired_before.before
                {
                    self.count_fired(&counted);
                }
            }
            Record::Lease(lease) => self.lease(lease),
            Record::Replay { id, webhook, at } => {
                self.unowe(&id, &webhook);
                self.owe(&id, &webhook, at);
                if let Some(delivery) = self.delivery(&id, &webhook) {
                    let before = delivery.status;
                    delivery.status = DeliveryStatus::Pending;
                    delivery.attempts = 0;
                    delivery.next_at = Some(at);
                    delivery.last_attempt_at = Some(at);
                    self.moved(&id, &webhook, before, DeliveryStatus::Pending);
                }
            }
        }
    }

    fn count_fired(&mut self, counted: &Counted) {
        let tally = self.tallies.entry(counted.site_id.clone()).or_default();
        add_fired(&mut tally.fired, counted);
    }

    /// A delivery went from `before` to `after`: the site's tally and the dead letters
    /// follow.
    fn moved(&mut self, id: &str, webhook: &str, before: DeliveryStatus, after: DeliveryStatus) {
        let Some(position) = self.by_id.get(id).copied() else {
            return;
        };
        let Some(entry) = self.entries.get(&position) else {
            return;
        };
        let tally = self.tallies.entry(entry.fired.site_id.clone()).or_default();
        tally.count(entry.fired.kind, before, -1);
        tally.count(entry.fired.kind, after, 1);
        let key = (entry.fired.site_id.clone(), position, webhook.to_string());
        if after == DeliveryStatus::Dead {
            self.dead.insert(key);
        } else {
            self.dead.remove(&key);
        }
    }

    /// An entry's deliveries leave the tally (the entry left, or its contact was erased).
    fn let_go(&mut self, position: Position, entry: &Entry) {
        let tally = self.tallies.entry(entry.fired.site_id.clone()).or_default();
        for (webhook, delivery) in &entry.deliveries {
            tally.count(entry.fired.kind, delivery.status, -1);
            let key = (entry.fired.site_id.clone(), position, webhook.clone());
            self.dead.remove(&key);
        }
    }

    fn owe(&mut self, id: &str, webhook: &str, at: i64) {
        if let Some(index) = self.by_id.get(id) {
            self.owed.insert((at, *index, webhook.to_string()));
        }
    }

    fn unowe(&mut self, id: &str, webhook: &str) {
        let Some(position) = self.by_id.get(id).copied() else {
            return;
        };
        if let Some(next_at) = (self.entries.get(&position))
            .and_then(|entry| entry.deliveries.get(webhook))
            .and_then(|d| d.next_at)
        {
            self.owed.remove(&(next_at, position, webhook.to_string()));
        }
    }

    fn delivery(&mut self, id: &str, webhook: &str) -> Option<&mut Delivery> {
        let position = *self.by_id.get(id)?;
        self.entries.get_mut(&position)?.deliveries.get_mut(webhook)
    }

    /// Drops the triggers settled longer ago than their site keeps them, and first
    /// messages older than the site's frequency cap. Returns how many triggers left.
    fn expire(&mut self, now: i64, retention: &impl Fn(&str) -> Retention) -> usize {
        let leaving: Vec<Position> = (self.entries.iter())
            .filter(|(_, entry)| {
                entry.is_settled()
                    && now - entry.last_activity() > retention(&entry.fired.site_id).keep_ms
            })
            .map(|(position, _)| *position)
            .collect();
        for position in &leaving {
            if let Some(entry) = self.entries.remove(position) {
                self.by_id.remove(&entry.fired.id);
                self.let_go(*position, &entry);
            }
        }
        for (site_id, contacts) in &mut self.first_messages {
            let cap = retention(site_id).frequency_cap_ms;
            contacts.retain(|_, kinds| {
                kinds.retain(|(_, at)| now - *at < cap);
                !kinds.is_empty()
            });
        }
        self.first_messages
            .retain(|_, contacts| !contacts.is_empty());
        leaving.len()
    }
}

impl Entry {
    /// Every delivery delivered or dead (or none owed at all).
    fn is_settled(&self) -> bool {
        self.deliveries
            .values()
            .all(|d| d.status != DeliveryStatus::Pending)
    }

    fn last_activity(&self) -> i64 {
        (self.deliveries.values())
            .filter_map(|d| d.last_attempt_at)
            .fold(self.fired.fired_at, i64::max)
    }
}

pub struct Outbox {
    store: Store,
    state: Arc<Mutex<State>>,
}

enum Store {
    /// This process's own: records applied as they are appended, erased by overwriting.
    File {
        log: Arc<FileLog>,
        /// Where [`FIRED_BEFORE_FILE`] is.
        dir: PathBuf,
    },
    /// One for every engine node of a shared log: records applied as they are read back,
    /// in the topic's order, whoever wrote them.
    Shared(SharedOutbox),
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<Outbox, TriggerError> {
        Outbox::open_with_segments_of(dir, 8 * 1024 * 1024)
    }

    fn open_with_segments_of(dir: &Path, segment_bytes: u64) -> Result<Outbox, TriggerError> {
        let config = FileLogConfig {
            segment_bytes,
            commit_interval: Duration::ZERO,
            ..FileLogConfig::default()
        };
        let log =
            FileLog::open(dir, config, None).map_err(|e| TriggerError::Storage(e.to_string()))?;
        let mut state = State::default();
        let fired_before = spoor_log::read_if_exists(&dir.join(FIRED_BEFORE_FILE))
            .map_err(|e| TriggerError::Storage(e.to_string()))?
            .map(|bytes| serde_json::from_slice::<FiredBefore>(&bytes))
            .transpose()
            .map_err(|e| TriggerError::Storage(format!("{FIRED_BEFORE_FILE}: {e}")))?
            .unwrap_or_default();
        for (site, days) in &fired_before.sites {
            state.tallies.entry(site.clone()).or_default().fired = days.clone();
        }
        state.fired_before = fired_before;
        let mut next = 0;
        loop {
            let records = log
                .read(next, 4096)
                .map_err(|e| TriggerError::Storage(e.to_string()))?;
            let Some(last) = records.last() else {
                break;
            };
            next = last.position + 1;
            for record in records {
                match serde_json::from_slice::<Record>(&record.payload) {
                    Ok(parsed) => state.apply(record.position, parsed),
                    // Where and what kind of error only: serde's message may quote a value.
                    Err(error) => tracing::error!(
                        position = record.position,
                        category = ?error.classify(),
                        column = error.column(),
                        "an outbox record could not be read; skipped"
                    ),
                }
            }
        }
        Ok(Outbox {
            store: Store::File {
                log: Arc::new(log),
                dir: dir.to_path_buf(),
            },
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// Opens the outbox every engine node of a shared log follows, on `log`, and reads it
    /// to its end: blocking. The contacts' identifiers in its records are sealed with
    /// `keys`.
    pub fn open_shared(log: Arc<dyn EventLog>, keys: Arc<Keyring>) -> Result<Outbox, TriggerError> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = SharedOutbox::open(log, keys)?;
        shared.read_to(shared.end(), &state)?;
        Ok(Outbox {
            store: Store::Shared(shared),
            state,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Appends `records` durably (one group commit), then applies them: on a shared
    /// outbox, with every record before them, as read back.
    async fn append(&self, records: Vec<Record>) -> Result<(), TriggerError> {
        if records.is_empty() {
            return Ok(());
        }
        let log = match &self.store {
            Store::File { log, .. } => log,
            Store::Shared(shared) => {
                let end = shared.append(records).await?;
                return shared.read_to_later(end, &self.state).await;
            }
        };
        let bytes = records
            .iter()
            .map(|r| serde_json::to_vec(r).expect("outbox records serialise"))
            .collect();
        let first = log
            .append(bytes)
            .await
            .map_err(|e| TriggerError::Storage(e.to_string()))?;
        let mut state = self.state();
        for (offset, record) in records.into_iter().enumerate() {
            state.apply(first + offset as Position, record);
        }
        Ok(())
    }

    /// Whether this node fires and sends triggers now, `now` being the wall clock read
    /// just before. Always on the embedded outbox; on a shared one, after reading what
    /// the other nodes wrote, when it holds the lease (renewing or claiming it first when
    /// due: see `outbox::shared`).
    pub async fn take_turn(&self, now: i64) -> Result<bool, TriggerError> {
        let Store::Shared(shared) = &self.store else {
            return Ok(true);
        };
        let began = std::time::Instant::now();
        let turn = async {
            shared.read_to_later(shared.end(), &self.state).await?;
            let held = self.state().sender.clone();
            if shared.claims(held.as_ref(), now) {
                let lease = shared.issue(now, began);
                self.append(vec![Record::Lease(lease)]).await?;
            }
            Ok::<_, TriggerError>(self.state().sender.clone())
        };
        match turn.await {
            Ok(held) => Ok(shared.acts(held.as_ref())),
            Err(error) => {
                shared.warn(&error, now);
                shared.acts(None);
                Err(error)
            }
        }
    }

    /// Whether a trigger of the contact reached by `reach` can be recorded: on a shared
    /// outbox, not when the contact's keys were deleted (see `outbox::shared`).
    pub fn can_name(&self, site_id: &str, reach: &Reach) -> bool {
        match &self.store {
            Store::File { .. } => true,
            Store::Shared(shared) => shared.can_name(site_id, reach),
        }
    }

    /// How long a batch of deliveries may take once started: on a shared outbox, what the
    /// lease's timing allows (none on the embedded one).
    pub fn batch_deadline(&self) -> Option<Duration> {
        match &self.store {
            Store::File { .. } => None,
            Store::Shared(_) => Some(BATCH_DEADLINE),
        }
    }

    /// This node's name in the shared outbox's leases (none on the embedded one).
    pub fn node_name(&self) -> Option<&str> {
        match &self.store {
            Store::File { .. } => None,
            Store::Shared(shared) => Some(shared.node()),
        }
    }

    /// Whether this node sent the triggers at its last turn (on the embedded outbox,
    /// always).
    pub fn sends(&self) -> bool {
        match &self.store {
            Store::File { .. } => true,
            Store::Shared(shared) => shared.sending(),
        }
    }

    /// Whether the trigger with this id fired already.
    pub fn contains(&self, id: &str) -> bool {
        self.state().by_id.contains_key(id)
    }

    /// When the contact last got a first message of this kind.
    pub fn last_first_message(&self, site_id: &str, check: &str, kind: TriggerKind) -> Option<i64> {
        let state = self.state();
        let kinds = state.first_messages.get(site_id)?.get(check)?;
        kinds.iter().find(|(k, _)| *k == kind).map(|(_, at)| *at)
    }

    /// Records fired triggers, durably; their deliveries are then owed.
    pub async fn fired(&self, fired: Vec<Fired>) -> Result<(), TriggerError> {
        self.append(fired.into_iter().map(Record::Fired).collect())
            .await
    }

    /// Records delivery attempts, durably.
    pub async fn attempted(&self, attempts: Vec<Attempt>) -> Result<(), TriggerError> {
        self.append(attempts.into_iter().map(Record::Attempt).collect())
            .await
    }

    /// Erases every trace of the contact whose check digest is `check`: its fired records
    /// are overwritten in place (the log's redaction; on a shared outbox they are sealed
    /// under the contact's keys, which the erasure deletes), its deliveries are no longer
    /// owed, and its frequency caps are forgotten. Returns how many records were
    /// overwritten (on a shared outbox, let go).
    pub fn forget(&self, check: &str) -> Result<usize, TriggerError> {
        let mut state = self.state();
        // Left in the index until all are overwritten: an erasure that fails midway
        // finds the rest when it is tried again.
        let positions = state.positions.get(check).cloned().unwrap_or_default();
        let ids = match &self.store {
            Store::File { log, .. } => overwrite_fired(log, &positions)?,
            Store::Shared(_) => (positions.iter())
                .filter_map(|position| state.entries.get(position))
                .map(|entry| entry.fired.id.clone())
                .collect(),
        };
        for id in &ids {
            if let Some(index) = state.by_id.get(id).copied()
                && let Some(held) = state.entries.get(&index).cloned()
            {
                state.let_go(index, &held);
                let Some(entry) = state.entries.get_mut(&index) else {
                    continue;
                };
                entry.fired.contact_check.clear();
                let owed: Vec<(i64, String)> = entry
                    .deliveries
                    .iter()
                    .filter_map(|(hook, d)| d.next_at.map(|at| (at, hook.clone())))
                    .collect();
                entry.deliveries.clear();
                for (at, hook) in owed {
                    state.owed.remove(&(at, index, hook));
                }
            }
        }
        state.positions.remove(check);
        for contacts in state.first_messages.values_mut() {
            contacts.remove(check);
        }
        Ok(ids.len())
    }

    /// Lets go of the triggers settled longer ago than their site keeps them (see
    /// [`Retention`]), then of the log's segments that hold only records of triggers
    /// gone. Returns how many triggers left.
    pub fn expire(
        &self,
        now: i64,
        retention: impl Fn(&str) -> Retention,
    ) -> Result<usize, TriggerError> {
        let storage = |e: spoor_log::LogError| TriggerError::Storage(e.to_string());
        // Under the state's lock throughout, so an erasure never looks for a record in a
        // segment being deleted.
        let mut state = self.state();
        let left = state.expire(now, &retention);
        // A topic keeps its records: every node lets go of what it holds alone.
        if let Store::File { log, dir } = &self.store {
            // With no trigger held, every record written so far may go; one being appended
            // meanwhile lands at or after the end, in the segment being written, which
            // stays.
            let oldest_needed = (state.entries.keys().next().copied()).unwrap_or_else(|| log.end());
            count_before(log, dir, &mut state, oldest_needed)?;
            if log.remove_before(oldest_needed).map_err(storage)? > 0 {
                // Records of triggers gone but still on disk keep their positions: an
                // erasure must still overwrite them.
                let first_kept = (log.read(0, 1).map_err(storage)?.first())
                    .map_or(oldest_needed, |r| r.position);
                state.positions.retain(|_, positions| {
                    positions.retain(|p| *p >= first_kept);
                    !positions.is_empty()
                });
            }
        } else {
            // Records on a topic are never overwritten: the erasure index keeps only the
            // triggers held.
            let State {
                positions, entries, ..
            } = &mut *state;
            positions.retain(|_, held| {
                held.retain(|p| entries.contains_key(p));
                !held.is_empty()
            });
        }
        if left > 0 {
            tracing::info!(
                left,
                kept = state.entries.len(),
                "settled triggers left the outbox"
            );
        }
        Ok(left)
    }

    /// Sends a dead letter again from the first attempt; false when there is none.
    pub async fn replay(&self, id: &str, webhook: &str, now: i64) -> Result<bool, TriggerError> {
        let dead = {
            let mut state = self.state();
            state
                .delivery(id, webhook)
                .is_some_and(|d| d.status == DeliveryStatus::Dead)
        };
        if dead {
            self.append(vec![Record::Replay {
                id: id.to_string(),
                webhook: webhook.to_string(),
                at: now,
            }])
            .await?;
        }
        Ok(dead)
    }

    /// Deliveries due at `now`, the longest owed first, at most `max`: (fired trigger,
    /// webhook, attempts so far).
    pub fn due(&self, now: i64, max: usize) -> Vec<(Fired, String, u32)> {
        let state = self.state();
        state
            .owed
            .range(..(now.saturating_add(1), 0, String::new()))
            .take(max)
            .filter_map(|(_, position, hook)| {
                let entry = state.entries.get(position)?;
                let delivery = entry.deliveries.get(hook)?;
                (delivery.status == DeliveryStatus::Pending)
                    .then(|| (entry.fired.clone(), hook.clone(), delivery.attempts))
            })
            .collect()
    }

    /// The site's fired triggers, newest first, at most `limit`; only those with a
    /// delivery in `status` when given.
    pub fn list(&self, site_id: &str, status: Option<DeliveryStatus>, limit: usize) -> Vec<Entry> {
        let state = self.state();
        state
            .entries
            .values()
            .rev()
            .filter(|e| e.fired.site_id == site_id && !e.fired.contact_check.is_empty())
            .filter(|e| status.is_none_or(|s| e.deliveries.values().any(|d| d.status == s)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The site's triggers in figures: what fired per day, how deliveries stand.
    pub fn tally(&self, site_id: &str) -> SiteTally {
        self.state()
            .tallies
            .get(site_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The site's dead letters, newest first, at most `limit`: read from the dead
    /// letters alone.
    pub fn dead_letters(&self, site_id: &str, limit: usize) -> Vec<Entry> {
        let state = self.state();
        let first = (site_id.to_string(), Position::MIN, String::new());
        let mut positions: Vec<Position> = (state.dead.range(first..))
            .take_while(|(site, _, _)| site == site_id)
            .map(|(_, position, _)| *position)
            .collect();
        positions.dedup();
        (positions.iter().rev())
            .filter_map(|position| state.entries.get(position))
            .filter(|entry| !entry.fired.contact_check.is_empty())
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether the trigger `id` of site `site_id` has a dead letter for `webhook`.
    pub fn is_dead_letter(&self, site_id: &str, id: &str, webhook: &str) -> bool {
        let state = self.state();
        let Some(position) = state.by_id.get(id).copied() else {
            return false;
        };
        (state.dead).contains(&(site_id.to_string(), position, webhook.to_string()))
    }

    /// Fired triggers in all, for metrics and tests.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts what fired in the records before `end` into [`FIRED_BEFORE_FILE`], durably,
/// before they may be deleted: what fired stays counted after a restart.
fn count_before(
    log: &FileLog,
    dir: &Path,
    state: &mut State,
    end: Position,
) -> Result<(), TriggerError> {
    let storage = |e: spoor_log::LogError| TriggerError::Storage(e.to_string());
    let mut next = state.fired_before.before;
    if next >= end {
        return Ok(());
    }
    let mut counted = state.fired_before.clone();
    while next < end {
        let records = log.read(next, 4096).map_err(storage)?;
        let Some(last) = records.last() else { break };
        next = last.position + 1;
        for record in records.iter().filter(|r| r.position < end) {
            let fired = match serde_json::from_slice::<Record>(&record.payload) {
                Ok(Record::Fired(fired)) => Some(Counted::of(&fired)),
                Ok(Record::Forgotten { counted, .. }) => counted,
                _ => None,
            };
            if let Some(fired) = fired {
                add_fired(
                    counted.sites.entry(fired.site_id.clone()).or_default(),
                    &fired,
                );
            }
        }
    }
    counted.before = end;
    let bytes = serde_json::to_vec(&counted).expect("counts serialise");
    spoor_log::write_atomically(&dir.join(FIRED_BEFORE_FILE), &bytes)
        .map_err(|e| TriggerError::Storage(format!("{FIRED_BEFORE_FILE}: {e}")))?;
    state.fired_before = counted;
    Ok(())
}

/// Overwrites the fired records at `positions` with what they leave when their contact
/// is erased (the log's redaction); returns their triggers' ids.
fn overwrite_fired(log: &FileLog, positions: &[Position]) -> Result<Vec<String>, TriggerError> {
    let mut replacements = Vec::new();
    let mut ids = Vec::new();
    for position in positions {
        let original = log
            .read(*position, 1)
            .map_err(|e| TriggerError::Storage(e.to_string()))?;
        // A position whose record is gone reads as the next one: never overwritten.
        let Some(record) = original.first().filter(|r| r.position == *position) else {
            continue;
        };
        let (id, counted) = serde_json::from_slice::<Record>(&record.payload)
            .ok()
            .and_then(|r| match r {
                Record::Fired(fired) => Some((fired.id.clone(), Some(Counted::of(&fired)))),
                // Overwritten already by an erasure cut short: written again as it is.
                Record::Forgotten { id, counted } => Some((id, counted)),
                _ => None,
            })
            .unwrap_or_default();
        let forgotten = Record::Forgotten {
            id: id.clone(),
            counted,
        };
        let mut bytes = serde_json::to_vec(&forgotten).expect("serialises");
        if bytes.len() > record.payload.len() {
            return Err(TriggerError::Storage(format!(
                "outbox record {position} cannot be overwritten by a shorter one"
            )));
        }
        bytes.resize(record.payload.len(), b' ');
        replacements.push(spoor_log::Record {
            position: *position,
            payload: bytes,
        });
        ids.push(id);
    }
    log.redact(&replacements)
        .map_err(|e| TriggerError::Storage(e.to_string()))?;
    Ok(ids)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fired abandoned cart of site S, its contact reached by `email`: for tests.
#[cfg(test)]
fn fired_for(id: &str, email: &str) -> Fired {
    Fired {
        id: id.into(),
        site_id: "S".into(),
        kind: TriggerKind::AbandonedCart,
        step: 0,
        contact: 1,
        contact_check: crate::payload::check_of(email),
        reach: Some(Reach::Email(email.into())),
        anchor: 10,
        product: None,
        fired_at: 1_700_000_000_000,
        not_before: None,
        webhooks: vec!["crm".into()],
        sealed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(id: &str) -> Fired {
        Fired {
            contact_check: "c".into(),
            fired_at: 100,
            ..fired_for(id, "c@example.com")
        }
    }

    fn attempt(id: &str, delivered: bool, next_at: Option<i64>) -> Attempt {
        Attempt {
            id: id.into(),
            webhook: "crm".into(),
            at: 100,
            delivered,
            outcome: if delivered { "HTTP 200" } else { "HTTP 503" }.into(),
            next_at,
        }
    }

    fn retention(site_id: &str) -> Retention {
        assert_eq!(site_id, "S");
        Retention {
            keep_ms: 1_000,
            frequency_cap_ms: 500,
        }
    }

    /// The outbox's segment files on disk.
    fn segments(dir: &Path) -> usize {
        let names = std::fs::read_dir(dir).unwrap().flatten();
        names
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count()
    }

    #[tokio::test]
    async fn settled_triggers_leave_after_their_retention_and_their_segments_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open_with_segments_of(dir.path(), 4096).unwrap();
        let ids: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        for id in &ids {
            outbox.fired(vec![fired(id)]).await.unwrap();
        }
        // All delivered at 100 but the last, which keeps failing.
        let mut attempts: Vec<Attempt> = ids.iter().map(|id| attempt(id, true, None)).collect();
        *attempts.last_mut().unwrap() = attempt("t59", false, Some(5_000));
        outbox.attempted(attempts).await.unwrap();
        let before = segments(dir.path());
        assert!(before > 2, "{before} segments");

        assert_eq!(
            outbox.expire(1_000, retention).unwrap(),
            0,
            "not yet a retention old"
        );
        assert_eq!(
            outbox.last_first_message("S", "c", TriggerKind::AbandonedCart),
            None,
            "the frequency cap (500 ms) has passed"
        );
        assert_eq!(outbox.expire(1_101, retention).unwrap(), 59);
        assert!(!outbox.contains("t0") && outbox.contains("t59"));
        assert_eq!(outbox.list("S", None, 100).len(), 1);
        assert!(
            segments(dir.path()) < before,
            "segments of settled triggers are deleted"
        );
        // Erasing the contact still overwrites what is left on disk, without an error.
        outbox.forget("c").unwrap();
        drop(outbox);

        let outbox = Outbox::open_with_segments_of(dir.path(), 4096).unwrap();
        assert!(
            !outbox.contains("t0"),
            "a trigger gone stays gone after a reopen"
        );
        let cart = kind_slot(TriggerKind::AbandonedCart);
        assert_eq!(
            outbox.tally("S").fired[&0][cart],
            60,
            "what fired stays counted when its records are deleted"
        );
        assert!(
            outbox.due(5_000, 10).is_empty(),
            "the erased contact's delivery is not owed"
        );
    }

    #[tokio::test]
    async fn the_tally_follows_deliveries_without_reading_every_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .fired(vec![fired("a"), fired("b"), fired("c")])
            .await
            .unwrap();
        let cart = kind_slot(TriggerKind::AbandonedCart);
        assert_eq!(outbox.tally("S").deliveries[cart], [3, 0, 0]);
        assert_eq!(outbox.tally("S").fired[&0][cart], 3, "fired on day 0");
        let attempts = vec![attempt("a", true, None), attempt("b", false, None)];
        outbox.attempted(attempts).await.unwrap();
        assert_eq!(outbox.tally("S").deliveries[cart], [1, 1, 1]);
        let dead = outbox.dead_letters("S", 10);
        assert_eq!(dead.len(), 1);
        assert!(outbox.is_dead_letter("S", "b", "crm"));
        assert!(!outbox.is_dead_letter("T", "b", "crm"), "another site's");
        assert!(outbox.replay("b", "crm", 300).await.unwrap());
        assert_eq!(outbox.tally("S").deliveries[cart], [2, 1, 0]);
        assert!(outbox.dead_letters("S", 10).is_empty());
        drop(outbox);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            outbox.tally("S").deliveries[cart],
            [2, 1, 0],
            "rebuilt on reopen"
        );
        outbox.forget("c").unwrap();
        assert_eq!(
            outbox.tally("S").deliveries[cart],
            [0, 0, 0],
            "an erased contact's deliveries leave"
        );
        assert_eq!(
            outbox.tally("S").fired[&0][cart],
            3,
            "what fired stays counted"
        );
    }

    #[tokio::test]
    async fn deliveries_survive_a_reopen_and_dead_letters_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            outbox.fired(vec![fired("a"), fired("b")]).await.unwrap();
            let attempts = vec![attempt("a", false, Some(200)), attempt("b", false, None)];
            outbox.attempted(attempts).await.unwrap();
        }
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.contains("a") && outbox.contains("b"));
        assert_eq!(
            outbox.last_first_message("S", "c", TriggerKind::AbandonedCart),
            Some(100)
        );
        assert!(
            outbox.due(150, 10).is_empty(),
            "a waits for its retry at 200"
        );
        let due = outbox.due(200, 10);
        assert_eq!((due[0].0.id.as_str(), due[0].2), ("a", 1));
        let dead = outbox.list("S", Some(DeliveryStatus::Dead), 10);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].fired.id, "b");
        assert!(outbox.replay("b", "crm", 300).await.unwrap());
        assert!(
            !outbox.replay("a", "crm", 300).await.unwrap(),
            "a is not dead"
        );
        assert_eq!(outbox.due(300, 10).len(), 2);
        outbox
            .attempted(vec![attempt("b", true, None)])
            .await
            .unwrap();
        let entry = &outbox.list("S", None, 10)[0];
        assert_eq!(entry.deliveries["crm"].status, DeliveryStatus::Delivered);
    }
}
