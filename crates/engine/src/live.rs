//! The engine kept current: a thread that follows the log and applies each record once it
//! is durable, while readers query the state it has reached.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use spoor_log::{EventLog, Position};
use spoor_protocol::stored::StoredRecord;

use crate::Engine;

/// Records applied per step: the write lock is held for one step at a time.
const STEP: usize = 1024;
/// How long the follower sleeps on an idle log before checking whether to stop.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// The engine's state and how far into the log it has got.
#[derive(Default)]
pub struct LiveState {
    engine: RwLock<Engine>,
    applied: AtomicU64,
    undecodable: AtomicU64,
    stop: AtomicBool,
    /// Rebuilds asked for and done: a rebuild replays the whole log into a fresh engine
    /// (after records were redacted) and swaps it in.
    rebuilds: Mutex<(u64, u64)>,
    rebuilt: Condvar,
}

impl LiveState {
    /// The state as of [`LiveState::applied`] records.
    pub fn read(&self) -> RwLockReadGuard<'_, Engine> {
        self.engine.read().expect("engine lock")
    }

    /// How many log records the state reflects: the position of the next one to apply.
    pub fn applied(&self) -> Position {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that could not be read as stored records and were skipped.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Builds the state of the whole log, once, on this thread: `spoor state rebuild`.
    pub fn replay(log: &dyn EventLog) -> Result<LiveState, spoor_log::LogError> {
        let state = LiveState::default();
        while state.catch_up(log)? > 0 {}
        Ok(state)
    }

    /// Asks for the state to be rebuilt from the whole log; returns a ticket for
    /// [`LiveState::wait_rebuilt`].
    pub fn request_rebuild(&self) -> u64 {
        let mut rebuilds = self.rebuilds.lock().expect("rebuild lock");
        rebuilds.0 += 1;
        rebuilds.0
    }

    /// Waits until the rebuild with this ticket (or a later one) is in place.
    pub fn wait_rebuilt(&self, ticket: u64, timeout: Duration) -> bool {
        let rebuilds = self.rebuilds.lock().expect("rebuild lock");
        let (rebuilds, _) = self
            .rebuilt
            .wait_timeout_while(rebuilds, timeout, |r| r.1 < ticket)
            .expect("rebuild lock");
        rebuilds.1 >= ticket
    }

    /// Replays the log into a fresh engine and swaps it in, if a rebuild was asked for.
    fn rebuild_if_asked(&self, log: &dyn EventLog) -> Result<(), spoor_log::LogError> {
        let ticket = self.rebuilds.lock().expect("rebuild lock").0;
        if self.rebuilds.lock().expect("rebuild lock").1 >= ticket {
            return Ok(());
        }
        let fresh = LiveState::replay(log)?;
        let mut engine = self.engine.write().expect("engine lock");
        *engine = fresh.engine.into_inner().expect("engine lock");
        self.applied
            .store(fresh.applied.load(Ordering::Acquire), Ordering::Release);
        drop(engine);
        self.rebuilds.lock().expect("rebuild lock").1 = ticket;
        self.rebuilt.notify_all();
        tracing::info!(records = self.applied(), "state rebuilt from the log");
        Ok(())
    }

    /// Asks the follower to stop; it does within [`IDLE_WAIT`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Applies what the log holds beyond the applied position; returns how many records.
    fn catch_up(&self, log: &dyn EventLog) -> Result<usize, spoor_log::LogError> {
        let from = self.applied();
        let records = log.read(from, STEP)?;
        let decoded: Vec<Option<StoredRecord>> = records
            .iter()
            .map(|r| match serde_json::from_slice(&r.payload) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::error!(position = r.position, %error, "log record not readable; skipped");
                    self.undecodable.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
            .collect();
        let mut engine = self.engine.write().expect("engine lock");
        for record in decoded.iter().flatten() {
            engine.apply(record);
        }
        drop(engine);
        self.applied
            .store(from + records.len() as u64, Ordering::Release);
        Ok(records.len())
    }
}

/// Starts following `log` from its beginning: the state is rebuilt, then kept current.
pub fn follow(log: Arc<dyn EventLog>, state: Arc<LiveState>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spoor-engine".into())
        .spawn(move || {
            let mut caught_up = false;
            while !state.stop.load(Ordering::Acquire) {
                if let Err(error) = state.rebuild_if_asked(&*log) {
                    tracing::error!(%error, "rebuilding the state failed; retrying");
                    std::thread::sleep(IDLE_WAIT);
                    continue;
                }
                match state.catch_up(&*log) {
                    Ok(0) => {
                        if !caught_up {
                            caught_up = true;
                            tracing::info!(
                                records = state.applied(),
                                "state is current with the log"
                            );
                        }
                        log.wait_beyond(state.applied(), IDLE_WAIT);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(%error, "reading the log for the state failed; retrying");
                        std::thread::sleep(IDLE_WAIT);
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_log::{FileLog, FileLogConfig};
    use spoor_protocol::stored::RecordContent;
    use spoor_protocol::{Incoming, parse_request};

    fn stored(body: &str) -> Vec<u8> {
        let Incoming::Event(event) = parse_request(body.as_bytes(), 1_700_000_000_000).unwrap()
        else {
            panic!("an event")
        };
        let record = StoredRecord {
            received_at: 1_700_000_000_000,
            request_hash: "0".repeat(32),
            content: RecordContent::Event(event),
        };
        serde_json::to_vec(&record).unwrap()
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.applied() < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "the state did not catch up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(state.read().site("S").unwrap().counts().contacts, 5);
        assert_eq!(state.undecodable(), 1);
        state.stop();
        follower.join().unwrap();
    }
}
