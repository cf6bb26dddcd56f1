//! A [`SharedTable`] on a compacted Kafka topic: each key's latest record is its value,
//! a record without payload (a tombstone) removes it. Every node reads the topic from its
//! start and follows it, so all hold the same table once they have read the same records.

use std::time::Duration;

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{BROKER_TIMEOUT, PARTITION, config_error, unavailable, wait_for};
use crate::{KafkaConfig, LogError, SharedTable, TableChange, TableFollower};

pub struct KafkaTable {
    config: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaTable {
    /// Connects to the brokers; creates the settings topic when it does not exist.
    pub fn open(config: &KafkaConfig) -> Result<KafkaTable, LogError> {
        let mut client = config.client_config(&[("message.timeout.ms", "10000")])?;
        client.set("acks", "all").set("enable.idempotence", "true");
        let producer: FutureProducer = client
            .create()
            .map_err(|e| config_error("settings producer", e))?;
        ensure_compacted_topic(config)?;
        Ok(KafkaTable {
            config: config.clone(),
            producer,
        })
    }

    fn settings_topic(&self) -> &str {
        &self.config.settings_topic
    }
}

impl SharedTable for KafkaTable {
    fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError> {
        let mut record = FutureRecord::<str, [u8]>::to(self.settings_topic())
            .partition(PARTITION)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(error, _)| unavailable("handing a setting to the producer", error))?;
        match wait_for(delivery)? {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(unavailable(
                &format!("storing a setting in topic {}", self.settings_topic()),
                error,
            )),
            Err(_) => Err(LogError::Closed),
        }
    }

    fn follow(&self) -> Result<Box<dyn TableFollower>, LogError> {
        let consumer: BaseConsumer = self
            .config
            .client_config(&[("fetch.wait.max.ms", "100"), ("group.id", "spoor-reader")])?
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| config_error("settings consumer", e))?;
        let (_, end) = consumer
            .fetch_watermarks(self.settings_topic(), PARTITION, BROKER_TIMEOUT)
            .map_err(|e| unavailable(&format!("the end of topic {}", self.settings_topic()), e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(self.settings_topic(), PARTITION, Offset::Beginning)
            .map_err(|e| {
                LogError::Config(format!("reading topic {}: {e}", self.settings_topic()))
            })?;
        consumer
            .assign(&assignment)
            .map_err(|e| unavailable(&format!("reading topic {}", self.settings_topic()), e))?;
        Ok(Box::new(KafkaTableFollower {
            consumer,
            next: 0,
            end_at_start: end.max(0),
        }))
    }

    fn describe(&self) -> String {
        format!(
            "Kafka topic {} at {}",
            self.config.settings_topic, self.config.brokers
        )
    }
}

struct KafkaTableFollower {
    consumer: BaseConsumer,
    /// The offset after the last record read (compaction leaves gaps: any offset at or
    /// past it is new).
    next: i64,
    end_at_start: i64,
}

impl TableFollower for KafkaTableFollower {
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<TableChange>, LogError> {
        let mut changes = Vec::new();
        let mut timeout = wait;
        while let Some(message) = self.consumer.poll(timeout) {
            let message = message.map_err(|e| unavailable("reading the settings topic", e))?;
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

    fn caught_up(&self) -> bool {
        self.next >= self.end_at_start
    }
}

/// Creates the settings topic, compacted, when the broker does not have it; refuses one
/// that would delete the settings after a time.
fn ensure_compacted_topic(config: &KafkaConfig) -> Result<(), LogError> {
    let topic = config.settings_topic.as_str();
    let admin: AdminClient<DefaultClientContext> = config
        .client_config(&[])?
        .create()
        .map_err(|e| config_error("admin client", e))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .map_err(|e| unavailable("the brokers' metadata", e))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    if exists {
        return check_kept(&admin, &options, topic);
    }
    // Compaction keeps each key's latest value for ever: the settings, not their history.
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    let created = wait_for(admin.create_topics([&new_topic], &options))?;
    match created
        .map_err(|e| unavailable("creating the settings topic", e))?
        .pop()
    {
        Some(Ok(_)) | None => {
            tracing::info!(topic, "Kafka settings topic created");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
        Some(Err((name, code))) => Err(LogError::Unavailable(format!(
            "creating topic {name}: {code}"
        ))),
    }
}

/// Refuses a settings topic that deletes records after a time without compaction: the
/// sites (and their keys) would vanish from every node started afterwards.
fn check_kept(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
) -> Result<(), LogError> {
    let described = wait_for(admin.describe_configs([&ResourceSpecifier::Topic(topic)], options))?;
    let Ok(Some(Ok(resource))) = described.map(|mut all| all.pop()) else {
        tracing::warn!(
            topic,
            "the broker did not say the settings topic's policy: make sure it is compacted"
        );
        return Ok(());
    };
    let setting = |name: &str| resource.get(name).and_then(|entry| entry.value.clone());
    let compacted = setting("cleanup.policy").is_some_and(|p| p.contains("compact"));
    let retention = setting("retention.ms").unwrap_or_else(|| "-1".into());
    if !compacted && retention.trim() != "-1" {
        return Err(LogError::Config(format!(
            "settings topic {topic} deletes records after retention.ms={retention} and is not \
             compacted: the sites' settings would be lost; set cleanup.policy=compact on it"
        )));
    }
    Ok(())
}
