//! Keys by name, held in a [`SharedTable`] that every node follows: the keys a log that
//! cannot be rewritten seals its records' personal parts with, one name per person's
//! identifier (see `spoor_protocol::sealing`). Deleting a name's keys (tombstones in the
//! table) is what erases: every record sealed with one of them is unreadable afterwards.
//!
//! An entry is `<name>/<id>` -> 32 random bytes, the id 128 random bits: a record names
//! its keys by id alone, so nothing in the events says whose they are. A name may have
//! several keys (two nodes meeting a new identifier at once each make one; both are
//! kept, each record naming the one it was sealed with), so no node ever has to win a
//! race. A key is made in memory and handed to the table at once; a record sealed with
//! it is appended only once it is stored ([`KeyStored`]): a reader that finds a record
//! finds its keys, and a key it cannot find after reading the table to its end was
//! deleted. Keys and deletions go through one producer, in order, so a key handed over
//! before its name's deletion is deleted after it, never the other way round.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Shared;

use crate::{LogError, SharedTable, TableChange, TableFollower, block_on};

pub const KEY_LEN: usize = 32;
pub type Key = [u8; KEY_LEN];

/// How long the follower thread waits for a change before looking again whether the
/// keyring is still used.
const FOLLOW_WAIT: Duration = Duration::from_millis(100);

pub struct Keyring {
    table: Arc<dyn SharedTable>,
    held: RwLock<Held>,
    follower: Mutex<Box<dyn TableFollower>>,
    /// Made here and not yet known to be stored, by id: its name, and its storing.
    pending: Mutex<HashMap<String, (String, KeyStored)>>,
}

/// Resolves once a key made here is stored (see [`Keyring::key_for`]); every record
/// sealed with it waits for the same.
#[derive(Clone)]
pub struct KeyStored(Shared<Storing>);

/// Storing one key: its error as text, so that every waiter gets a copy.
type Storing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

impl KeyStored {
    /// Waits until the key is stored; an error when it could not be (the key is then
    /// dropped, see [`Keyring::settle`]).
    pub async fn wait(self) -> Result<(), LogError> {
        self.0.await.map_err(LogError::Unavailable)
    }
}

/// A key to seal with: its id, its bytes, and, for one made here and not yet known to be
/// stored, what to wait for before appending what it seals.
pub struct SealingKey {
    pub id: String,
    pub key: Key,
    pub storing: Option<KeyStored>,
}

#[derive(Default)]
struct Held {
    keys: HashMap<String, Key>,
    /// The ids of each name's keys held, the one to seal with first.
    by_name: HashMap<String, Vec<String>>,
    /// Ids found deleted: they never come back (an id is never made twice).
    gone: HashSet<String>,
    /// Names whose keys were deleted, in the order the deletions were read (once per
    /// key; a node that starts reads those the table still holds as tombstones).
    deleted: Vec<String>,
    /// Keys made here whose storing failed: never sealed with again.
    failed: HashSet<String>,
}

fn entry_key(name: &str, id: &str) -> String {
    format!("{name}/{id}")
}

impl Held {
    fn take(&mut self, change: TableChange) {
        let Some((name, id)) = change.key.split_once('/') else {
            tracing::warn!(
                key = change.key,
                "a key table entry of another form; ignored"
            );
            return;
        };
        let (name, id) = (name.to_string(), id.to_string());
        match change.value.as_deref().map(<Key>::try_from) {
            Some(Ok(key)) => {
                let ids = self.by_name.entry(name).or_default();
                if !ids.contains(&id) {
                    ids.push(id.clone());
                }
                self.keys.insert(id, key);
            }
            Some(Err(_)) => {
                tracing::warn!(
                    key = change.key,
                    "a key table entry that is not a key; ignored"
                )
            }
            None => self.forget(&name, id),
        }
    }

