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
    /// No seed had finished in the table: this node's settings were stored in it
    /// (`entries` of them), beside what it held, so the first node on a log brings the
    /// settings it had.
    Seeded { entries: usize },
}

/// How long the follower waits for a change before it asks again.
const FOLLOW_WAIT: Duration = Duration::from_millis(500);
/// The key whose presence says a seed finished: a table without it is seeded (again).
const SEEDED: &str = "spoor/seeded";
/// How long reading the table at start may go without a change before it gives up.
const CATCH_UP_STALL: Duration = Duration::from_secs(30);
/// How long the follower rests after the table could not be read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Settings {
    fn files(&self) -> [&dyn SharedFile; 5] {
        let [sites, keys] = self.sites.files();
        [
            sites,
            keys,
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
        let mut progress = Instant::now();
        while !follower.caught_up() {
            // A broker of several out of reach is passed by the client: only a table
            // that stays unreadable stops the start.
            let changes = match follower.next_changes(FOLLOW_WAIT) {
                Ok(changes) => changes,
                Err(error) if progress.elapsed() > CATCH_UP_STALL => {
                    return Err(unavailable(error));
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the shared settings; retrying");
                    std::thread::sleep(RETRY_AFTER / 10);
                    continue;
                }
            };
            if changes.is_empty() && progress.elapsed() > CATCH_UP_STALL {
                return Err(unavailable(spoor_log::LogError::Unavailable(format!(
                    "no change came for {} s before its end",
                    CATCH_UP_STALL.as_secs()
                ))));
            }
            for change in changes {
                progress = Instant::now();
                match change.value {
                    Some(value) => held.insert(change.key, value),
                    None => held.remove(&change.key),
                };
            }
        }
        let sharing = if held.contains_key(SEEDED) {
            self.join(&held)?
        } else {
            self.seed(table.as_ref(), &held)?
        };
        for file in self.files() {
            file.share(table.clone());
        }
        // Digests an earlier version kept in the sites' entries go to their own, through
        // the table now, so that every node has them.
        self.sites.move_inline_keys()?;
        let settings = self.clone();
        std::thread::Builder::new()
            .name("spoor-settings".into())
            .spawn(move || settings.follow(follower))
            .map_err(|e| {
                SettingsError::storage(Setting::Site, format!("start the settings follower: {e}"))
            })?;
        Ok(sharing)
    }

    /// Stores this node's settings in a table no seed finished in. What the table holds
    /// already (a seed cut short, another first node's under way) is kept beside them,
    /// this node's entry winning where both have one; the mark comes last.
    fn seed(
        &self,
        table: &dyn SharedTable,
        held: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Sharing, SettingsError> {
        for (key, entry) in held {
            if let Some((file, site)) = self.file_of(key)
                && !file.holds(site)
                && let Err(error) = file.apply(site, Some(entry))
            {
                // A newer version's entry: left to it, as a join leaves it.
                tracing::warn!(%error, "a shared setting was not taken");
            }
        }
        let mut entries = 0;
        for file in self.files() {
            entries += file.seed(table)?;
        }
        table.put(SEEDED, Some(b"1")).map_err(|e| {
            SettingsError::storage(
                Setting::Site,
                format!("mark the settings stored in {}: {e}", table.describe()),
            )
        })?;
        Ok(Sharing::Seeded { entries })
    }

    /// The file and site a table key names; `None` for a key of no file this version
    /// knows (a newer node's, or the seed mark).
    fn file_of<'k>(&self, key: &'k str) -> Option<(&dyn SharedFile, &'k str)> {
        let (name, site) = key.split_once('/')?;
        let file = self.files().into_iter().find(|f| f.name() == name)?;
        Some((file, site))
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
        let entries = held
            .keys()
            .filter(|key| self.file_of(key).is_some())
            .count();
        Ok(Sharing::Joined { entries })
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
        let Some((file, site)) = self.file_of(key) else {
            return;
        };
        if let Err(error) = file.apply(site, entry) {
            tracing::warn!(%error, "a shared setting was not taken");
        }
    }
}

#[cfg(test)]
mod tests {

    use spoor_log::MemoryTable;

    use super::*;
    use crate::{RateLimit, SiteSettings};

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
    fn a_seed_cut_short_is_finished_by_the_next_node_and_keeps_what_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let table: Arc<dyn SharedTable> = Arc::new(MemoryTable::default());
        // A first node stored one site, then died before marking the seed done.
        let entry = serde_json::json!({"siteId": "EARLY", "name": "EARLY", "createdAt": 1});
        (table.put(
            "sites.json/EARLY",
            Some(&serde_json::to_vec(&entry).unwrap()),
        ))
        .unwrap();
        let settings = Settings::open(dir.path()).unwrap();
        settings.sites.register(Some("S1"), None, 1).unwrap();
        // Both stored: the one found, and this node's.
        assert_eq!(
            settings.share(table.clone()).unwrap(),
            Sharing::Seeded { entries: 2 }
        );
        assert!(settings.sites.contains("EARLY") && settings.sites.contains("S1"));
        let later = tempfile::tempdir().unwrap();
        let joined = Settings::open(later.path()).unwrap();
        assert_eq!(joined.share(table).unwrap(), Sharing::Joined { entries: 2 });
        assert!(joined.sites.contains("EARLY") && joined.sites.contains("S1"));
    }

    #[test]
    fn a_key_issued_on_one_node_survives_a_settings_change_on_another_made_meanwhile() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let table: Arc<dyn SharedTable> = Arc::new(MemoryTable::default());
        let first = Settings::open(dirs[0].path()).unwrap();
        first.sites.register(Some("S1"), None, 1).unwrap();
        first.share(table.clone()).unwrap();
        let second = Settings::open(dirs[1].path()).unwrap();
        second.share(table.clone()).unwrap();
        let key = first.sites.issue_api_key("S1").unwrap();
        // Made from a copy that may not have the key yet.
        second.sites.set_settings("S1", limit(9)).unwrap();
        for node in [&first, &second] {
            until("the key and the settings on both nodes", || {
                node.sites.verify_api_key("S1", &key) && node.sites.settings("S1") == Some(limit(9))
            });
        }
        let joined = tempfile::tempdir().unwrap();
        let later = Settings::open(joined.path()).unwrap();
        later.share(table).unwrap();
        assert!(later.sites.verify_api_key("S1", &key));
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
