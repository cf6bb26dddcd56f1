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

/// The least time between two replacements (or tries): a failure that comes back at once
/// (a topic the producer may not write to, a broker that refuses idempotence) makes a new
/// producer this often at most, not on every request.
const REPLACE_EVERY: Duration = Duration::from_secs(5);

type Make<C> = Box<dyn Fn() -> Result<FutureProducer<C>, LogError> + Send + Sync>;

/// Which producer handed a record over: a failure replaces that one only.
pub(super) type Generation = u64;

struct Current<C: ClientContext + 'static> {
    producer: FutureProducer<C>,
    generation: Generation,
    /// When it was made, or a replacement of it last failed.
    tried_at: Instant,
    /// A delivery of it failed sooner than [`REPLACE_EVERY`] after `tried_at`: it takes
    /// no more records and is replaced once that time has passed.
    replace_due: AtomicBool,
}

impl<C: ClientContext + 'static> Current<C> {
    fn to_replace(&self) -> bool {
        self.replace_due.load(Ordering::Acquire) || self.producer.client().fatal_error().is_some()
    }
}

pub(super) struct Producing<C: ClientContext + 'static> {
    /// Whose producer, for the log.
    what: String,
    make: Make<C>,
    current: RwLock<Current<C>>,
}

impl<C: ClientContext + 'static> Producing<C> {
    pub(super) fn new(what: String, make: Make<C>) -> Result<Self, LogError> {
        let current = RwLock::new(Current {
            producer: make()?,
            generation: 0,
            tried_at: Instant::now(),
            replace_due: AtomicBool::new(false),
        });
        Ok(Producing {
            what,
            make,
            current,
        })
    }

    /// Hands records to the producer through `hand_over`, which learns which producer it
    /// is (for [`Producing::failed`]); a new one first if this one is to be replaced.
    /// While one waits to be replaced, nothing is handed to it: its epoch may be one the
    /// broker does not know. It is not replaced meanwhile, so a producer is never dropped
    /// on a caller's thread.
    pub(super) fn with<R>(
        &self,
        hand_over: impl FnOnce(&FutureProducer<C>, Generation) -> R,
    ) -> Result<R, LogError> {
        self.replace_if_due();
        let current = self.current();
        if current.to_replace() {
            return Err(LogError::Unavailable(format!(
                "the Kafka producer of {} failed and is replaced within {} s",
                self.what,
                REPLACE_EVERY.as_secs()
            )));
        }
        Ok(hand_over(&current.producer, current.generation))
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current<C>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the producer if it is to be and [`REPLACE_EVERY`] has passed since it was
    /// made or last tried.
    fn replace_if_due(&self) {
        let generation = {
            let current = self.current();
            if !current.to_replace() || current.tried_at.elapsed() < REPLACE_EVERY {
                return;
            }
            current.generation
        };
        self.replace(generation, "a delivery failed, or it stopped for good");
    }

    /// A delivery of producer `generation` failed (for another reason than the record's
    /// size): it is replaced, now or once [`REPLACE_EVERY`] has passed since it was made,
    /// unless that was done already.
    pub(super) fn failed(&self, generation: Generation) {
        {
            let current = self.current();
            if current.generation != generation {
                return;
            }
            // Marked under the guard: a replacement meanwhile takes the mark with it.
            current.replace_due.store(true, Ordering::Release);
        }
        self.replace_if_due();
    }

    /// The producer's fatal error, if it hit one and was not replaced yet (a new one is
    /// tried every [`REPLACE_EVERY`], also from here: a node that takes no appends still
    /// recovers).
    pub(super) fn fatal_error(&self) -> Option<String> {
        self.replace_if_due();
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
                current.tried_at = Instant::now();
                current.replace_due.store(true, Ordering::Release);
                tracing::error!(producer = self.what, %error, "a new Kafka producer could not be made; tried again in a few seconds");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *current,
            Current {
                producer: fresh,
                generation: generation + 1,
                tried_at: Instant::now(),
                replace_due: AtomicBool::new(false),
            },
        );
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
        producing
            .with(|producer, generation| (producer.client().native_ptr() as usize, generation))
            .unwrap()
    }

    fn made_long_ago(producing: &Producing<DefaultClientContext>) {
        let mut current = producing.current.write().unwrap();
        current.tried_at = Instant::now() - REPLACE_EVERY;
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
        let refused = producing.with(|_, _| ()).unwrap_err();
        assert!(
            refused.to_string().contains("replaced within 5 s"),
            "made a moment ago: not replaced yet, and handed nothing: {refused}"
        );
        made_long_ago(&producing);
        let (second, next) = handing(&producing);
        assert_ne!(second, first, "replaced at the next hand-over");
        assert_eq!(next, generation + 1);
    }
}