    fn forget(&mut self, name: &str, id: String) {
        self.failed.remove(&id);
        if self.keys.remove(&id).is_some() || !self.gone.contains(&id) {
            self.deleted.push(name.to_string());
        }
        if let Some(ids) = self.by_name.get_mut(name) {
            ids.retain(|held| *held != id);
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
        self.gone.insert(id);
    }
}

impl Keyring {
    /// Reads the whole table, and follows it on a thread of its own for as long as the
    /// keyring is used.
    pub fn open(table: Arc<dyn SharedTable>) -> Result<Arc<Keyring>, LogError> {
        let mut follower = table.follow()?;
        let mut held = Held::default();
        for change in follower.read_to_end()? {
            held.take(change);
        }
        let keyring = Arc::new(Keyring {
            table,
            held: RwLock::new(held),
            follower: Mutex::new(follower),
            pending: Mutex::default(),
        });
        let weak = Arc::downgrade(&keyring);
        std::thread::Builder::new()
            .name("spoor-keys".into())
            .spawn(move || follow(weak))
            .map_err(|e| LogError::io("start the key table's follower", e))?;
        Ok(keyring)
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn held_mut(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, KeyStored)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every change stored so far into the keys held.
    pub fn refresh(&self) -> Result<(), LogError> {
        self.take_changes(|follower| follower.read_to_end())
    }

    fn take_changes(
        &self,
        read: impl FnOnce(&mut dyn TableFollower) -> Result<Vec<TableChange>, LogError>,
    ) -> Result<(), LogError> {
        let mut follower = self.follower.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = read(&mut **follower)?;
        if !changes.is_empty() {
            let mut held = self.held_mut();
            for change in changes {
                held.take(change);
            }
        }
        Ok(())
    }

    /// A key of `name` to seal with: one held, or a new one, handed to the table now.
    pub fn key_for(&self, name: &str) -> SealingKey {
        if let Some(found) = self.usable(&self.held(), name) {
            return found;
        }
        let mut held = self.held_mut();
        // Another thread may have made one meanwhile.
        if let Some(found) = self.usable(&held, name) {
            return found;
        }
        let (id, key) = (new_id(), random_key());
        // First: the one to seal with. A key whose storing failed stays behind it, so
        // that a deletion of the name still takes it (it may have been stored after all).
        held.by_name
            .entry(name.to_string())
            .or_default()
            .insert(0, id.clone());
        held.keys.insert(id.clone(), key);
        // Handed over under the lock a deletion reads the names' keys under: a key
        // handed over before a deletion is deleted after it.
        let entry = entry_key(name, &id);
        let storing = self
            .table
            .put_all_later(&[(entry.as_str(), Some(key.as_slice()))]);
        let storing = KeyStored(
            storing
                .map(|stored| stored.map_err(|e| e.to_string()))
                .boxed()
                .shared(),
        );
        // Pending before the key is visible to other threads: one that finds the key
        // must find what to wait for.
        self.pending()
            .insert(id.clone(), (name.to_string(), storing.clone()));
        drop(held);
        SealingKey {
            id,
            key,
            storing: Some(storing),
        }
    }

    /// A key of `name` to seal with when one is held; never a new one: for what names
    /// someone only once their records do (a name whose keys were deleted stays without).
    pub fn existing_key(&self, name: &str) -> Option<SealingKey> {
        self.usable(&self.held(), name)
    }

    /// The key of `name` to seal with, if one is held and not known to have failed,
    /// with what to wait for; read under `held`'s guard, so that its storing's outcome
    /// and the key are seen together (a failure settles both under the write lock).
    fn usable(&self, held: &Held, name: &str) -> Option<SealingKey> {
        let id = held.by_name.get(name)?.first()?;
        if held.failed.contains(id) {
            return None;
        }
        let mut pending = self.pending();
        let storing = match pending.get(id) {
            None => None,
            Some((_, storing)) => match storing.0.peek() {
                Some(Ok(())) => {
                    pending.remove(id);
                    None
                }
                // Settled by whoever waited for it; until then it is not sealed with.
                Some(Err(_)) => return None,
                None => Some(storing.clone()),
            },
        };
        Some(SealingKey {
            id: id.clone(),
            key: held.keys[id],
            storing,
        })
    }

    /// Says how storing key `id` went, once waited for: stored, it is no longer waited
    /// for; not stored, it is never sealed with again (the records sealed with it were
    /// refused) and the next record of its name gets a new one. It is kept with its name
    /// and deleted with it, and deleted now: a timeout may be reported for a key that
    /// was stored all the same.
    pub fn settle(&self, id: &str, stored: bool) {
        let mut held = self.held_mut();
        let Some((name, _)) = self.pending().remove(id) else {
            return;
        };
        if stored || !held.keys.contains_key(id) {
            return;
        }
        held.failed.insert(id.to_string());
        // After the put in the producer's order, its outcome not waited for: if the
        // brokers are away it fails too, and the name's deletion, should it come, sends
        // it again.
        drop(
            self.table
                .put_all_later(&[(entry_key(&name, id).as_str(), None)]),
        );
    }

    /// Whether `name` has a key held (one made after an erasure of it included).
    pub fn has_key(&self, name: &str) -> bool {
        self.held().by_name.contains_key(name)
    }

    /// Whether keys made here may not be stored yet.
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Waits (blocking) until every key made here is stored: for callers that seal
    /// records outside a request (tests, tools).
    pub fn store_pending(&self) -> Result<(), LogError> {
        let pending: Vec<(String, KeyStored)> = (self.pending().iter())
            .map(|(id, (_, storing))| (id.clone(), storing.clone()))
            .collect();
        for (id, storing) in pending {
            let stored = block_on(storing.wait());
            self.settle(&id, stored.is_ok());
            stored?;
        }
        Ok(())
    }

    /// The key `id` names: `None` once it is deleted. A key not held is looked for in
    /// the table as far as it is written (a record is appended only after its keys are
    /// stored, so one missing then was deleted).
    pub fn key(&self, id: &str) -> Result<Option<Key>, LogError> {
        if let Some(found) = self.lookup(id) {
            return Ok(found);
        }
        self.refresh()?;
        if let Some(found) = self.lookup(id) {
            return Ok(found);
        }
        self.held_mut().gone.insert(id.to_string());
        Ok(None)
    }

    fn lookup(&self, id: &str) -> Option<Option<Key>> {
        let held = self.held();
        match held.keys.get(id) {
            Some(key) => Some(Some(*key)),
            None => held.gone.contains(id).then_some(None),
        }
    }

    /// Deletes every key of these names, durably; returns how many.
    pub fn delete(&self, names: &[String]) -> Result<usize, LogError> {
        self.refresh()?;
        let doomed: Vec<(String, String)> = {
            let held = self.held();
            names
                .iter()
                .flat_map(|name| {
                    let ids = held.by_name.get(name).cloned().unwrap_or_default();
                    ids.into_iter().map(move |id| (name.clone(), id))
                })
                .collect()
        };
        let entries: Vec<String> = (doomed.iter())
            .map(|(name, id)| entry_key(name, id))
            .collect();
        let tombstones: Vec<(&str, Option<&[u8]>)> =
            entries.iter().map(|entry| (entry.as_str(), None)).collect();
        self.table.put_all(&tombstones)?;
        let mut held = self.held_mut();
        let mut pending = self.pending();
        for (name, id) in doomed {
            pending.remove(&id);
            held.forget(&name, id);
        }
        Ok(entries.len())
    }

    /// The names whose keys were deleted since `from` (a count of deletions read, as this
    /// returns it), and the count now.
    pub fn deleted_since(&self, from: usize) -> (Vec<String>, usize) {
        let held = self.held();
        let names = held.deleted.get(from..).unwrap_or_default().to_vec();
        (names, held.deleted.len())
    }

    /// `Err` once keys can no longer be stored until a restart.
    pub fn health(&self) -> Result<(), LogError> {
        self.table.health()
    }

    /// Keys held (in memory: each costs a few hundred bytes).
    pub fn len(&self) -> usize {
        self.held().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps the keys held current (other nodes' new keys and deletions) until the keyring is
/// dropped.
fn follow(keyring: Weak<Keyring>) {
    let mut failing = false;
    while let Some(keyring) = keyring.upgrade() {
        match keyring.take_changes(|follower| follower.next_changes(FOLLOW_WAIT)) {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "following the key table failed; retrying");
                }
                failing = true;
                drop(keyring);
                std::thread::sleep(FOLLOW_WAIT);
            }
        }
    }
}

fn random_key() -> Key {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).expect("the system's random source works");
    key
}

/// 128 random bits, hex: never made twice, and saying nothing of the name.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTable;

