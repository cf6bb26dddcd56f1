//! The outbox of a shared log: one topic that every engine node follows and the node that
//! sends the triggers writes.
//!
//! Which node sends is decided by lease records in the topic itself, read in the topic's
//! order, so every node that has read as far agrees: a lease lasts [`LEASE_MS`] from the
//! time its writer put in it; the holder renews it every [`RENEW_MS`]; any other node
//! claims it once it has lapsed, and the first claim after the lapse, in the topic's order,
//! wins (a later one finds a fresh lease and counts for nothing). A holder fires, and starts
//! each batch of deliveries, only after a turn that read back the lease in force as the
//! latest it issued, less than [`ACT_WITHIN`] after the start of the turn that issued it by
//! the monotonic clock (the wall clock dating the lease is read at that start, so a stalled
//! broker or a clock set back cannot stretch it); a batch is cut at [`BATCH_DEADLINE`], so it
//! ends before another node may claim, with the nodes' wall clocks within a second of each
//! other. Deliveries are at least once: a sender killed between a
//! receiver's answer and its attempt's record is followed by one that sends again, with
//! the trigger's `Idempotency-Key`.
//!
//! A lease in the log rather than a consumer group: a group's member that dies is let go
//! only by the broker's session timeout, and Tansu 0.6 never lets one go; records every
//! node reads in one order work alike on every Kafka-protocol broker.
//!
//! Every record is applied as it is read back, in the topic's order, whoever wrote it: the
//! nodes hold the same outbox, and the one that takes over continues the deliveries owed.
//! A fired record's contact (`reach`, `contactCheck`) is sealed under the key of the
//! contact's email or phone, the key its events are sealed with: erasing the contact
//! deletes the key, and the record then counts as fired for nobody.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spoor_log::keys::SealingKey;
use spoor_log::{EventLog, Keyring, LogReader, Position};
use spoor_protocol::sealing::{OpenError, key_name, open_part, seal_part};

use super::{Counted, Fired, Reach, Record, State, lock};
use crate::error::TriggerError;
use crate::payload::check_of;

/// How long a lease lasts after its writer's time in it.
pub(super) const LEASE_MS: i64 = 15_000;
/// The longest a batch of deliveries may take once started, on a shared outbox: each
/// request's timeout is cut to what is left of it (a cut one is recorded as timed out).
pub const BATCH_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews its lease (by either clock: the wall clock's dates the
/// lease, the monotonic one's keeps a clock set back from holding renewals off).
const RENEW_MS: i64 = 3_000;
const RENEW: Duration = Duration::from_millis(RENEW_MS as u64);
/// How young the holder's renewal in force must be for it to start firing or a batch of
/// deliveries: [`LEASE_MS`] less a batch's longest time ([`BATCH_DEADLINE`]) and two
/// seconds: one for the nodes' clocks, one to spare.
const ACT_WITHIN: Duration = Duration::from_secs(3);
/// How long reading the topic to a position may go without a record before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a node that cannot read or write the topic says so.
const WARN_EVERY_MS: i64 = 30_000;

/// An engine node sends the triggers until `at` plus [`LEASE_MS`], or claims to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The node, by a name it takes at each start.
    pub node: String,
    /// Its clock when it wrote this, milliseconds since the epoch.
    pub at: i64,
    /// Counts the node's leases: tells its renewals apart when its clock does not.
    #[serde(default)]
    pub seq: u64,
}

impl State {
    /// A lease record, in the topic's order: the holder's renewal, or a claim that takes
    /// the lease when the one held has lapsed.
    pub(super) fn lease(&mut self, lease: Lease) {
        let takes = match &self.sender {
            None => true,
            // Its own renewal, even one its clock dated earlier: that only shortens it.
            Some(held) if held.node == lease.node => true,
            Some(held) => lease.at > held.at.saturating_add(LEASE_MS),
        };
        if takes {
            self.sender = Some(lease);
        }
    }
}

