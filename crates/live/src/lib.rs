//! The engine kept current, and the work around it: a thread that follows the log and
//! applies each record once it is durable while readers query the state it has reached
//! ([`LiveState`], [`follow`]), snapshots of that state ([`snapshot`]), and a contact's
//! export and erasure, which redacts the log and rebuilds the state ([`erasure`]). The
//! state itself, and what each record does to it, is `spoor-engine`'s.

pub mod erasure;
pub mod opening;
pub mod records;
pub mod snapshot;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spoor_log::{EventLog, Handoff, Keyring, LogReader, Position, Record};
use spoor_protocol::stored::{RecordContent, StoredRecord};

use spoor_engine::{Contact, ContactId, Engine, SiteState};

/// Records applied per step: the write lock is held for one step at a time.
const STEP: usize = 1024;
/// How long the follower sleeps on an idle log before checking whether to stop.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// How long deleted keys wait for the erasure mark that normally follows them at once
/// (its answer rebuilds the state) before the follower answers them itself.
#[cfg(not(test))]
const MARK_GRACE: Duration = Duration::from_secs(10);
#[cfg(test)]
const MARK_GRACE: Duration = Duration::ZERO;
/// How many times a replay reads the log when erasures come while it reads.
const REPLAY_READS: u32 = 3;
/// Records applied between two snapshots.
const SNAPSHOT_EVERY: u64 = 250_000;

/// A rebuild replays the whole log into a fresh engine (after records were redacted) and
/// swaps it in.
#[derive(Default)]
struct Rebuilds {
    asked: u64,
    done: u64,
    /// Erasures between [`LiveState::erasing`] and [`ErasureHold::finish`].
    erasing: u32,
}

impl Rebuilds {
    /// While an erasure is under way, or its rebuild is not yet in place, the state may
    /// hold what the log no longer does: it is not saved.
    fn hold_snapshots(&self) -> bool {
        self.erasing > 0 || self.done < self.asked
    }
}

/// A snapshot saved: the log position it reflects, how long the state's lock was held
/// to copy it, and how long the whole save took.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedSnapshot {
    pub position: u64,
    pub copy_seconds: f64,
    pub seconds: f64,
}

/// Why a snapshot was not saved.
#[derive(Debug, Clone)]
pub struct NotSaved(pub String);

#[derive(Default)]
struct SnapshotRequests {
    asked: u64,
    done: u64,
    last: Option<Result<SavedSnapshot, NotSaved>>,
}

/// An erasure under way (from [`LiveState::erasing`]): no snapshot is saved meanwhile.
/// Dropped without [`ErasureHold::finish`] (a panic midway), it still asks for the
/// rebuild, so that snapshots are not held for good.
pub struct ErasureHold<'a> {
    live: &'a LiveState,
    finished: bool,
}

impl ErasureHold<'_> {
    /// To call when the erasure changed nothing this node's state must be rebuilt for:
    /// snapshots go on, and none is asked.
    pub fn abandon(mut self) {
        self.finished = true;
        let mut rebuilds = self.live.rebuilds();
        rebuilds.erasing = rebuilds.erasing.saturating_sub(1);
    }

    /// To call once the erasure has changed the log (or failed to): asks for the
    /// rebuild; returns its ticket for [`LiveState::wait_rebuilt`].
    pub fn finish(mut self) -> u64 {
        self.finished = true;
        self.live.erased()
    }
}

impl Drop for ErasureHold<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.live.erased();
        }
    }
}

/// The engine's state and how far into the log it has got.
#[derive(Default)]
pub struct LiveState {
    /// Set once the follower first reached the end of the log.
    current: AtomicBool,
    engine: RwLock<Engine>,
    applied: AtomicU64,
    undecodable: AtomicU64,
    stop: AtomicBool,
    /// The follower panicked: the state may be half-applied, so nothing is saved from it
    /// and the process is to restart (from its snapshot and log).
    failed: AtomicBool,
    /// Rebuilds asked for and done, and erasures under way.
    rebuilds: Mutex<Rebuilds>,
    rebuilt: Condvar,
    /// Held while the snapshot file is written or removed.
    snapshot_file: Mutex<()>,
    /// Set while a snapshot copies the state (see [`LiveState::copying_for_snapshot`]).
    copying: AtomicBool,
    /// Snapshots asked for through [`LiveState::snapshot_now`].
    snapshot_requests: Mutex<SnapshotRequests>,
    snapshotted: Condvar,
    /// Where snapshots go, if they are kept; only the follower thread writes them.
    snapshot_path: Option<PathBuf>,
    /// The position of the last snapshot written or loaded.
    snapshot_at: AtomicU64,
    /// Records handed over decoded by the ingest in this process: taken from here instead
    /// of decoded from the log's bytes.
    handoff: Option<Arc<Handoff<StoredRecord>>>,
    /// The keys records' personal parts are sealed with, on a log that has them.
    keys: Option<Arc<Keyring>>,
    /// Told of the contacts an erasure on another node removes, before they go.
    on_erasure: std::sync::OnceLock<ErasureHook>,
    /// How many key deletions [`LiveState::tell_erased`] has looked at.
    deletions_told: AtomicU64,
    /// When deletions not yet told were first seen (see [`LiveState::answer_deletions`]).
    deletions_seen_at: Mutex<Option<Instant>>,
    /// Sites whose erasure may have deleted keys here and has not appended its mark, with
    /// the latest debt's number.
    marks_owed: Mutex<HashMap<String, u64>>,
    /// Numbers the debts above.
    debts: AtomicU64,
    /// Contacts erased on another node, by site, that this state holds until its
    /// rebuild is in place: not answered meanwhile (see [`LiveState::hides`]).
    hidden: RwLock<HashMap<String, HashSet<ContactId>>>,
    /// Erasure marks before this position need nothing more: the state was read from
    /// records opened after their keys were deleted (see [`LiveState::cover_marks`]).
    clean_through: AtomicU64,
    /// Counts the rebuilds swapped in, changed under the state's write lock.
    generation: AtomicU64,
}