    fn ring(table: &MemoryTable) -> Arc<Keyring> {
        Keyring::open(Arc::new(table.clone())).unwrap()
    }

    #[test]
    fn a_key_is_stored_before_use_elsewhere_and_found_by_another_node() {
        let table = MemoryTable::default();
        let (one, two) = (ring(&table), ring(&table));
        let SealingKey { id, key, storing } = one.key_for("n1");
        assert!(!id.contains("n1"), "an id says nothing of its name");
        assert!(storing.is_some(), "a new key is to be waited for");
        let again = one.key_for("n1");
        assert_eq!((&again.id, again.key), (&id, key), "one key per name here");
        assert!(one.has_pending());
        one.store_pending().unwrap();
        assert!(!one.has_pending());
        assert!(
            one.key_for("n1").storing.is_none(),
            "stored: nothing to wait for"
        );
        assert_eq!(table.stored().len(), 1);
        assert_eq!(two.key(&id).unwrap(), Some(key));
    }

    #[test]
    fn deleting_a_name_deletes_each_of_its_generations_everywhere() {
        let table = MemoryTable::default();
        let (one, two) = (ring(&table), ring(&table));
        let first = one.key_for("n1").id;
        let second = two.key_for("n1").id;
        let SealingKey {
            id: other,
            key: other_key,
            ..
        } = one.key_for("n2");
        assert_ne!(first, second);
        one.store_pending().unwrap();
        two.store_pending().unwrap();
        assert_eq!(one.delete(&["n1".to_string()]).unwrap(), 2);
        // Another node drops them once it has read the table that far.
        two.refresh().unwrap();
        for node in [&one, &two] {
            assert_eq!(node.key(&first).unwrap(), None);
            assert_eq!(node.key(&second).unwrap(), None);
            assert_eq!(node.key(&other).unwrap(), Some(other_key));
        }
        let third = ring(&table);
        assert_eq!(third.key(&first).unwrap(), None, "a node started later");
        for node in [&two, &third] {
            assert_eq!(node.deleted_since(0).0, ["n1", "n1"]);
        }
        assert_eq!(two.deleted_since(2), (Vec::new(), 2));
        assert_ne!(third.key_for("n1").id, first, "a new key after the erasure");
    }

