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

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::producer::{FutureProducer, Producer};

use crate::LogError;

type Make<C> = Box<dyn Fn() -> Result<FutureProducer<C>, LogError> + Send + Sync>;

/// Which producer handed a record over: a failure replaces that one only.
pub(super) type Generation = u64;

pub(super) struct Producing<C: ClientContext + 'static> {
    /// Whose producer, for the log.
    what: String,
    make: Make<C>,
    current: RwLock<(FutureProducer<C>, Generation)>,
}

impl<C: ClientContext + 'static> Producing<C> {
    pub(super) fn new(what: String, make: Make<C>) -> Result<Self, LogError> {
        let current = RwLock::new((make()?, 0));
        Ok(Producing {
            what,
            make,
            current,
        })
    }

    /// The producer to hand records to, and which it is: a new one first if this one hit
    /// a fatal error.
    pub(super) fn get(&self) -> (FutureProducer<C>, Generation) {
        let (producer, generation) = self.current().clone();
        if producer.client().fatal_error().is_some() {
            self.replace(generation, "it stopped for good");
            return self.current().clone();
        }
        (producer, generation)
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, (FutureProducer<C>, Generation)> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery of producer `generation` failed (for another reason than the record's
    /// size): it is replaced, unless that was done already.
    pub(super) fn failed(&self, generation: Generation) {
        self.replace(generation, "a delivery failed");
    }

    /// The producer's fatal error, if it hit one and could not be replaced.
    pub(super) fn fatal_error(&self) -> Option<String> {
        let (producer, _) = self.get();
        let fatal = producer.client().fatal_error();
        fatal.map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Flushes what the producer holds, for at most `timeout`.
    pub(super) fn flush(&self, timeout: Duration) {
        let _ = self.current().0.flush(timeout);
    }

    fn replace(&self, generation: Generation, why: &str) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.1 != generation {
            return;
        }
        let fresh = match (self.make)() {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(producer = self.what, %error, "a new Kafka producer could not be made");
                return;
            }
        };
        let old = std::mem::replace(&mut *current, (fresh, generation + 1));
        drop(current);
        tracing::warn!(
            producer = self.what,
            why,
            "the Kafka producer was replaced by a new one (a new producer id)"
        );
        // Dropping it purges what it holds and waits up to half a second for the
        // outcomes: on a thread of its own, not the caller's, which may be serving
        // requests (an append handing records to it at this moment drops it last).
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

    fn native(producer: &FutureProducer<DefaultClientContext>) -> usize {
        producer.client().native_ptr() as usize
    }

    #[test]
    fn a_producer_is_replaced_once_when_its_deliveries_fail() {
        let producing = producing();
        let (first, generation) = producing.get();
        assert_eq!(
            native(&producing.get().0),
            native(&first),
            "kept while it works"
        );
        producing.failed(generation);
        let (second, next) = producing.get();
        assert_ne!(native(&second), native(&first), "replaced");
        assert_eq!(next, generation + 1);
        // The other records the first one held fail too: the second one stays.
        producing.failed(generation);
        assert_eq!(native(&producing.get().0), native(&second));
        assert!(producing.fatal_error().is_none());
    }
}
