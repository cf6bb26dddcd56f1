//! Settings shared by the nodes of one log, through a [`SharedTable`]: each site's entry
//! of each file is a value under the key `<file>/<siteId>` (`blocks.json/shop1`).
//!
//! A node reads the whole table before it serves, then follows it on a thread of its own;
//! its files in the data directory are its copy. A change is stored in the table before
//! the node that made it keeps it, so an answered change is never lost, and every node
//! takes every change in the table's order. Two nodes changing the same site's entry at
//! once: the later write in the table wins everywhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spoor_log::{SharedTable, TableFollower};

use crate::Settings;
use crate::error::{Setting, SettingsError};
use crate::file::SharedFile;

/// What [`Settings::share`] found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The table held settings: this node's files now hold the same (`entries` of them).
    Joined { entries: usize },
    /// The table was empty: this node's settings were stored in it (`entries` of them),
    /// so the first node on a log brings the settings it had.
    Seeded { entries: usize },
}

/// How long the follower waits for a change before it asks again.
const FOLLOW_WAIT: Duration = Duration::from_millis(500);
/// How long reading the table at start may go without a change before it gives up.
const CATCH_UP_STALL: Duration = Duration::from_secs(30);
/// How long the follower rests after the table could not be read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Settings {
    fn files(&self) -> [&dyn SharedFile; 4] {
        [
            self.sites.file(),
            self.blocks.file(),
            self.tuning.file(),
            self.triggers.file(),
        ]
    }

    /// Shares these settings through `table`: reads the whole table (or seeds it when it
    /// is empty), stores every change there from now on, and follows other nodes'
    /// changes on a thread of its own.
    pub fn share(&self, table: Arc<dyn SharedTable>) -> Result<Sharing, SettingsError> {
        let unavailable = |e: spoor_log::LogError| {
            SettingsError::storage(
                Setting::Site,
                format!("read the shared settings in {}: {e}", table.describe()),
            )
        };
        let mut follower = table.follow().map_err(unavailable)?;
        let mut held: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut changes_read = 0;
        let mut progress = Instant::now();
        while !follower.caught_up() {
            if progress.elapsed() > CATCH_UP_STALL {
                return Err(unavailable(spoor_log::LogError::Unavailable(format!(
                    "no change came for {} s before its end",
                    CATCH_UP_STALL.as_secs()
                ))));
            }
            for change in follower.next_changes(FOLLOW_WAIT).map_err(unavailable)? {
                progress = Instant::now();
                changes_read += 1;
                match change.value {
                    Some(value) => held.insert(change.key, value),
                    None => held.remove(&change.key),
                };
            }
        }
        let sharing = if changes_read == 0 {
            self.seed(table.as_ref())?
        } else {
            self.join(&held)?
        };
        for file in self.files() {
            file.share(table.clone());
        }
        let settings = self.clone();
        std::thread::Builder::new()
            .name("spoor-settings".into())
            .spawn(move || settings.follow(follower))
            .map_err(|e| {
                SettingsError::storage(Setting::Site, format!("start the settings follower: {e}"))
            })?;
        Ok(sharing)
    }

    fn seed(&self, table: &dyn SharedTable) -> Result<Sharing, SettingsError> {
        let mut entries = 0;
        for file in self.files() {
            entries += file.seed(table)?;
        }
        Ok(Sharing::Seeded { entries })
    }

    fn join(&self, held: &BTreeMap<String, Vec<u8>>) -> Result<Sharing, SettingsError> {
        for file in self.files() {
            let prefix = format!("{}/", file.name());
            let entries = (held.iter())
                .filter_map(|(key, value)| {
                    Some((key.strip_prefix(&prefix)?.to_string(), value.clone()))
                })
                .collect();
            file.replace_all(&entries)?;
        }
        Ok(Sharing::Joined {
            entries: held.len(),
        })
    }

    /// Takes every change stored after the start, for the life of the process.
    fn follow(&self, mut follower: Box<dyn TableFollower>) {
        loop {
            match follower.next_changes(FOLLOW_WAIT) {
                Ok(changes) => {
                    for change in changes {
                        self.apply(&change.key, change.value.as_deref());
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the shared settings could not be read; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    fn apply(&self, key: &str, entry: Option<&[u8]>) {
        let Some((name, site)) = key.split_once('/') else {
            return;
        };
        // A key of a file this version does not know is a newer node's: left to it.
        let Some(file) = self.files().into_iter().find(|f| f.name() == name) else {
            return;
        };
        if let Err(error) = file.apply(site, entry) {
            tracing::warn!(%error, "a shared setting was not taken");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use spoor_log::{LogError, TableChange};

    use super::*;
    use crate::{RateLimit, SiteSettings};

    /// A table in memory, as a compacted topic behaves for its readers: every change in
    /// order.
    #[derive(Default)]
    struct MemoryTable {
        changes: Arc<Mutex<Vec<TableChange>>>,
    }

    struct MemoryFollower {
        changes: Arc<Mutex<Vec<TableChange>>>,
        next: usize,
        end_at_start: usize,
    }

    impl SharedTable for MemoryTable {
        fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError> {
            self.changes.lock().unwrap().push(TableChange {
                key: key.into(),
                value: value.map(<[u8]>::to_vec),
            });
            Ok(())
        }

        fn follow(&self) -> Result<Box<dyn TableFollower>, LogError> {
            let end_at_start = self.changes.lock().unwrap().len();
            Ok(Box::new(MemoryFollower {
                changes: self.changes.clone(),
                next: 0,
                end_at_start,
            }))
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    impl TableFollower for MemoryFollower {
        fn next_changes(&mut self, _wait: Duration) -> Result<Vec<TableChange>, LogError> {
            let changes = self.changes.lock().unwrap()[self.next..].to_vec();
            self.next += changes.len();
            if changes.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(changes)
        }

        fn caught_up(&self) -> bool {
            self.next >= self.end_at_start
        }
    }

    fn limit(per_second: u32) -> SiteSettings {
        SiteSettings {
            rate_limit: Some(RateLimit {
                per_second,
                burst: 1,
            }),
            ..SiteSettings::default()
        }
    }

    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_first_node_seeds_the_table_and_later_ones_take_it_and_follow_it() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let table: Arc<dyn SharedTable> = Arc::new(MemoryTable::default());
        let first = Settings::open(dirs[0].path()).unwrap();
        first.sites.register(Some("S1"), None, 1).unwrap();
        assert_eq!(
            first.share(table.clone()).unwrap(),
            Sharing::Seeded { entries: 1 }
        );

        // The second node's own site is not in the table: the table wins.
        let second = Settings::open(dirs[1].path()).unwrap();
        second.sites.register(Some("LOCAL"), None, 1).unwrap();
        assert_eq!(
            second.share(table.clone()).unwrap(),
            Sharing::Joined { entries: 1 }
        );
        let ids = |s: &Settings| {
            s.sites
                .list()
                .into_iter()
                .map(|s| s.site_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&second), ["S1"]);
        let copy = std::fs::read_to_string(dirs[1].path().join("sites.json")).unwrap();
        assert!(copy.contains("S1") && !copy.contains("LOCAL"), "{copy}");

        // Changes flow both ways, keys included.
        first.sites.register(Some("S2"), None, 2).unwrap();
        until("S2 on the second node", || second.sites.contains("S2"));
        let key = second.sites.issue_api_key("S1").unwrap();
        until("the key on the first node", || {
            first.sites.verify_api_key("S1", &key)
        });
    }

    #[test]
    fn a_node_never_reads_back_an_earlier_value_of_its_own_changes() {
        let dir = tempfile::tempdir().unwrap();
        let table: Arc<dyn SharedTable> = Arc::new(MemoryTable::default());
        let settings = Settings::open(dir.path()).unwrap();
        settings.sites.register(Some("S1"), None, 1).unwrap();
        settings.share(table.clone()).unwrap();
        for per_second in 1..200 {
            settings
                .sites
                .set_settings("S1", limit(per_second))
                .unwrap();
            let held = settings.sites.settings("S1").unwrap();
            assert_eq!(held, limit(per_second), "after change {per_second}");
        }
        // Another node's change after the last one is taken once the echoes are in.
        table
            .put(
                "sites.json/S1",
                Some(
                    &serde_json::to_vec(&serde_json::json!({
                        "siteId": "S1", "name": "S1", "createdAt": 1,
                        "settings": {"rateLimit": {"perSecond": 7777, "burst": 1}}
                    }))
                    .unwrap(),
                ),
            )
            .unwrap();
        until("the other node's change", || {
            settings.sites.settings("S1") == Some(limit(7777))
        });
    }
}