pub(super) struct SharedOutbox {
    log: Arc<dyn EventLog>,
    keys: Arc<Keyring>,
    /// This node's name in its leases: new at each start, so a node restarted claims anew.
    node: String,
    reading: Arc<Mutex<Reading>>,
    /// Whether this node sent at its last turn: to say when that changes.
    sending: AtomicBool,
    warned_at: AtomicI64,
    /// This node's latest lease record: its number, and when its turn began by the
    /// monotonic clock.
    issued: Mutex<Option<(u64, Instant)>>,
}

/// Where this node has read the topic to.
struct Reading {
    reader: Box<dyn LogReader>,
    /// Read but not yet applied: a record whose keys could not be read waits here.
    unread: VecDeque<spoor_log::Record>,
}

impl SharedOutbox {
    pub(super) fn open(
        log: Arc<dyn EventLog>,
        keys: Arc<Keyring>,
    ) -> Result<SharedOutbox, TriggerError> {
        let reader = log.reader(0).map_err(storage)?;
        Ok(SharedOutbox {
            log,
            keys,
            node: format!("{:032x}", fastrand::u128(..)),
            reading: Arc::new(Mutex::new(Reading {
                reader,
                unread: VecDeque::new(),
            })),
            sending: AtomicBool::new(false),
            warned_at: AtomicI64::new(i64::MIN),
            issued: Mutex::new(None),
        })
    }

