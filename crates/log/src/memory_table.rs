//! A [`SharedTable`] in memory, as a compacted topic behaves for its readers (every change
//! in order): for tests of what follows a table, without a broker.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{LogError, SharedTable, TableChange, TableFollower};

#[derive(Default, Clone)]
pub struct MemoryTable {
    changes: Arc<Mutex<Vec<TableChange>>>,
}

struct MemoryFollower {
    changes: Arc<Mutex<Vec<TableChange>>>,
    next: usize,
    end_at_start: usize,
}

impl MemoryTable {
    fn changes(&self) -> std::sync::MutexGuard<'_, Vec<TableChange>> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every change stored, in order.
    pub fn stored(&self) -> Vec<TableChange> {
        self.changes().clone()
    }
}

impl SharedTable for MemoryTable {
    fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError> {
        self.changes().push(TableChange {
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    fn follow(&self) -> Result<Box<dyn TableFollower>, LogError> {
        Ok(Box::new(MemoryFollower {
            changes: self.changes.clone(),
            next: 0,
            end_at_start: self.changes().len(),
        }))
    }

    fn describe(&self) -> String {
        "a table in memory".into()
    }
}

impl MemoryFollower {
    fn take(&mut self) -> Vec<TableChange> {
        let changes =
            self.changes.lock().unwrap_or_else(PoisonError::into_inner)[self.next..].to_vec();
        self.next += changes.len();
        changes
    }
}

impl TableFollower for MemoryFollower {
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<TableChange>, LogError> {
        let changes = self.take();
        if changes.is_empty() {
            std::thread::sleep(wait.min(Duration::from_millis(1)));
        }
        Ok(changes)
    }

    fn read_to_end(&mut self) -> Result<Vec<TableChange>, LogError> {
        Ok(self.take())
    }

    fn caught_up(&self) -> bool {
        self.next >= self.end_at_start
    }
}
