//! A [`SharedTable`] on a compacted Kafka topic: each key's latest record is its value,
//! a record without payload (a tombstone) removes it. Every node reads the topic from its
//! start and follows it, so all hold the same table once they have read the same records.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::producing::Producing;
use super::{BROKER_TIMEOUT, PARTITION, config_error, ensure, topic_settings, unavailable};
use crate::{KafkaConfig, LogError, PutFuture, SharedTable, TableChange, TableFollower, block_on};

pub struct KafkaTable {
    config: KafkaConfig,
    topic: String,
    producer: Arc<Producing<DefaultClientContext>>,
}

/// What a table holds, for its topic's creation and messages.
#[derive(Debug, Clone, Copy)]
pub enum TableKind {
    Settings,
    Keys,
}

impl TableKind {
    fn what(self) -> &'static str {
        match self {
            TableKind::Settings => "settings",
            TableKind::Keys => "keys",
        }
    }
}

impl KafkaTable {
    /// Connects to the brokers; creates the table's topic when it does not exist.
    pub fn open(config: &KafkaConfig, kind: TableKind) -> Result<KafkaTable, LogError> {
        let mut client = config.client_config(&[("message.timeout.ms", "10000")])?;
        client.set("acks", "all").set("enable.idempotence", "true");
        let topic = match kind {
            TableKind::Settings => config.settings_topic.clone(),
            TableKind::Keys => config.keys_topic.clone(),
        };
        let producer = Producing::new(
            format!("topic {topic}"),
            Box::new(move || {
                (client.create()).map_err(|e| config_error(&format!("{} producer", kind.what()), e))
            }),
        )?;
        ensure_compacted_topic(config, &topic, kind)?;
        Ok(KafkaTable {
            config: config.clone(),
            topic,
            producer: Arc::new(producer),
        })
    }

    fn send(
        &self,
        producer: &FutureProducer,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<DeliveryFuture, LogError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .partition(PARTITION)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer
            .send_result(record)
            .map_err(|(error, _)| unavailable("handing a table entry to the producer", error))
    }
}

impl SharedTable for KafkaTable {
    fn health(&self) -> Result<(), LogError> {
        // An idempotent producer that hit a fatal error refuses every write from then on,
        // until it is replaced (asking tries that too).
        match self.producer.fatal_error() {
            Some(fatal) => Err(LogError::Unavailable(format!(
                "the producer of topic {} stopped for good ({fatal}); a new one is being made",
                self.topic
            ))),
            None => Ok(()),
        }
    }

    fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError> {
        block_on(self.put_all_later(&[(key, value)]))
    }

    /// Every entry handed to the producer at once (its batching takes them with the
    /// entries of other callers), then each acknowledgement awaited.
    fn put_all_later(&self, entries: &[(&str, Option<&[u8]>)]) -> PutFuture {
        let handed = self.producer.with(|producer, generation| {
            let mut deliveries = Vec::with_capacity(entries.len());
            let mut refused = None;
            for (key, value) in entries {
                match self.send(producer, key, *value) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(error) => {
                        refused = Some(error);
                        break;
                    }
                }
            }
            (deliveries, refused, generation)
        });
        let (deliveries, refused, generation) = match handed {
            Ok(handed) => handed,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let (topic, producing) = (self.topic.clone(), self.producer.clone());
        // Every entry handed over is waited for, also when a later one was refused: the
        // caller learns of a failure only once nothing it sent is still on its way.
        Box::pin(async move {
            let mut outcome = refused.map_or(Ok(()), Err);
            for delivery in deliveries {
                let delivered = match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => {
                        let too_large = matches!(
                            error.rdkafka_error_code(),
                            Some(
                                RDKafkaErrorCode::MessageSizeTooLarge
                                    | RDKafkaErrorCode::MessageBatchTooLarge
                            )
                        );
                        if !too_large {
                            producing.failed(generation);
                        }
                        Err(unavailable(
                            &format!("storing an entry in topic {topic}"),
                            error,
                        ))
                    }
                    Err(_) => Err(LogError::Closed),
                };
                if outcome.is_ok() {
                    outcome = delivered;
                }
            }
            outcome
        })
    }

    fn follow(&self) -> Result<Box<dyn TableFollower>, LogError> {
        let consumer: BaseConsumer = self
            .config
            .client_config(&[("fetch.wait.max.ms", "100"), ("group.id", "spoor-reader")])?
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| config_error("table consumer", e))?;
        let (_, end) = consumer
            .fetch_watermarks(&self.topic, PARTITION, BROKER_TIMEOUT)
            .map_err(|e| unavailable(&format!("the end of topic {}", &self.topic), e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, PARTITION, Offset::Beginning)
            .map_err(|e| LogError::Config(format!("reading topic {}: {e}", &self.topic)))?;
        consumer
            .assign(&assignment)
            .map_err(|e| unavailable(&format!("reading topic {}", &self.topic), e))?;
        Ok(Box::new(KafkaTableFollower {
            consumer,
            topic: self.topic.clone(),
            next: 0,
            end_at_start: end.max(0),
            reached_end: false,
        }))
    }

    fn describe(&self) -> String {
        format!("Kafka topic {} at {}", self.topic, self.config.brokers)
    }
}

