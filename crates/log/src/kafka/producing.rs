//! A producer replaced by a new one (a new producer id) as soon as one of its deliveries
//! fails, or it hits a fatal error.
//!
//! After a failed delivery librdkafka's idempotent producer bumps its epoch on its own and
//! sends what it still holds under the new one. A broker that does not know that epoch
//! refuses the producer for good: Tansu 0.6, restarted after a kill, panicked on it and
//! dropped every connection from then on. A new producer starts from an id the broker
//! hands out, which any Kafka-protocol broker knows. Every record the old one held was,
//! or is, answered as failed (503: the client retries), so replacing it loses nothing
//! acknowledged; one the broker stored after all comes again as a client's retry, which
//! the duplicate window takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};

use crate::LogError;

/// The least time between two replacements: a failure that comes back at once (a topic
/// the producer may not write to) makes a new producer this often at most, not on every
/// request.
const REPLACE_EVERY: Duration = Duration::from_secs(5);

type Make<C> = Box<dyn Fn() -> Result<FutureProducer<C>, LogError> + Send + Sync>;

/// Which producer handed a record over: a failure replaces that one only.
pub(super) type Generation = u64;

struct Current<C: ClientContext + 'static> {
    producer: FutureProducer<C>,
    generation: Generation,
    made_at: Instant,
}

pub(super) struct Producing<C: ClientContext + 'static> {
    /// Whose producer, for the log.
    what: String,
    make: Make<C>,
    current: RwLock<Current<C>>,
    /// A delivery of the current producer failed sooner than [`REPLACE_EVERY`] after it
    /// was made: it is replaced once that time has passed.
    replace_due: AtomicBool,
}

impl<C: ClientContext + 'static> Producing<C> {
    pub(super) fn new(what: String, make: Make<C>) -> Result<Self, LogError> {
        let current = RwLock::new(Current {
            producer: make()?,
            generation: 0,
            made_at: Instant::now(),
        });
        Ok(Producing {
            what,
            make,
            current,
            replace_due: AtomicBool::new(false),
        })
    }

    /// Hands records to the producer through `hand_over`, which learns which producer it
    /// is (for [`Producing::failed`]); a new one first if this one is to be replaced. It
    /// is not replaced meanwhile, so a producer is never dropped on a caller's thread.
    pub(super) fn with<R>(&self, hand_over: impl FnOnce(&FutureProducer<C>, Generation) -> R) -> R {
        let (generation, due) = {
            let current = self.current();
            let fatal = current.producer.client().fatal_error().is_some();
            let pending = self.replace_due.load(Ordering::Acquire)
                && current.made_at.elapsed() >= REPLACE_EVERY;
            (current.generation, fatal || pending)
        };
        if due {
            self.replace(generation, "a delivery failed, or it stopped for good");
        }
        let current = self.current();
        hand_over(&current.producer, current.generation)
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current<C>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery of producer `generation` failed (for another reason than the record's
    /// size): it is replaced, now or once [`REPLACE_EVERY`] has passed since it was made,
    /// unless that was done already.
    pub(super) fn failed(&self, generation: Generation) {
        let made_at = {
            let current = self.current();
            if current.generation != generation {
                return;
            }
            current.made_at
        };
        if made_at.elapsed() >= REPLACE_EVERY {
            self.replace(generation, "a delivery failed");
        } else {
            self.replace_due.store(true, Ordering::Release);
        }
    }

    /// The producer's fatal error, if it hit one (it is replaced at the next hand-over).
    pub(super) fn fatal_error(&self) -> Option<String> {
        let fatal = self.current().producer.client().fatal_error();
        fatal.map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Flushes what the producer holds, for at most `timeout`.
    pub(super) fn flush(&self, timeout: Duration) {
        let _ = self.current().producer.flush(timeout);
    }

    fn replace(&self, generation: Generation, why: &str) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            return;
        }
        // What it holds is failed at once, before its retries (under an epoch it may have
        // bumped) can reach a broker.
        current
            .producer
            .purge(PurgeConfig::default().queue().inflight());
        let fresh = match (self.make)() {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(producer = self.what, %error, "a new Kafka producer could not be made");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *current,
            Current {
                producer: fresh,
                generation: generation + 1,
                made_at: Instant::now(),
            },
        );
        self.replace_due.store(false, Ordering::Release);
        drop(current);
        tracing::warn!(
            producer = self.what,
            why,
            "the Kafka producer was replaced by a new one (a new producer id)"
        );
        // Dropping it waits up to half a second for the purged records' outcomes: on a
        // thread of its own, not the caller's, which may be serving requests.
        let retired = std::thread::Builder::new()
            .name("spoor-kafka-retire".into())
            .spawn(move || drop(old));
        if let Err(error) = retired {
            tracing::warn!(%error, "no thread to retire the old Kafka producer on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;

    fn producing() -> Producing<DefaultClientContext> {
        Producing::new(
            "test".into(),
            Box::new(|| {
                // Nothing listens there: made without connecting.
                ClientConfig::new()
                    .set("bootstrap.servers", "127.0.0.1:9")
                    .set("enable.idempotence", "true")
                    .create()
                    .map_err(|e| LogError::Config(e.to_string()))
            }),
        )
        .unwrap()
    }

    /// Which librdkafka client hands records over now, and its generation.
    fn handing(producing: &Producing<DefaultClientContext>) -> (usize, Generation) {
        producing.with(|producer, generation| (producer.client().native_ptr() as usize, generation))
    }

    fn made_long_ago(producing: &Producing<DefaultClientContext>) {
        let mut current = producing.current.write().unwrap();
        current.made_at = Instant::now() - REPLACE_EVERY;
    }

    #[test]
    fn a_producer_is_replaced_once_when_its_deliveries_fail() {
        let producing = producing();
        made_long_ago(&producing);
        let (first, generation) = handing(&producing);
        assert_eq!(
            handing(&producing),
            (first, generation),
            "kept while it works"
        );
        producing.failed(generation);
        let (second, next) = handing(&producing);
        assert_ne!(second, first, "replaced");
        assert_eq!(next, generation + 1);
        // The other records the first one held fail too: the second one stays.
        made_long_ago(&producing);
        producing.failed(generation);
        assert_eq!(handing(&producing), (second, next));
        assert!(producing.fatal_error().is_none());
    }

    #[test]
    fn a_failure_soon_after_a_replacement_waits_for_the_next_hand_over_after_the_pause() {
        let producing = producing();
        let (first, generation) = handing(&producing);
        producing.failed(generation);
        assert_eq!(handing(&producing).0, first, "made a moment ago: not yet");
        made_long_ago(&producing);
        let (second, next) = handing(&producing);
        assert_ne!(second, first, "replaced at the next hand-over");
        assert_eq!(next, generation + 1);
    }
}