    /// The topic's end as this node last learnt it.
    pub(super) fn end(&self) -> Position {
        self.log.end()
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// A lease record of this node's, dated `now`, remembered as its latest, as of
    /// `turn`: when the turn that read `now` began (a stalled read or write after it
    /// must not stretch the time the lease is acted on).
    pub(super) fn issue(&self, now: i64, turn: Instant) -> Lease {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let seq = issued.map_or(0, |(seq, _)| seq + 1);
        *issued = Some((seq, turn));
        Lease {
            node: self.node.clone(),
            at: now,
            seq,
        }
    }

    fn issued(&self) -> Option<(u64, Instant)> {
        *self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the contact reached by `reach` can be named in a record (see
    /// [`SharedOutbox::key_to_name`]).
    pub(super) fn can_name(&self, site_id: &str, reach: &Reach) -> bool {
        self.key_to_name(site_id, reach).is_some()
    }

    /// The key a fired record names the contact reached by `reach` under: one held of
    /// their email's or phone's, in the site (its events') or across sites (contact
    /// links'). Never a new one: a contact erased a moment ago and still in this node's
    /// state (their keys deleted) is not named again, and a key made here could be stored
    /// after an erasure's tombstones and outlive it. A contact whose records were never
    /// sealed (a topic written before sealing) has no key either.
    fn key_to_name(&self, site_id: &str, reach: &Reach) -> Option<SealingKey> {
        let names = reach_key_names(site_id, reach);
        names.iter().find_map(|name| self.keys.existing_key(name))
    }

    pub(super) fn sending(&self) -> bool {
        self.sending.load(Ordering::Acquire)
    }

    /// Appends `records`, their contacts sealed; returns the position after the last.
    pub(super) async fn append(&self, records: Vec<Record>) -> Result<Position, TriggerError> {
        let count = records.len() as Position;
        let mut bytes = Vec::with_capacity(records.len());
        for record in records {
            let record = match record {
                Record::Fired(fired) => Record::Fired(self.seal(fired).await?),
                other => other,
            };
            bytes.push(serde_json::to_vec(&record).expect("outbox records serialise"));
        }
        let first = self.log.append(bytes).await.map_err(storage)?;
        Ok(first + count)
    }

    /// `fired` as it is stored: its contact sealed under the key of its email or phone
    /// (the one their events are sealed with; a key still being stored is waited for).
    async fn seal(&self, mut fired: Fired) -> Result<Fired, TriggerError> {
        let Some(reach) = fired.reach.take() else {
            return Ok(fired);
        };
        let key = (self.key_to_name(&fired.site_id, &reach)).ok_or_else(|| {
            TriggerError::Storage("a fired trigger's contact was erased meanwhile".to_string())
        })?;
        if let Some(storing) = key.storing {
            let stored = storing.wait().await;
            self.keys.settle(&key.id, stored.is_ok());
            stored.map_err(|e| TriggerError::Storage(format!("storing a contact's key: {e}")))?;
        }
        let part = serde_json::to_vec(&reach).expect("reaches serialise");
        fired.contact_check.clear();
        fired.sealed = Some(seal_part(part, vec![key.id], &[key.key], &bound(&fired)));
        Ok(fired)
    }

    /// Reads the topic up to `end` into `state`, on a blocking thread.
    pub(super) async fn read_to_later(
        &self,
        end: Position,
        state: &Arc<Mutex<State>>,
    ) -> Result<(), TriggerError> {
        let (reading, keys, state) = (self.reading.clone(), self.keys.clone(), state.clone());
        tokio::task::spawn_blocking(move || read_to(&reading, &keys, &state, end))
            .await
            .map_err(|e| TriggerError::Storage(format!("reading the outbox topic: {e}")))?
    }

    /// Reads the topic up to `end` into `state`: blocking.
    pub(super) fn read_to(&self, end: Position, state: &Mutex<State>) -> Result<(), TriggerError> {
        read_to(&self.reading, &self.keys, state, end)
    }

    /// Whether this node writes a lease now, seeing `held`: its own renewal when due, a
    /// claim when none is held or the one held has lapsed.
    pub(super) fn claims(&self, held: Option<&Lease>, now: i64) -> bool {
        match held {
            None => true,
            Some(lease) if lease.node == self.node => {
                now - lease.at >= RENEW_MS
                    || self
                        .issued()
                        .is_none_or(|(_, issued)| issued.elapsed() >= RENEW)
            }
            Some(lease) => now > lease.at.saturating_add(LEASE_MS),
        }
    }

    /// Whether this node sends now, seeing `held` after its turn: when the lease in force
    /// is the latest it issued, less than [`ACT_WITHIN`] ago. Says so when that changes.
    pub(super) fn acts(&self, held: Option<&Lease>) -> bool {
        let acts = self.acts_at(held, Instant::now());
        if self.sending.swap(acts, Ordering::AcqRel) != acts {
            if acts {
                tracing::info!(node = %self.node, "this node sends the triggers now");
            } else {
                tracing::info!(
                    node = %self.node,
                    sender = held.map(|lease| lease.node.as_str()),
                    "this node no longer sends the triggers"
                );
            }
        }
        acts
    }

    fn acts_at(&self, held: Option<&Lease>, at: Instant) -> bool {
        match (held, self.issued()) {
            (Some(lease), Some((seq, turn))) => {
                lease.node == self.node
                    && lease.seq == seq
                    && at.saturating_duration_since(turn) < ACT_WITHIN
            }
            _ => false,
        }
    }

    /// Says why a turn failed, at most every [`WARN_EVERY_MS`].
    pub(super) fn warn(&self, error: &TriggerError, now: i64) {
        let last = self.warned_at.load(Ordering::Acquire);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                %error,
                "the trigger outbox topic cannot be read or written: this node sends no trigger until it can"
            );
        }
    }
}

fn read_to(
    reading: &Mutex<Reading>,
    keys: &Keyring,
    state: &Mutex<State>,
    end: Position,
) -> Result<(), TriggerError> {
    let mut reading = reading.lock().unwrap_or_else(|p| p.into_inner());
    let mut progress_at = Instant::now();
    loop {
        while let Some(record) = reading.unread.front() {
            let decoded = decode(record, keys)?;
            let position = record.position;
            reading.unread.pop_front();
            if let Some(decoded) = decoded {
                lock(state).apply(position, decoded);
            }
        }
        if reading.reader.position() >= end {
            return Ok(());
        }
        let batch = (reading.reader)
            .next_batch(4096, Duration::from_millis(200))
            .map_err(storage)?;
        if !batch.is_empty() {
            progress_at = Instant::now();
        } else if progress_at.elapsed() > READ_TIMEOUT {
            return Err(TriggerError::Storage(format!(
                "the outbox topic's records up to {end} did not come within {}s",
                READ_TIMEOUT.as_secs()
            )));
        }
        reading.unread.extend(batch);
    }
}

/// A record as read from the topic, its contact opened; `None` for one to skip. A fired
/// record whose key is gone (its contact erased) counts as fired, for nobody.
fn decode(record: &spoor_log::Record, keys: &Keyring) -> Result<Option<Record>, TriggerError> {
    let parsed = match serde_json::from_slice::<Record>(&record.payload) {
        Ok(parsed) => parsed,
        Err(error) => {
            // Where and what kind of error only: serde's message may quote a value.
            tracing::error!(
                position = record.position,
                category = ?error.classify(),
                column = error.column(),
                "an outbox record could not be read; skipped"
            );
            return Ok(None);
        }
    };
    let Record::Fired(mut fired) = parsed else {
        return Ok(Some(parsed));
    };
    let Some(sealed) = fired.sealed.take() else {
        return Ok(Some(Record::Fired(fired)));
    };
    match open_part(&sealed, |id| keys.key(id), &bound(&fired)) {
        Ok(Some(part)) => {
            let Ok(reach) = serde_json::from_slice::<Reach>(&part) else {
                tracing::error!(
                    position = record.position,
                    "an outbox record opened to no contact; skipped"
                );
                return Ok(None);
            };
            let (Reach::Email(value) | Reach::Phone(value)) = &reach;
            fired.contact_check = check_of(value);
            fired.reach = Some(reach);
            Ok(Some(Record::Fired(fired)))
        }
        Ok(None) => Ok(Some(Record::Forgotten {
            id: fired.id.clone(),
            counted: Some(Counted::of(&fired)),
        })),
        Err(OpenError::Keys(error)) => Err(TriggerError::Storage(format!(
            "the keys of outbox record {}: {error}",
            record.position
        ))),
        Err(OpenError::Corrupt(why)) => {
            tracing::error!(
                position = record.position,
                why,
                "an outbox record does not open; skipped"
            );
            Ok(None)
        }
    }
}

/// The names of the keys of the contact reached by `reach`: in `site_id` (its events'),
/// then across sites (contact links'). Erasing the contact deletes both.
fn reach_key_names(site_id: &str, reach: &Reach) -> [String; 2] {
    let identifier = reach.identifier();
    [key_name(site_id, &identifier), key_name("", &identifier)]
}

/// What a fired record's sealed part is bound to: a box moved to another trigger does
/// not open there.
fn bound(fired: &Fired) -> Vec<u8> {
    format!("spoor outbox/{}/{}", fired.site_id, fired.id).into_bytes()
}

fn storage(error: spoor_log::LogError) -> TriggerError {
    TriggerError::Storage(error.to_string())
}

#[cfg(test)]
mod tests {
    use spoor_engine::timers::TriggerKind;
    use spoor_log::{FileLog, FileLogConfig, MemoryTable};
    use spoor_protocol::sealing::erased_key_names;