struct KafkaTableFollower {
    consumer: BaseConsumer,
    topic: String,
    /// The offset after the last record read (compaction leaves gaps: any offset at or
    /// past it is new).
    next: i64,
    end_at_start: i64,
    /// The consumer said it reached the partition's end: the last offsets may be gone
    /// to compaction, so `next` alone may never reach `end_at_start`.
    reached_end: bool,
}

impl TableFollower for KafkaTableFollower {
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<TableChange>, LogError> {
        let mut changes = Vec::new();
        let mut timeout = wait;
        while let Some(message) = self.consumer.poll(timeout) {
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => {
                    self.reached_end = true;
                    continue;
                }
                // What was read is returned (the position moved past it); the error,
                // if it lasts, comes back at the next call.
                Err(_) if !changes.is_empty() => break,
                Err(error) => return Err(unavailable("reading a table's topic", error)),
            };
            timeout = Duration::ZERO;
            if message.offset() < self.next {
                continue;
            }
            self.next = message.offset() + 1;
            let Some(key) = message.key() else { continue };
            changes.push(TableChange {
                key: String::from_utf8_lossy(key).into_owned(),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
        Ok(changes)
    }

    /// Reads until the offset that was the end when called. Not on the consumer's
    /// end-of-partition signal, which may be one queued before the last writes (a key
    /// missed then would be taken for deleted): a topic's last record is in its active
    /// segment, which compaction never touches, so that offset always comes. Gives up
    /// when nothing arrives for the brokers' timeout, however long the whole read is.
    fn read_to_end(&mut self) -> Result<Vec<TableChange>, LogError> {
        let topic = self.topic.clone();
        let (_, end) = self
            .consumer
            .fetch_watermarks(&topic, PARTITION, BROKER_TIMEOUT)
            .map_err(|e| unavailable(&format!("the end of topic {topic}"), e))?;
        let mut changes = Vec::new();
        let mut last_progress = std::time::Instant::now();
        while self.next < end {
            let before = self.next;
            changes.extend(self.next_changes(Duration::from_millis(100))?);
            if self.next > before {
                last_progress = std::time::Instant::now();
            } else if last_progress.elapsed() > BROKER_TIMEOUT {
                return Err(LogError::Unavailable(format!(
                    "topic {topic} stopped short of its end (offset {}, end {end}) for {BROKER_TIMEOUT:?}",
                    self.next
                )));
            }
        }
        Ok(changes)
    }

    fn caught_up(&self) -> bool {
        self.reached_end || self.next >= self.end_at_start
    }
}

/// Creates a table's topic, compacted, when the broker does not have it; refuses one
/// that would delete entries after a time.
fn ensure_compacted_topic(
    config: &KafkaConfig,
    name: &str,
    kind: TableKind,
) -> Result<(), LogError> {
    // Compaction keeps each key's latest value for ever: the table, not its history.
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    if let TableKind::Keys = kind {
        // A deleted key's bytes stay in the topic until its segment is compacted: a
        // segment rolled every hour, compacted as soon as a little of it is stale, and
        // tombstones kept a day (for nodes that were away) bound how long.
        topic = topic
            .set("segment.ms", "3600000")
            .set("min.cleanable.dirty.ratio", "0.01")
            .set("delete.retention.ms", "86400000");
    }
    ensure(config, &topic, check_kept)
}

/// Refuses a table's topic that is not compacted, or deletes records after a time: the
/// sites' settings, or the keys records are sealed with, would vanish from every node
/// started afterwards.
fn check_kept(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
) -> Result<(), LogError> {
    let Some(settings) = topic_settings(admin, options, topic)? else {
        tracing::warn!(
            topic,
            "the broker did not say the topic's policy: make sure it is compacted"
        );
        return Ok(());
    };
    let setting = |name: &str| settings.get(name).cloned();
    let Some(policy) = setting("cleanup.policy") else {
        tracing::warn!(
            topic,
            "the broker did not say the topic's cleanup.policy: make sure it is compact"
        );
        return Ok(());
    };
    if !policy.contains("compact") {
        return Err(LogError::Config(format!(
            "topic {topic} has cleanup.policy={policy}: set cleanup.policy=compact on it \
             (each entry's latest value kept for ever)"
        )));
    }
    // With `compact,delete`, a retention would delete a site's settings left unchanged.
    for name in ["retention.ms", "retention.bytes"] {
        match setting(name) {
            Some(value) if policy.contains("delete") && value.trim() != "-1" => {
                return Err(LogError::Config(format!(
                    "topic {topic} has cleanup.policy={policy} and {name}={value}: entries \
                     left unchanged that long would be deleted; set {name}=-1 or \
                     cleanup.policy=compact"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