    /// A table whose writes fail while `failing` is set, as brokers out of reach do.
    struct Flaky {
        inner: MemoryTable,
        failing: std::sync::atomic::AtomicBool,
    }

    impl SharedTable for Flaky {
        fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError> {
            if self.failing.load(std::sync::atomic::Ordering::Acquire) {
                return Err(LogError::Unavailable("brokers out of reach".into()));
            }
            self.inner.put(key, value)
        }

        fn follow(&self) -> Result<Box<dyn TableFollower>, LogError> {
            self.inner.follow()
        }

        fn describe(&self) -> String {
            "a flaky table".into()
        }
    }

    #[test]
    fn a_key_not_stored_is_never_sealed_with_again_and_is_deleted_with_its_name() {
        let table = Arc::new(Flaky {
            inner: MemoryTable::default(),
            failing: true.into(),
        });
        let keys = Keyring::open(table.clone()).unwrap();
        let failed = keys.key_for("n1");
        let storing = failed.storing.clone().expect("a new key");
        assert!(block_on(storing.wait()).is_err());
        keys.settle(&failed.id, false);
        table
            .failing
            .store(false, std::sync::atomic::Ordering::Release);
        let fresh = keys.key_for("n1");
        assert_ne!(fresh.id, failed.id, "a new key after a failed one");
        keys.store_pending().unwrap();
        assert_eq!(
            keys.delete(&["n1".to_string()]).unwrap(),
            2,
            "both, the failed one too"
        );
    }

    #[test]
    fn an_id_never_stored_is_gone() {
        let table = MemoryTable::default();
        let one = ring(&table);
        assert_eq!(one.key("0123456789abcdef").unwrap(), None);
    }
}