/// Called, before the state is rebuilt to answer another node's erasure, with each site's
/// contacts that hold an identifier whose keys were deleted: what the process keeps
/// about them beside the state (the trigger outbox) is to go too.
pub type ErasureHook = Box<dyn Fn(&str, &[&Contact]) + Send + Sync>;

/// What one step of reading the log did.
struct Caught {
    read: usize,
    /// An erasure mark the state has not yet answered, at this position: the state is
    /// applied up to it, and must be read again from the log's start.
    erasure: Option<Position>,
}

impl LiveState {
    /// The keys sealed records are opened with, on a log that has them.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// [`LiveState::keys`], shared.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keys.clone()
    }

    /// Whether the follower (or a change of the state) panicked: the process should stop,
    /// and restart to rebuild the state from the log.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Marks the state failed after a panic while it was being changed: it may be
    /// part-changed, so it is never saved again, and the snapshot is removed (it may hold
    /// a person whose erasure is waiting for a rebuild that will not come); a restart
    /// replays the whole log. Waiters for a rebuild are told.
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        if let Some(path) = &self.snapshot_path
            && let Err(error) = snapshot::remove(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(%error, "removing the state snapshot after a panic failed");
        }
        let _rebuilds = self.rebuilds();
        self.rebuilt.notify_all();
    }

    /// The state as of [`LiveState::applied`] records.
    pub fn read(&self) -> RwLockReadGuard<'_, Engine> {
        // A panic while the state changed leaves the lock poisoned, and the state failed:
        // callers check `failed` before answering from it, and this never panics them.
        self.engine.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on a site's state under the write lock (trigger timers coming due);
    /// `None` when the site has no state.
    pub fn with_site_mut<R>(
        &self,
        site_id: &str,
        change: impl FnOnce(&mut SiteState) -> R,
    ) -> Option<R> {
        let engine = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        self.change_site(engine, site_id, change)
    }

    /// [`LiveState::with_site_mut`] if the state's lock is free now, else `change` back:
    /// for a writer that can wait without queueing for the lock, where it would hold
    /// every new reader (every request) behind itself.
    pub fn try_with_site_mut<R, F: FnOnce(&mut SiteState) -> R>(
        &self,
        site_id: &str,
        change: F,
    ) -> Result<Option<R>, F> {
        match self.engine.try_write() {
            Ok(engine) => Ok(self.change_site(engine, site_id, change)),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                Ok(self.change_site(poisoned.into_inner(), site_id, change))
            }
            Err(std::sync::TryLockError::WouldBlock) => Err(change),
        }
    }

    fn change_site<R>(
        &self,
        mut engine: std::sync::RwLockWriteGuard<'_, Engine>,
        site_id: &str,
        change: impl FnOnce(&mut SiteState) -> R,
    ) -> Option<R> {
        let changed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.site_mut(site_id).map(change)
        }));
        match changed {
            Ok(changed) => changed,
            Err(panic) => {
                // The state may be part-changed: it is failed, as after a follower panic.
                drop(engine);
                tracing::error!(
                    "a change of the state panicked; spoor stops to restart from its log"
                );
                self.fail();
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Which state this is: it changes when a rebuild replaces the whole state, so that
    /// what was computed off the lock from the state before (read under a lock, like
    /// this) is not put into the one after.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many log records the state reflects: the position of the next one to apply.
    pub fn applied(&self) -> Position {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that could not be read as stored records and were skipped.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Whether the follower has reached the end of the log since the start (a node
    /// still replaying answers from part of it).
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }

    /// Where this state's snapshots are saved, if anywhere.
    pub fn snapshot_path(&self) -> Option<&Path> {
        self.snapshot_path.as_deref()
    }

    /// The state to follow `log` from: the snapshot at `snapshot_path` when it is usable
    /// (the log then replays from its position), else empty (the log replays whole).
    /// Snapshots are then kept at that path.
    pub fn resume(log: &dyn EventLog, snapshot_path: &Path) -> LiveState {
        let started = Instant::now();
        let mut state = LiveState {
            snapshot_path: Some(snapshot_path.to_path_buf()),
            ..LiveState::default()
        };
        // Part of a snapshot a crash cut short: never used, and it may hold someone
        // erased since.
        if let Err(error) = snapshot::remove(&snapshot_path.with_extension("tmp")) {
            tracing::warn!(%error, "removing a snapshot cut short failed");
        }
        match snapshot::load(snapshot_path) {
            Some((_, position)) if position > log.end() => tracing::warn!(
                position,
                log_end = log.end(),
                "state snapshot is ahead of the log (records were lost); replaying the whole log"
            ),
            // Its retries would be decided from an empty window, unlike a replay's.
            Some((engine, _)) if log.several_writers() && !engine.decides_retries() => {
                tracing::warn!(
                    "state snapshot without the retry window a log with several writers \
                     needs; replaying the whole log"
                )
            }
            Some((mut engine, position)) => {
                engine.decide_retries(log.several_writers());
                state.engine = RwLock::new(engine);
                state.applied = AtomicU64::new(position);
                // A snapshot is saved only once every erasure before it is answered.
                state.clean_through = AtomicU64::new(position);
                state.snapshot_at = AtomicU64::new(position);
                tracing::info!(
                    position,
                    seconds = started.elapsed().as_secs_f64(),
                    "state loaded from its snapshot; replaying the log from there"
                );
            }
            None => {}
        }
        state.engine_mut().decide_retries(log.several_writers());
        state
    }

    fn engine_mut(&mut self) -> &mut Engine {
        self.engine
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the records that ingest hands over decoded (see `Ingestor::hand_off_to`)
    /// from `handoff` rather than decoding them again.
    pub fn with_handoff(mut self, handoff: Arc<Handoff<StoredRecord>>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Opens sealed records with `keys` (a log that keeps personal parts sealed). A state
    /// that starts from nothing needs no erasure before the log's end answered: its
    /// records are opened with the keys as they are now.
    pub fn with_keys(mut self, log: &dyn EventLog, keys: Option<Arc<Keyring>>) -> Self {
        self.keys = keys;
        if self.applied() == 0
            && let Err(error) = self.cover_marks(log)
        {
            tracing::warn!(%error, "the key table was not read; erasures found will rebuild");
        }
        self
    }

    /// Reads the key table as far as it is written, after taking the log's end: every
    /// erasure mark before that end was appended after its keys were deleted, so records
    /// opened from here on hold none of those people.
    fn cover_marks(&self, log: &dyn EventLog) -> Result<(), spoor_log::LogError> {
        let end = log.end();
        if let Some(keys) = &self.keys {
            keys.refresh()?;
        }
        self.clean_through.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Sets what is told of the contacts other nodes' erasures remove (once).
    pub fn on_erasure(&self, hook: ErasureHook) {
        if self.on_erasure.set(hook).is_err() {
            tracing::warn!("an erasure hook was set twice; the first one stays");
        }
    }

    /// Calls `visit` with each site's contacts that hold an identifier of `names`.
    fn each_named(&self, names: &HashSet<String>, mut visit: impl FnMut(&str, &[&Contact])) {
        if names.is_empty() {
            return;
        }
        let engine = self.read();
        for (site_id, site) in engine.sites() {
            let named: Vec<&Contact> = site
                .live_contacts()
                .filter(|contact| {
                    (contact.identifiers.all().iter())
                        .any(|id| names.contains(&spoor_protocol::sealing::key_name(site_id, id)))
                })
                .collect();
            if !named.is_empty() {
                visit(site_id, &named);
            }
        }
    }

    /// Names whose keys were deleted (since the `from`th deletion read) and that have
    /// none now: a name with a key made after its erasure is a person who came back.
    fn erased_names(&self, keys: &Keyring, from: usize) -> (HashSet<String>, usize) {
        let (names, now) = keys.deleted_since(from);
        let erased = names
            .into_iter()
            .filter(|name| !keys.has_key(name))
            .collect();
        (erased, now)
    }

    /// Whether the state holds someone whose keys were deleted.
    fn holds_erased(&self) -> bool {
        let Some(keys) = &self.keys else {
            return false;
        };
        let (names, _) = self.erased_names(keys, 0);
        let mut found = false;
        self.each_named(&names, |_, _| found = true);
        found
    }

    /// Tells the erasure hook of the contacts holding an identifier whose keys were
    /// deleted since it was last told, as the state holds them before its rebuild;
    /// answers whether there were any.
    fn tell_erased(&self) -> bool {
        let Some(keys) = &self.keys else {
            return false;
        };
        let from = self.deletions_told.load(Ordering::Acquire) as usize;
        let (names, now) = self.erased_names(keys, from);
        self.deletions_told.store(now as u64, Ordering::Release);
        let mut found = false;
        let mut hidden = Vec::new();
        self.each_named(&names, |site_id, contacts| {
            found = true;
            hidden.push((
                site_id.to_string(),
                contacts.iter().map(|c| c.id).collect::<Vec<_>>(),
            ));
            if let Some(hook) = self.on_erasure.get() {
                hook(site_id, contacts);
            }
        });
        let mut hiding = self.hidden.write().unwrap_or_else(PoisonError::into_inner);
        for (site_id, contacts) in hidden {
            hiding.entry(site_id).or_default().extend(contacts);
        }
        found
    }

    /// Whether contact `contact` of `site_id` was erased on another node and is held
    /// here only until this state's rebuild: what answers about a person asks this
    /// first, so that no node answers with an erased person once their keys are gone.
    pub fn hides(&self, site_id: &str, contact: ContactId) -> bool {
        let hidden = self.hidden.read().unwrap_or_else(PoisonError::into_inner);
        !hidden.is_empty()
            && hidden
                .get(site_id)
                .is_some_and(|ids| ids.contains(&contact))
    }

    /// Answers keys deleted that no mark answered within [`MARK_GRACE`] (its append
    /// failed after the deletion, or this node started after it): if the state holds
    /// one of those people, it is rebuilt, as a mark would have it.
    fn answer_deletions(&self) {
        let Some(keys) = &self.keys else {
            return;
        };
        let told = self.deletions_told.load(Ordering::Acquire) as usize;
        if keys.deleted_since(told).1 == told {
            return;
        }
        {
            let mut seen = self
                .deletions_seen_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if seen.get_or_insert_with(Instant::now).elapsed() < MARK_GRACE {
                return;
            }
            *seen = None;
        }
        if !self.tell_erased() {
            return;
        }
        match self.erasing() {
            Ok(hold) => {
                hold.finish();
                tracing::info!("keys of people this state holds were deleted; rebuilding it");
            }
            Err(error) => tracing::error!(%error, "removing the state snapshot failed; retrying"),
        }
    }

    /// The latest debt of an erasure mark of `site_id`: an erasure here that may have
    /// deleted keys and has not appended its mark yet.
    pub fn mark_owed(&self, site_id: &str) -> Option<u64> {
        self.marks_owed().get(site_id).copied()
    }

    /// Notes that an erasure of `site_id` is about to delete keys: its mark is owed until
    /// [`LiveState::mark_paid`]. Answers the debt's number.
    pub fn owe_mark(&self, site_id: &str) -> u64 {
        let debt = self.debts.fetch_add(1, Ordering::AcqRel) + 1;
        self.marks_owed().insert(site_id.to_string(), debt);
        debt
    }

    /// Notes that a mark of `site_id` was appended after debt `debt` was noted: that debt
    /// and any before it are paid (a later one, a deletion after this mark, is not).
    pub fn mark_paid(&self, site_id: &str, debt: u64) {
        let mut marks = self.marks_owed();
        if marks.get(site_id).is_some_and(|latest| *latest <= debt) {
            marks.remove(site_id);
        }
    }

    fn marks_owed(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.marks_owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An erasure of this process's own is answered by a rebuild that starts after its
    /// mark at `position` was appended: the follower need not answer the mark again.
    pub fn mark_answered(&self, position: Position) {
        self.clean_through.fetch_max(position + 1, Ordering::AcqRel);
    }

    /// Saves a snapshot if one is kept and `due` says so.
    fn snapshot_if(&self, due: impl FnOnce(u64, u64) -> bool) {
        let (applied, saved) = (self.applied(), self.snapshot_at.load(Ordering::Acquire));
        if self.snapshot_path.is_none() || self.failed() || !due(applied, saved) {
            return;
        }
        // An erasure under way: the snapshot waits for its rebuild, without a word.
        if self.rebuilds().hold_snapshots() {
            return;
        }
        if let Err(NotSaved(reason)) = self.save_snapshot() {
            tracing::error!(reason, "the state snapshot was not saved");
        }
    }

    /// Saves a snapshot of the state now. The state's lock is held only while the state
    /// is copied into the snapshot's form; the copy is then written without it, so that
    /// requests go on meanwhile. On the follower's thread only (nothing is applied
    /// meanwhile).
    fn save_snapshot(&self) -> Result<SavedSnapshot, NotSaved> {
        let Some(path) = &self.snapshot_path else {
            return Err(NotSaved("this state keeps no snapshot".into()));
        };
        // After a follower panic the state may be part-applied: it is never saved.
        if self.failed() {
            return Err(NotSaved("the state failed after a panic".into()));
        }
        let _file = self
            .snapshot_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.rebuilds().hold_snapshots() {
            return Err(NotSaved(
                "an erasure is under way: snapshots wait for its rebuild".into(),
            ));
        }
        let started = Instant::now();
        let applied = self.applied();
        let copy = {
            self.copying.store(true, Ordering::Release);
            let engine = self.engine.read().unwrap_or_else(PoisonError::into_inner);
            let copy = spoor_engine::snapshot::Snapshot::of(&engine, applied);
            drop(engine);
            self.copying.store(false, Ordering::Release);
            copy
        };
        let copy_seconds = started.elapsed().as_secs_f64();
        snapshot::write(&copy, path)
            .map_err(|error| NotSaved(format!("writing {}: {error}", path.display())))?;
        self.snapshot_at.store(applied, Ordering::Release);
        let saved = SavedSnapshot {
            position: applied,
            copy_seconds,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            position = saved.position,
            copy_seconds = saved.copy_seconds,
            seconds = saved.seconds,
            "state snapshot saved"
        );
        Ok(saved)
    }

    /// Whether a snapshot's copy of the state is under way: a writer of the state that can
    /// wait (the trigger runner) waits for its end instead of queueing for the lock, where
    /// it would hold every new reader (every request) behind itself until the copy ends.
    pub fn copying_for_snapshot(&self) -> bool {
        self.copying.load(Ordering::Acquire)
    }

    /// Asks the follower for a snapshot now and waits for it (at most `timeout`).
    pub fn snapshot_now(&self, timeout: Duration) -> Result<SavedSnapshot, NotSaved> {
        let mut requests = self.snapshots();
        requests.asked += 1;
        let ticket = requests.asked;
        let (requests, _) = self
            .snapshotted
            .wait_timeout_while(requests, timeout, |r| r.done < ticket && !self.failed())
            .unwrap_or_else(PoisonError::into_inner);
        match &requests.last {
            Some(last) if requests.done >= ticket => last.clone(),
            _ if self.failed() => Err(NotSaved("the state failed after a panic".into())),
            _ => Err(NotSaved(format!(
                "the follower did not get to it within {} s",
                timeout.as_secs()
            ))),
        }
    }

    fn snapshots(&self) -> std::sync::MutexGuard<'_, SnapshotRequests> {
        self.snapshot_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves the snapshot asked for by [`LiveState::snapshot_now`], if one is.
    fn answer_snapshot_requests(&self) {
        let asked = self.snapshots().asked;
        if self.snapshots().done >= asked {
            return;
        }
        let saved = self.save_snapshot();
        let mut requests = self.snapshots();
        requests.done = asked;
        requests.last = Some(saved);
        self.snapshotted.notify_all();
    }

    /// Builds the state of the whole log, once, on this thread: `spoor state rebuild`.
    /// Records sealed with `keys` are opened with them; an erasure met on the way (its
    /// keys deleted after the read began) has the log read again if the state holds
    /// someone it erased, a few times at most.
    pub fn replay(
        log: &dyn EventLog,
        keys: Option<Arc<Keyring>>,
    ) -> Result<LiveState, spoor_log::LogError> {
        for read in 1.. {
            let mut state = LiveState {
                keys: keys.clone(),
                ..LiveState::default()
            };
            let mut met_mark = false;
            state.engine_mut().decide_retries(log.several_writers());
            state.cover_marks(log)?;
            let mut reader = log.reader(0)?;
            loop {
                let caught = state.catch_up(&mut *reader, Duration::ZERO)?;
                if caught.erasure.is_some() {
                    // Keys deleted after the read began: read on with the keys as they
                    // are now; whoever they erased and was read before is found below.
                    met_mark = true;
                    state.cover_marks(log)?;
                    reader = log.reader(state.applied())?;
                } else if caught.read == 0 {
                    break;
                }
            }
            // Records from before sealing name people no key reaches: held however
            // often the log is read, so it is read again only a few times.
            if !met_mark || read >= REPLAY_READS || !state.holds_erased() {
                return Ok(state);
            }
            tracing::info!("a person was erased while the log was read; reading it again");
        }
        unreachable!("the reads above end by returning")
    }

    fn rebuilds(&self) -> std::sync::MutexGuard<'_, Rebuilds> {
        self.rebuilds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for the state to be rebuilt from the whole log; returns a ticket for
    /// [`LiveState::wait_rebuilt`].
    pub fn request_rebuild(&self) -> u64 {
        let mut rebuilds = self.rebuilds();
        rebuilds.asked += 1;
        rebuilds.asked
    }

    /// To call before an erasure changes the log: removes the state snapshot (it may hold
    /// the person) and any part of one a crash left, durably, and saves none until the
    /// rebuild that [`ErasureHold::finish`] asks for is in place. A crash from here on
    /// restarts from the log alone, which either still holds the person (the erasure was
    /// not answered) or no longer does.
    pub fn erasing(&self) -> std::io::Result<ErasureHold<'_>> {
        self.rebuilds().erasing += 1;
        let removed = {
            let _file = self
                .snapshot_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.snapshot_at.store(0, Ordering::Release);
            match &self.snapshot_path {
                Some(path) => snapshot::remove(&path.with_extension("tmp"))
                    .and_then(|()| snapshot::remove(path)),
                None => Ok(()),
            }
        };
        match removed {
            Ok(()) => Ok(ErasureHold {
                live: self,
                finished: false,
            }),
            Err(error) => {
                // Nothing changed: snapshots may go on.
                let mut rebuilds = self.rebuilds();
                rebuilds.erasing = rebuilds.erasing.saturating_sub(1);
                Err(error)
            }
        }
    }

    /// An erasure's end: asks for the rebuild; returns its ticket.
    fn erased(&self) -> u64 {
        let mut rebuilds = self.rebuilds();
        rebuilds.erasing = rebuilds.erasing.saturating_sub(1);
        rebuilds.asked += 1;
        rebuilds.asked
    }

    /// Waits until the rebuild with this ticket (or a later one) is in place.
    pub fn wait_rebuilt(&self, ticket: u64, timeout: Duration) -> bool {
        let rebuilds = self.rebuilds();
        let (rebuilds, _) = self
            .rebuilt
            .wait_timeout_while(rebuilds, timeout, |r| r.done < ticket && !self.failed())
            .unwrap_or_else(PoisonError::into_inner);
        rebuilds.done >= ticket
    }

    /// Replays the log into a fresh engine and swaps it in, if a rebuild was asked for.
    fn rebuild_if_asked(&self, log: &dyn EventLog) -> Result<(), spoor_log::LogError> {
        let ticket = self.rebuilds().asked;
        if self.rebuilds().done >= ticket {
            return Ok(());
        }
        // Rebuilds follow erasures: what was handed over may hold what was just redacted.
        if let Some(handoff) = &self.handoff {
            handoff.clear();
        }
        let fresh = LiveState::replay(log, self.keys.clone())?;
        self.clean_through.fetch_max(
            fresh.clean_through.load(Ordering::Acquire),
            Ordering::AcqRel,
        );
        let mut engine = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        *engine = fresh.engine.into_inner().expect("engine lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Contact numbers are the rebuilt state's now; the erased are not among them.
        self.hidden
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.applied
            .store(fresh.applied.load(Ordering::Acquire), Ordering::Release);
        drop(engine);
        // The snapshot may hold what was just erased: remove it before anyone is told
        // the rebuild is done. A new one is saved once enough records follow.
        {
            let _file = self
                .snapshot_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(path) = &self.snapshot_path
                && let Err(error) = snapshot::remove(path)
            {
                tracing::error!(%error, "removing the state snapshot failed");
            }
            self.snapshot_at.store(0, Ordering::Release);
        }
        self.rebuilds().done = ticket;
        self.rebuilt.notify_all();
        tracing::info!(records = self.applied(), "state rebuilt from the log");
        Ok(())
    }

    /// Asks the follower to stop; it does within [`IDLE_WAIT`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// A record read back from the log, decoded; `None` (counted) when it cannot be.
    /// An error when its keys cannot be reached: it is to be read again.
    fn decode(&self, record: &Record) -> Result<Option<StoredRecord>, spoor_log::LogError> {
        match opening::decode(&record.payload, self.keys.as_deref()) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(opening::Unreadable::Keys(error)) => Err(error),
            Err(opening::Unreadable::Record(reason)) => {
                tracing::error!(
                    position = record.position,
                    reason,
                    "log record not readable; skipped"
                );
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Whether `record` at `position` is an erasure mark the state has yet to answer.
    fn unanswered_mark(&self, record: &StoredRecord, position: Position) -> bool {
        matches!(record.content, RecordContent::Erasure(_))
            && position >= self.clean_through.load(Ordering::Acquire)
    }

    /// Applies the next records `reader` has, waiting up to `wait` for one. The reader
    /// must be at the applied position. Stops at an erasure mark not yet answered.
    fn catch_up(
        &self,
        reader: &mut dyn LogReader,
        wait: Duration,
    ) -> Result<Caught, spoor_log::LogError> {
        let records = reader.next_batch(STEP, wait)?;
        let mut decoded = Vec::with_capacity(records.len());
        let mut erasure = None;
        for r in &records {
            let handed = self.handoff.as_ref().and_then(|h| h.take(&r.payload));
            let record = match handed {
                Some(record) => Some(record),
                None => self.decode(r)?,
            };
            if let Some(record) = &record
                && self.unanswered_mark(record, r.position)
            {
                erasure = Some(r.position);
                break;
            }
            decoded.push(record);
        }
        let mut engine = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        #[cfg(feature = "fault-injection")]
        fault::panic_if_asked();
        for record in decoded.iter().flatten() {
            engine.apply(record);
        }
        drop(engine);
        self.applied
            .store(erasure.unwrap_or(reader.position()), Ordering::Release);
        Ok(Caught {
            read: decoded.len(),
            erasure,
        })
    }

    /// Answers the erasure mark at `position` another process appended: the keys are
    /// read to their end, the snapshot (which may hold the person) removed, and the
    /// state rebuilt from the log.
    fn answer_mark(
        &self,
        log: &dyn EventLog,
        position: Position,
    ) -> Result<(), spoor_log::LogError> {
        let hold = self.erasing().map_err(|e| {
            spoor_log::LogError::Unavailable(format!("removing the state snapshot: {e}"))
        })?;
        // Nothing is applied past the mark until the rebuild; should reading the keys
        // fail, the mark is met again and answered then.
        self.cover_marks(log)?;
        *self
            .deletions_seen_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.tell_erased();
        self.mark_answered(position);
        hold.finish();
        tracing::info!(
            position,
            "a person was erased on another node; rebuilding the state"
        );
        Ok(())
    }
}

/// What the follower keeps from one turn to the next.
#[derive(Default)]
struct Following {
    reader: Option<Box<dyn LogReader>>,
    caught_up: bool,
    /// When following began, from which position, and the log's end then: the
    /// catch-up is over once that end is reached (new records keep coming under load).
    began: Option<(std::time::Instant, u64, u64)>,
}

/// One turn of the follower: a rebuild asked for, a snapshot due, then the next records
/// (waiting for them a moment at the end of the log).
fn follow_step(log: &dyn EventLog, state: &LiveState, following: &mut Following) {
    if let Err(error) = state.rebuild_if_asked(log) {
        tracing::error!(%error, "rebuilding the state failed; retrying");
        std::thread::sleep(IDLE_WAIT);
        return;
    }
    state.answer_deletions();
    state.answer_snapshot_requests();
    state.snapshot_if(|applied, saved| applied >= saved + SNAPSHOT_EVERY);
    // A rebuild moves the applied position under the reader: it reads on from there.
    let reader = match following.reader.take() {
        Some(reader) if reader.position() == state.applied() => reader,
        _ => match log.reader(state.applied()) {
            Ok(reader) => reader,
            Err(error) => {
                tracing::error!(%error, "reading the log for the state failed; retrying");
                std::thread::sleep(IDLE_WAIT);
                return;
            }
        },
    };
    let reader = following.reader.insert(reader);
    let (began, from, end_then) = *following
        .began
        .get_or_insert_with(|| (std::time::Instant::now(), state.applied(), log.end()));
    let caught = state.catch_up(&mut **reader, IDLE_WAIT);
    if let Ok(Caught {
        erasure: Some(position),
        ..
    }) = caught
    {
        following.reader = None;
        if let Err(error) = state.answer_mark(log, position) {
            tracing::error!(%error, "answering an erasure failed; retrying");
            std::thread::sleep(IDLE_WAIT);
        }
        return;
    }
    match caught.map(|c| c.read) {
        Ok(read) if !following.caught_up && (read == 0 || state.applied() >= end_then) => {
            following.caught_up = true;
            state.current.store(true, Ordering::Release);
            let replayed = state.applied().saturating_sub(from);
            // The wait for records at the end of the log is not catching up.
            let waited = if read == 0 { IDLE_WAIT } else { Duration::ZERO };
            let seconds = began.elapsed().saturating_sub(waited).as_secs_f64();
            tracing::info!(
                records = state.applied(),
                replayed,
                seconds = (seconds * 100.0).round() / 100.0,
                records_per_second = (replayed as f64 / seconds.max(0.001)).round(),
                "state is current with the log"
            );
        }
        Ok(_) => {}
        Err(error) => {
            following.reader = None;
            tracing::error!(%error, "reading the log for the state failed; retrying");
            std::thread::sleep(IDLE_WAIT);
        }
    }
}

/// Starts following `log` from its beginning: the state is rebuilt, then kept current.
pub fn follow(log: Arc<dyn EventLog>, state: Arc<LiveState>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spoor-engine".into())
        .spawn(move || {
            let mut following = Following::default();
            while !state.stop.load(Ordering::Acquire) {
                let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    follow_step(&*log, &state, &mut following);
                }));
                if step.is_err() {
                    state.fail();
                    tracing::error!(
                        records = state.applied(),
                        "the state follower panicked; the state may be part-applied, so \
                         spoor stops to restart from its snapshot and log"
                    );
                    return;
                }
            }
            // Stopping: save what was reached, so the next start replays little.
            state.snapshot_if(|applied, saved| applied > saved);
        })
}

/// A panic of the follower on request, for the tests of what one does: in builds with the
/// `fault-injection` feature only (the test builds; the server asks for it only when
/// started with `SPOOR_FAULT_INJECTION=1`).
#[cfg(feature = "fault-injection")]
pub mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};

    static PANIC_NEXT_APPLY: AtomicBool = AtomicBool::new(false);

    /// The follower panics the next time it applies records, holding the state's lock.
    pub fn panic_next_apply() {
        PANIC_NEXT_APPLY.store(true, Ordering::Release);
    }

    pub(crate) fn panic_if_asked() {
        if PANIC_NEXT_APPLY.swap(false, Ordering::AcqRel) {
            panic!("a follower panic injected by a test");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_log::{FileLog, FileLogConfig};
    use spoor_protocol::stored::RecordContent;
    use spoor_protocol::{Incoming, parse_request};

    static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn stored(body: &str) -> Vec<u8> {
        let Incoming::Event(event) = parse_request(body.as_bytes(), 1_700_000_000_000).unwrap()
        else {
            panic!("an event")
        };
        let record = StoredRecord {
            sealed: None,
            received_at: 1_700_000_000_000,
            // Each body its own request: a repeated one would be a client's retry.
            request_hash: spoor_protocol::stored::hash_hex(u128::from(
                NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            )),
            content: RecordContent::Event(event),
        };
        serde_json::to_vec(&record).unwrap()
    }

    fn wait_until_applied(state: &LiveState, records: Position) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.applied() < records {
            assert!(
                std::time::Instant::now() < deadline,
                "the state did not catch up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn the_state_follows_appends_as_they_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileLogConfig {
            segment_bytes: 1024 * 1024,
            ..FileLogConfig::default()
        };
        let log: Arc<dyn EventLog> = Arc::new(FileLog::open(dir.path(), config, None).unwrap());
        let state = Arc::new(LiveState::default());
        let follower = follow(log.clone(), state.clone()).unwrap();
        for i in 0..5 {
            let body = format!(
                r#"{{"GeneralInfo": {{"eventName": "CategoryPage", "siteId": "S", "cookies": "c{i}"}},
                    "CategoryPage": {{"categoryKey": "k"}}}}"#
            );
            log.append(vec![stored(&body)]).await.unwrap();
        }
        log.append(vec![b"not a record".to_vec()]).await.unwrap();
        wait_until_applied(&state, 6);
        assert_eq!(state.read().site("S").unwrap().counts().contacts, 5);
        assert_eq!(state.undecodable(), 1);
        state.stop();
        follower.join().unwrap();
    }

    /// A record of `body` sealed with `keys`, as an ingest node on a sealing log appends it.
    fn sealed(body: &str, keys: &Keyring) -> Vec<u8> {
        let mut record: StoredRecord = serde_json::from_slice(&stored(body)).unwrap();
        spoor_protocol::sealing::seal(&mut record, |name| {
            let key = keys.key_for(name);
            Ok::<_, std::convert::Infallible>((key.id, key.key))
        })
        .unwrap();
        keys.store_pending().unwrap();
        serde_json::to_vec(&record).unwrap()
    }

    fn customer(email: &str, cookie: &str) -> String {
        format!(
            r#"{{"GeneralInfo": {{"eventName": "CategoryPage", "siteId": "S", "cookies": "{cookie}",
                "user_email": "{email}"}}, "CategoryPage": {{"categoryKey": "k"}}}}"#
        )
    }

    fn holds(state: &LiveState, email: &str) -> bool {
        let id = spoor_engine::contacts::identity::Identifier::Email(email.into());
        (state.read().site("S")).is_some_and(|site| site.contact(&id).is_some())
    }

    #[tokio::test]
    async fn a_node_drops_a_person_whose_keys_another_node_deleted_once_it_meets_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> =
            Arc::new(FileLog::open(dir.path(), FileLogConfig::default(), None).unwrap());
        let table = Arc::new(spoor_log::MemoryTable::default());
        let (ingest_keys, erasing_keys, follower_keys) = (
            Keyring::open(table.clone()).unwrap(),
            Keyring::open(table.clone()).unwrap(),
            Keyring::open(table.clone()).unwrap(),
        );
        for (email, cookie) in [("ann@example.com", "c1"), ("bob@example.com", "c2")] {
            let record = sealed(&customer(email, cookie), &ingest_keys);
            assert!(!String::from_utf8_lossy(&record).contains(email));
            log.append(vec![record]).await.unwrap();
        }
        let state = Arc::new(LiveState::default().with_keys(&*log, Some(follower_keys)));
        let told = Arc::new(Mutex::new(Vec::new()));
        let telling = told.clone();
        state.on_erasure(Box::new(move |site, contacts| {
            for contact in contacts {
                let email = contact.identifiers.email.as_deref().unwrap_or_default();
                telling.lock().unwrap().push(format!("{site} {email}"));
            }
        }));
        let follower = follow(log.clone(), state.clone()).unwrap();
        wait_until_applied(&state, 2);
        assert!(holds(&state, "ann@example.com") && holds(&state, "bob@example.com"));

        // What another node's erasure does: Ann's keys deleted, then the mark.
        let ids = [
            spoor_engine::contacts::identity::Identifier::Email("ann@example.com".into()),
            spoor_engine::contacts::identity::Identifier::Sc("c1".into()),
        ];
        let names = spoor_protocol::sealing::erased_key_names("S", &ids);
        assert_eq!(erasing_keys.delete(&names).unwrap(), 2);
        let mark = StoredRecord {
            received_at: 1_700_000_000_000,
            request_hash: "f".repeat(32),
            sealed: None,
            content: RecordContent::Erasure(spoor_protocol::stored::ErasureMark {
                site_id: "S".into(),
            }),
        };
        log.append(vec![serde_json::to_vec(&mark).unwrap()])
            .await
            .unwrap();
        log.append(vec![stored(&customer("cy@example.com", "c3"))])
            .await
            .unwrap();
        wait_until_applied(&state, 4);
        assert!(!holds(&state, "ann@example.com"), "the person is dropped");
        assert_eq!(*told.lock().unwrap(), ["S ann@example.com"]);
        assert!(
            state.hidden.read().unwrap().is_empty(),
            "the rebuilt state holds no one hidden"
        );
        assert!(holds(&state, "bob@example.com") && holds(&state, "cy@example.com"));
        let kept = state.read().site("S").unwrap().digest();
        state.stop();
        follower.join().unwrap();

        // A node started afterwards, and a rebuild, read the same state, once.
        let later = LiveState::default().with_keys(&*log, Keyring::open(table.clone()).ok());
        assert_eq!(later.clean_through.load(Ordering::Acquire), 4);
        let replayed = LiveState::replay(&*log, Keyring::open(table).ok()).unwrap();
        assert_eq!(replayed.read().site("S").unwrap().digest(), kept);
        // Without keys, no one is read at all.
        let keyless = LiveState::replay(&*log, None).unwrap();
        assert!(!holds(&keyless, "bob@example.com") && holds(&keyless, "cy@example.com"));
    }

    #[tokio::test]
    async fn deleted_keys_whose_mark_never_came_still_drop_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> =
            Arc::new(FileLog::open(dir.path(), FileLogConfig::default(), None).unwrap());
        let table = Arc::new(spoor_log::MemoryTable::default());
        let keys = Keyring::open(table.clone()).unwrap();
        for (email, cookie) in [("ann@example.com", "c1"), ("bob@example.com", "c2")] {
            log.append(vec![sealed(&customer(email, cookie), &keys)])
                .await
                .unwrap();
        }
        let state = Arc::new(
            LiveState::default().with_keys(&*log, Some(Keyring::open(table.clone()).unwrap())),
        );
        let follower = follow(log.clone(), state.clone()).unwrap();
        wait_until_applied(&state, 2);
        let ann = spoor_engine::contacts::identity::Identifier::Email("ann@example.com".into());
        keys.delete(&spoor_protocol::sealing::erased_key_names("S", [&ann]))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while holds(&state, "ann@example.com") {
            assert!(Instant::now() < deadline, "Ann is still held");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(holds(&state, "bob@example.com"));
        state.stop();
        follower.join().unwrap();
    }

    #[tokio::test]
    async fn the_follower_takes_handed_over_records_instead_of_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> =
            Arc::new(FileLog::open(dir.path(), FileLogConfig::default(), None).unwrap());
        let handoff = Arc::new(Handoff::new(16, 1 << 20));
        let state = Arc::new(LiveState::default().with_handoff(handoff.clone()));
        let follower = follow(log.clone(), state.clone()).unwrap();
        let view = |site: &str| {
            format!(
                r#"{{"GeneralInfo": {{"eventName": "CategoryPage", "siteId": "{site}", "cookies": "c"}},
                    "CategoryPage": {{"categoryKey": "k"}}}}"#
            )
        };
        // Handed over as a record of site H while its bytes say site B: what the follower
        // applies shows which one it used. (Ingest hands over exactly what it encodes.)
        let bytes = stored(&view("B"));
        let handed: StoredRecord = serde_json::from_slice(&stored(&view("H"))).unwrap();
        handoff.deposit(&bytes, handed);
        log.append(vec![bytes]).await.unwrap();
        // Bytes nobody handed over are decoded as usual.
        log.append(vec![stored(&view("D"))]).await.unwrap();
        wait_until_applied(&state, 2);
        let engine = state.read();
        assert!(engine.site("H").is_some() && engine.site("D").is_some());
        assert!(engine.site("B").is_none());
        drop(engine);
        assert!(handoff.is_empty());
        state.stop();
        follower.join().unwrap();
    }
}