    use super::super::{Attempt, DeliveryStatus, Outbox, Store};
    use super::*;

    const T: i64 = 1_700_000_000_000;

    struct Topic {
        _dir: tempfile::TempDir,
        log: Arc<FileLog>,
        keys: Arc<Keyring>,
    }

    impl Topic {
        fn new() -> Topic {
            let dir = tempfile::tempdir().unwrap();
            let config = FileLogConfig {
                commit_interval: Duration::ZERO,
                ..FileLogConfig::default()
            };
            let log = Arc::new(FileLog::open(dir.path(), config, None).unwrap());
            let keys = Keyring::open(Arc::new(MemoryTable::default())).unwrap();
            Topic {
                _dir: dir,
                log,
                keys,
            }
        }

        /// An engine node's outbox on the topic.
        fn node(&self) -> Outbox {
            Outbox::open_shared(self.log.clone(), self.keys.clone()).unwrap()
        }

        /// Contacts whose events were sealed: their emails' keys are held.
        fn known(&self, emails: &[&str]) {
            for email in emails {
                let reach = Reach::Email(email.to_string());
                let key = self.keys.key_for(&reach_key_names("S", &reach)[0]);
                if let Some(storing) = key.storing {
                    spoor_log::block_on(storing.wait()).unwrap();
                    self.keys.settle(&key.id, true);
                }
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let records = self.log.read(0, 10_000).unwrap();
            records.into_iter().flat_map(|r| r.payload).collect()
        }
    }

