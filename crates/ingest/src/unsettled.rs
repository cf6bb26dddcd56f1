//! Appends in flight, and how far the duplicate index is complete while they are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spoor_log::{EventLog, Position};

/// Appends whose claims are not settled yet, counted by the log's end when each began.
/// Their records lie at or after that end, and every record before the lowest such end
/// has its key settled in the index: an index snapshot is complete up to there.
#[derive(Default)]
pub(crate) struct Unsettled(Mutex<BTreeMap<Position, usize>>);

impl Unsettled {
    /// Notes an append about to start; dropping the guard ends it.
    pub(crate) fn begin(self: &Arc<Self>, log: &dyn EventLog) -> UnsettledAppend {
        let mut floors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: a snapshot either sees this append or an end before it.
        let floor = log.end();
        *floors.entry(floor).or_default() += 1;
        UnsettledAppend {
            all: self.clone(),
            floor,
        }
    }

    /// The position below which every appended record's key is settled.
    pub(crate) fn settled_end(&self, log: &dyn EventLog) -> Position {
        let floors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        floors.keys().next().copied().unwrap_or_else(|| log.end())
    }
}

pub(crate) struct UnsettledAppend {
    all: Arc<Unsettled>,
    floor: Position,
}

impl Drop for UnsettledAppend {
    fn drop(&mut self) {
        let mut floors = self.all.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = floors.get_mut(&self.floor) {
            *count -= 1;
            if *count == 0 {
                floors.remove(&self.floor);
            }
        }
    }
}