    fn fired(id: &str, email: &str) -> Fired {
        Fired {
            fired_at: T,
            ..super::super::fired_for(id, email)
        }
    }

    fn holds(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn one_node_sends_and_another_takes_over_the_deliveries_owed_when_its_lease_lapses() {
        let topic = Topic::new();
        topic.known(&["ann@example.com", "bob@example.com"]);
        let (first, second) = (topic.node(), topic.node());
        assert!(first.take_turn(T).await.unwrap(), "the first claim wins");
        assert!(!second.take_turn(T).await.unwrap(), "a lease is held");
        assert!(first.sends() && !second.sends());

        first
            .fired(vec![
                fired("t1", "ann@example.com"),
                fired("t2", "bob@example.com"),
            ])
            .await
            .unwrap();
        first
            .attempted(vec![Attempt {
                id: "t1".into(),
                webhook: "crm".into(),
                at: T,
                delivered: true,
                outcome: "HTTP 200".into(),
                next_at: None,
            }])
            .await
            .unwrap();
        // The other node holds the same outbox once it has read the topic.
        assert!(!second.take_turn(T + 1_000).await.unwrap());
        assert!(second.contains("t1") && second.contains("t2"));
        let owed: Vec<String> = (second.due(T + 1_000, 10).into_iter())
            .map(|(fired, _, _)| fired.id)
            .collect();
        assert_eq!(owed, ["t2"]);
        assert_eq!(
            second.list("S", Some(DeliveryStatus::Pending), 10)[0]
                .fired
                .reach,
            Some(Reach::Email("bob@example.com".into()))
        );
        assert_eq!(
            second.last_first_message(
                "S",
                &check_of("ann@example.com"),
                TriggerKind::AbandonedCart
            ),
            Some(T)
        );
        // Who they are is sealed in the topic; what fired is not.
        let stored = topic.bytes();
        assert!(holds(&stored, "\"t2\"") && holds(&stored, "abandoned-cart"));
        for personal in ["bob@example.com", &check_of("bob@example.com")] {
            assert!(!holds(&stored, personal), "{personal} in the clear");
        }

        // The sender renews while it lives; the other cannot claim meanwhile.
        assert!(first.take_turn(T + 3_000).await.unwrap());
        assert!(!second.take_turn(T + 3_000 + LEASE_MS).await.unwrap());
        // The sender stops (killed): once its last lease lapsed, the other claims it and
        // owes what it owed.
        let lapsed = T + 3_000 + LEASE_MS + 1;
        assert!(second.take_turn(lapsed).await.unwrap());
        assert_eq!(second.due(lapsed, 10).len(), 1);
        // The first comes back and finds it has lost the lease, whatever its clock says.
        assert!(!first.take_turn(lapsed + 1).await.unwrap());
        assert!(!first.sends());
        // A node started later reads the same outbox and the same sender.
        let third = topic.node();
        assert!(!third.take_turn(lapsed + 2).await.unwrap());
        assert_eq!(third.due(lapsed, 10).len(), 1);
    }

    #[tokio::test]
    async fn a_holder_acts_only_while_its_renewal_is_young_and_a_late_claim_counts_for_nothing() {
        let topic = Topic::new();
        let (first, second) = (topic.node(), topic.node());
        assert!(first.take_turn(T).await.unwrap());
        // The holder looks again much later: it renews first, and acts on the renewal.
        assert!(first.take_turn(T + 10_000).await.unwrap());
        // A claim written after a renewal it had not read counts for nothing.
        second
            .append(vec![Record::Lease(Lease {
                node: "late".into(),
                at: T + 10_000 + LEASE_MS,
                seq: 0,
            })])
            .await
            .unwrap();
        assert!(!second.take_turn(T + 10_001).await.unwrap());
        assert!(first.take_turn(T + 10_002).await.unwrap());
        // A holder whose renewal read back is too old to finish a batch before it lapses
        // does not act, even before anyone claims.
        let mut state = State::default();
        state.lease(Lease {
            node: "a".into(),
            at: T,
            seq: 0,
        });
        state.lease(Lease {
            node: "b".into(),
            at: T + LEASE_MS,
            seq: 0,
        });
        assert_eq!(state.sender.as_ref().map(|l| l.node.as_str()), Some("a"));
        state.lease(Lease {
            node: "b".into(),
            at: T + LEASE_MS + 1,
            seq: 0,
        });
        assert_eq!(state.sender.as_ref().map(|l| l.node.as_str()), Some("b"));
        // The holder acts on its latest lease only, and only while it is young by the
        // monotonic clock, whatever the wall clock says.
        let Store::Shared(shared) = &first.store else {
            unreachable!()
        };
        let began = Instant::now();
        let earlier = shared.issue(T + 20_000, began);
        let mine = shared.issue(T + 20_000, began);
        assert!(shared.acts_at(Some(&mine), began + ACT_WITHIN - Duration::from_millis(1)));
        assert!(!shared.acts_at(Some(&mine), began + ACT_WITHIN));
        assert!(
            !shared.acts_at(Some(&earlier), began),
            "not its latest, though dated alike"
        );
        let theirs = Lease {
            node: "b".into(),
            ..mine
        };
        assert!(!shared.acts_at(Some(&theirs), began));
    }

    #[tokio::test]
    async fn an_erased_contacts_fired_records_count_for_nobody_on_every_node() {
        let topic = Topic::new();
        topic.known(&["ann@example.com", "bob@example.com"]);
        let sender = topic.node();
        assert!(sender.take_turn(T).await.unwrap());
        sender
            .fired(vec![
                fired("ann-1", "ann@example.com"),
                fired("bob-1", "bob@example.com"),
            ])
            .await
            .unwrap();
        let other = topic.node();
        assert!(other.contains("ann-1"));
        // The erasure deletes the contact's keys; each running node lets go of its records.
        let ann = Reach::Email("ann@example.com".into()).identifier();
        topic.keys.delete(&erased_key_names("S", [&ann])).unwrap();
        for node in [&sender, &other] {
            assert_eq!(node.forget(&check_of("ann@example.com")).unwrap(), 1);
        }
        // Nor is she named again, should a timer of hers come due before this node's
        // state drops her: no new key is made for an erased name.
        let ann_reach = Reach::Email("ann@example.com".into());
        assert!(!sender.can_name("S", &ann_reach));
        assert!(
            sender
                .fired(vec![fired("ann-2", "ann@example.com")])
                .await
                .is_err()
        );
        for name in reach_key_names("S", &ann_reach) {
            assert!(!topic.keys.has_key(&name), "no key made for an erased name");
        }
        // A node that reads the topic afterwards finds a trigger fired for nobody.
        let later = topic.node();
        for node in [&sender, &other, &later] {
            let listed: Vec<String> = (node.list("S", None, 10).into_iter())
                .map(|entry| entry.fired.id)
                .collect();
            assert_eq!(listed, ["bob-1"]);
            let owed: Vec<String> = (node.due(T, 10).into_iter())
                .map(|(fired, _, _)| fired.id)
                .collect();
            assert_eq!(owed, ["bob-1"]);
            let fired_today: u64 = node.tally("S").fired.values().flatten().sum();
            assert_eq!(fired_today, 2, "what fired stays counted");
        }
    }
}
