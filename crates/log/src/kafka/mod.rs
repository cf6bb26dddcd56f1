//! The log on a Kafka-protocol broker (Apache Kafka, Redpanda, a managed Kafka, Tansu),
//! through librdkafka.
//!
//! Records go to partition 0 of one topic, so that a record's position is its offset
//! there and every reader sees one order. The producer is idempotent with `acks=all`: an
//! append is answered once every in-sync replica has the records, and a retry inside the
//! client never writes a record twice. A broker that cannot be reached fails appends with
//! [`LogError::Unavailable`] (at once while the client knows every broker is down, else
//! once `message.timeout.ms` passes), never with a position.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

mod producing;
mod table;
pub use table::{KafkaTable, TableKind};

use producing::Producing;

use crate::{
    AppendFuture, EventLog, KafkaConfig, Keyed, LogError, LogReader, MAX_RECORD_BYTES, Position,
    Record,
};

/// The partition every record goes to.
const PARTITION: i32 = 0;
/// How often the topic's end is asked of the broker (it moves with other nodes' appends).
const END_POLL: Duration = Duration::from_millis(500);
/// How long a question to the broker (the topic's end, its metadata) may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reader waits for records the topic is known to hold before it says the
/// broker is unavailable.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The properties spoor sets itself: what makes an acknowledged append durable and
/// ordered, what keeps a topic from being created with the broker's defaults (which
/// delete records after a week), and what the readers rely on. Setting them is refused.
const RESERVED: [&str; 9] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "enable.idempotence",
    "transactional.id",
    "allow.auto.create.topics",
    "enable.auto.commit",
    "enable.partition.eof",
    "auto.offset.reset",
];
/// The largest message the producer sends and the topic spoor creates takes: a record
/// at the log's limit, with a mebibyte of room for the message's own framing.
fn max_message_bytes() -> String {
    (MAX_RECORD_BYTES + (1 << 20)).to_string()
}

/// A client that could not be made, said without the value of any property: librdkafka's
/// own message quotes it, and it may be a secret.
fn config_error(client: &str, error: KafkaError) -> LogError {
    match error {
        // librdkafka's description quotes the value, in forms a search cannot always
        // find (trimmed, one token of a list): only the key and the kind of fault.
        KafkaError::ClientConfig(fault, _, key, _) => {
            let fault = match fault {
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => "no such property",
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID => {
                    "its value is not valid (see librdkafka's CONFIGURATION.md)"
                }
                _ => "refused",
            };
            LogError::Config(format!("the Kafka {client}: property {key}: {fault}"))
        }
        other => LogError::Config(format!("the Kafka {client}: {other}")),
    }
}

impl KafkaConfig {
    /// The client's settings: `defaults` (which the properties may change), then the
    /// properties passed through.
    fn client_config(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig, LogError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "spoor")
            .set("allow.auto.create.topics", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            if RESERVED.contains(&key.as_str()) {
                return Err(LogError::Config(format!(
                    "the Kafka property {key} is set by spoor and cannot be changed \
                     (--kafka-brokers sets bootstrap.servers)"
                )));
            }
            let timeout = ["message.timeout.ms", "delivery.timeout.ms"].contains(&key.as_str());
            if timeout && value.trim().parse::<u64>() == Ok(0) {
                return Err(LogError::Config(format!(
                    "{key}=0 would let an append wait for ever: give a limit"
                )));
            }
            config.set(key, value);
        }
        Ok(config)
    }
}

/// What the clients' callbacks and the end poller share.
#[derive(Default)]
struct Reach {
    /// The topic's end as last seen: the broker's high watermark, or past this node's
    /// own last acknowledged append.
    end: AtomicU64,
    unreachable: AtomicBool,
    why: Mutex<String>,
    stop: AtomicBool,
    /// When an append's refusal was last logged: each is answered to its client, and
    /// the log says so at most once in [`REFUSALS_LOGGED_EVERY`].
    refusal_logged: Mutex<Option<Instant>>,
}

/// How often a refused append is logged at the most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

impl Reach {
    fn fail(&self, why: String) {
        *self.why.lock().unwrap_or_else(PoisonError::into_inner) = why;
        if !self.unreachable.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "the Kafka brokers cannot be reached: appends are refused (503) until they can"
            );
        }
    }

    fn reached(&self) {
        if self.unreachable.swap(false, Ordering::AcqRel) {
            tracing::info!("the Kafka brokers are reached again: appends are taken");
        }
    }

    fn unavailable(&self) -> Option<LogError> {
        self.unreachable.load(Ordering::Acquire).then(|| {
            LogError::Unavailable(
                self.why
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )
        })
    }

    fn warn_refused(&self, error: &LogError) {
        let mut logged = (self.refusal_logged.lock()).unwrap_or_else(PoisonError::into_inner);
        if logged.is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(%error, "the Kafka log refused an append (said once in 10 s at most)");
        }
    }

    fn saw_end(&self, end: Position) {
        self.end.fetch_max(end, Ordering::AcqRel);
    }
}

/// Tells [`Reach`] at once when the producer or the end poller finds every broker down.
/// A reader's client only says so in the log: one being closed (a scan's end) reports
/// its brokers down, which says nothing of whether appends can be taken.
#[derive(Clone)]
struct Watch {
    reach: Arc<Reach>,
    marks_reach: bool,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let all_down = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if all_down && self.marks_reach {
            self.reach.fail(format!("all brokers are down: {reason}"));
        } else {
            tracing::warn!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Watch {}

fn unavailable(context: &str, error: KafkaError) -> LogError {
    LogError::Unavailable(format!("{context}: {error}"))
}

/// Why the producer refused a record of `len` bytes: too large for the broker is the
/// record's fault (413), anything else the log's (503).
fn refused(context: &str, error: KafkaError, len: usize) -> LogError {
    let too_large = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    );
    if too_large {
        LogError::RecordTooLarge(len)
    } else {
        unavailable(context, error)
    }
}

/// The log on a Kafka-protocol topic.
pub struct KafkaLog {
    config: KafkaConfig,
    producer: Option<Arc<Producing<Watch>>>,
    /// Held while a batch's records are handed to the producer, so that they are
    /// contiguous in the partition (the idempotent producer keeps its own order).
    enqueue: Mutex<()>,
    reach: Arc<Reach>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl KafkaLog {
    /// Connects to the brokers for appending and reading; creates the topic when it does
    /// not exist (one partition, the broker's replication factor, kept for ever).
    pub fn open(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        let reach = Arc::new(Reach::default());
        // Fail an append that cannot reach a broker within seconds, not minutes: the
        // client is answered 503 and retries.
        let mut client = config.client_config(&[
            ("message.timeout.ms", "10000"),
            ("message.max.bytes", &max_message_bytes()),
        ])?;
        client.set("acks", "all").set("enable.idempotence", "true");
        let watch = Watch {
            reach: reach.clone(),
            marks_reach: true,
        };
        let producer = Producing::new(
            format!("topic {}", config.topic),
            Box::new(move || {
                (client.create_with_context(watch.clone())).map_err(|e| config_error("producer", e))
            }),
        )?;
        ensure_topic(&config)?;
        KafkaLog::start(config, Some(Arc::new(producer)), reach)
    }

    /// Connects to the brokers for reading only.
    pub fn open_read_only(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        KafkaLog::start(config, None, Arc::new(Reach::default()))
    }

    fn start(
        config: KafkaConfig,
        producer: Option<Arc<Producing<Watch>>>,
        reach: Arc<Reach>,
    ) -> Result<KafkaLog, LogError> {
        let watcher = consumer(&config, &reach, true)?;
        let (low, high) = watcher
            .fetch_watermarks(&config.topic, PARTITION, BROKER_TIMEOUT)
            .map_err(|e| unavailable(&format!("the end of topic {}", config.topic), e))?;
        if low > 0 {
            return Err(LogError::Missing(format!(
                "topic {} starts at offset {low}: its first records were deleted (a \
                 retention?), so no state can be rebuilt from it",
                config.topic
            )));
        }
        reach.saw_end(high.max(0) as u64);
        let poller = {
            let (reach, topic) = (reach.clone(), config.topic.clone());
            std::thread::Builder::new()
                .name("spoor-kafka-end".into())
                .spawn(move || poll_end(&watcher, &topic, &reach))
                .map_err(|e| LogError::io("start the Kafka end poller", e))?
        };
        Ok(KafkaLog {
            config,
            producer,
            enqueue: Mutex::new(()),
            reach,
            poller: Some(poller),
        })
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        self.reach.stop.store(true, Ordering::Release);
        if let Some(producer) = &self.producer {
            // Every append was answered only once acknowledged; this sends nothing new.
            producer.flush(BROKER_TIMEOUT);
        }
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

/// Asks the broker for the topic's end until stopped; marks the brokers reached or not.
fn poll_end(watcher: &BaseConsumer<Watch>, topic: &str, reach: &Reach) {
    while !reach.stop.load(Ordering::Acquire) {
        match watcher.fetch_watermarks(topic, PARTITION, BROKER_TIMEOUT) {
            Ok((_, high)) => {
                reach.saw_end(high.max(0) as u64);
                reach.reached();
            }
            Err(error) => reach.fail(format!("asking the end of topic {topic}: {error}")),
        }
        std::thread::sleep(END_POLL);
    }
}

/// A consumer; `marks_reach` for the end poller's, whose trouble is the log's.
fn consumer(
    config: &KafkaConfig,
    reach: &Arc<Reach>,
    marks_reach: bool,
) -> Result<BaseConsumer<Watch>, LogError> {
    // librdkafka's consumer needs a group to assign partitions; it never joins it (no
    // subscription) and commits nothing: positions live in spoor's snapshots. A cluster
    // with ACLs may want its own name for it.
    let mut client =
        config.client_config(&[("fetch.wait.max.ms", "100"), ("group.id", "spoor-reader")])?;
    client
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // A position the topic no longer holds is an error, never a silent skip to
        // whatever is left.
        .set("auto.offset.reset", "error");
    client
        .create_with_context(Watch {
            reach: reach.clone(),
            marks_reach,
        })
        .map_err(|e| config_error("consumer", e))
}

/// Waits for an admin operation's future on a thread of its own: librdkafka's thread
/// resolves it, and `open` may run inside a runtime, where blocking on it would panic.
fn wait_for<T: Send>(
    operation: impl std::future::Future<Output = T> + Send,
) -> Result<T, LogError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| LogError::io("start a runtime for the Kafka admin client", e))
                    .map(|runtime| runtime.block_on(operation))
            })
            .join()
            .unwrap_or(Err(LogError::Closed))
    })
}

/// Creates the topic when the broker does not have it; refuses one that deletes records.
fn ensure_topic(config: &KafkaConfig) -> Result<(), LogError> {
    let max_message = max_message_bytes();
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(-1))
        // The broker's default cleanup policy (delete, with retention off: nothing is
        // deleted); setting it explicitly made Tansu 0.6 delete records at once.
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1")
        .set("max.message.bytes", &max_message);
    ensure(config, &topic, check_retention)
}

/// A check of a topic that exists already (made by hand, or by another node meanwhile).
type CheckTopic =
    fn(&AdminClient<DefaultClientContext>, &AdminOptions, &str) -> Result<(), LogError>;

/// Creates `new_topic` when the broker does not have it; `check` judges one it has.
fn ensure(
    config: &KafkaConfig,
    new_topic: &NewTopic<'_>,
    check: CheckTopic,
) -> Result<(), LogError> {
    let topic = new_topic.name;
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
        return check(&admin, &options, topic);
    }
    let created = wait_for(admin.create_topics([new_topic], &options))?;
    match created
        .map_err(|e| unavailable(&format!("creating topic {topic}"), e))?
        .pop()
    {
        Some(Ok(_)) | None => {
            tracing::info!(topic, "Kafka topic created");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => check(&admin, &options, topic),
        Some(Err((name, code))) => Err(LogError::Unavailable(format!(
            "creating topic {name}: {code}"
        ))),
    }
}

/// A topic's settings as the broker describes them; `None` when it does not say.
fn topic_settings(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
) -> Result<Option<std::collections::HashMap<String, String>>, LogError> {
    let described = wait_for(admin.describe_configs([&ResourceSpecifier::Topic(topic)], options))?;
    let resource = match described.map(|mut all| all.pop()) {
        Ok(Some(Ok(resource))) => resource,
        other => {
            let why = match other {
                Err(error) => error.to_string(),
                Ok(Some(Err(code))) => code.to_string(),
                _ => "no answer".into(),
            };
            tracing::debug!(topic, %why, "the broker did not describe the topic");
            return Ok(None);
        }
    };
    let settings = (resource.entries.into_iter())
        .filter_map(|entry| Some((entry.name, entry.value?)))
        .collect();
    Ok(Some(settings))
}

/// Refuses a topic whose broker would delete records after a time or size: every record
/// is the source of truth, and a deleted one would be an acknowledged event lost. A
/// broker that cannot say is trusted, with a warning.
fn check_retention(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
) -> Result<(), LogError> {
    let Some(settings) = topic_settings(admin, options, topic)? else {
        tracing::warn!(
            topic,
            "the broker did not say the topic's retention: make sure it keeps records for ever (retention.ms=-1, retention.bytes=-1)"
        );
        return Ok(());
    };
    let setting = |name: &str| settings.get(name).cloned();
    for name in ["retention.ms", "retention.bytes"] {
        match setting(name) {
            Some(value) if value.trim() != "-1" => {
                return Err(LogError::Config(format!(
                    "topic {topic} has {name}={value}: the broker would delete events spoor \
                     acknowledged; set {name}=-1 on it (the topic is the source of truth)"
                )));
            }
            Some(_) => {}
            None => tracing::warn!(
                topic,
                setting = name,
                "the broker did not say this setting of the topic: make sure it is -1"
            ),
        }
    }
    // Compaction keeps only each key's latest record: every site's events but one.
    if let Some(policy) = setting("cleanup.policy").filter(|p| p.contains("compact")) {
        return Err(LogError::Config(format!(
            "topic {topic} has cleanup.policy={policy}: compaction would keep only the latest \
             event of each site; use a topic with cleanup.policy=delete and retention off"
        )));
    }
    Ok(())
}

impl EventLog for KafkaLog {
    fn append(&self, records: Vec<Vec<u8>>) -> AppendFuture {
        let keyed = records
            .into_iter()
            .map(|payload| Keyed { key: None, payload });
        self.append_keyed(keyed.collect())
    }

    fn append_keyed(&self, records: Vec<Keyed>) -> AppendFuture {
        let Some(producing) = self.producer.clone() else {
            return Box::pin(async { Err(LogError::ReadOnly) });
        };
        if let Some(big) = records.iter().find(|r| r.payload.len() > MAX_RECORD_BYTES) {
            let len = big.payload.len();
            return Box::pin(async move { Err(LogError::RecordTooLarge(len)) });
        }
        if let Some(error) = self.reach.unavailable() {
            return Box::pin(async move { Err(error) });
        }
        let handed = producing.with(|producer, generation| {
            let _contiguous = self.enqueue.lock().unwrap_or_else(PoisonError::into_inner);
            let deliveries = records
                .iter()
                .map(|Keyed { key, payload }| {
                    let mut record = FutureRecord::<str, _>::to(&self.config.topic)
                        .partition(PARTITION)
                        .payload(payload.as_slice());
                    if let Some(key) = key {
                        record = record.key(key.as_str());
                    }
                    (producer.send_result(record)).map_err(|(error, _)| {
                        refused("handing a record to the producer", error, payload.len())
                    })
                })
                // The records after one the producer refused are not handed to it.
                .scan(false, |refused, handed| {
                    (!*refused).then(|| {
                        *refused = handed.is_err();
                        handed
                    })
                })
                .collect::<Vec<_>>();
            (deliveries, generation)
        });
        let (deliveries, generation) = match handed {
            Ok(handed) => handed,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let reach = self.reach.clone();
        Box::pin(async move {
            // Every record handed to the producer is awaited, so that the end seen counts
            // each one the broker took, even when another of the batch failed.
            let mut first = None;
            let mut failed = None;
            for delivery in deliveries {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        failed.get_or_insert(error);
                        continue;
                    }
                };
                match delivery.await {
                    Ok(Ok(delivered)) if delivered.offset >= 0 => {
                        let position = delivered.offset as u64;
                        first.get_or_insert(position);
                        reach.saw_end(position + 1);
                    }
                    Ok(Ok(_)) => {
                        failed.get_or_insert(LogError::Unavailable(
                            "the broker acknowledged a record without its offset".into(),
                        ));
                    }
                    Ok(Err((error, message))) => {
                        let len = message.payload().map_or(0, <[u8]>::len);
                        let error = refused("the broker's acknowledgement", error, len);
                        if !matches!(error, LogError::RecordTooLarge(_)) {
                            producing.failed(generation);
                        }
                        failed.get_or_insert(error);
                    }
                    Err(_) => {
                        failed.get_or_insert(LogError::Closed);
                    }
                }
            }
            if let Some(error) = failed {
                reach.warn_refused(&error);
                return Err(error);
            }
            first.ok_or(LogError::Closed)
        })
    }

    fn reader(&self, from: Position) -> Result<Box<dyn LogReader>, LogError> {
        let consumer = consumer(&self.config, &self.reach, false)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.config.topic, PARTITION, Offset::Offset(from as i64))
            .map_err(|e| LogError::Config(format!("reading topic {}: {e}", self.config.topic)))?;
        consumer
            .assign(&assignment)
            .map_err(|e| unavailable(&format!("reading topic {}", self.config.topic), e))?;
        Ok(Box::new(KafkaReader {
            consumer,
            next: from,
            reach: self.reach.clone(),
        }))
    }

    fn end(&self) -> Position {
        self.reach.end.load(Ordering::Acquire)
    }

    fn several_writers(&self) -> bool {
        true
    }

    fn position_at(&self, at_ms: i64) -> Result<Option<Position>, LogError> {
        let consumer = consumer(&self.config, &self.reach, false)?;
        let mut asked = TopicPartitionList::new();
        asked
            .add_partition_offset(&self.config.topic, PARTITION, Offset::Offset(at_ms))
            .map_err(|e| LogError::Config(format!("reading topic {}: {e}", self.config.topic)))?;
        let found = consumer
            .offsets_for_times(asked, BROKER_TIMEOUT)
            .map_err(|e| unavailable("the topic's offset for a time", e))?;
        let offset = (found.elements().first()).map(|element| element.offset());
        Ok(match offset {
            Some(Offset::Offset(offset)) if offset >= 0 => Some(offset as Position),
            // No record at or after that time.
            Some(Offset::End) => Some(self.end()),
            _ => None,
        })
    }

    fn health(&self) -> Result<(), LogError> {
        // An idempotent producer that hit a fatal error refuses every append from then on,
        // until it is replaced (asking tries that too).
        let fatal = (self.producer.as_ref()).and_then(|p| p.fatal_error());
        if let Some(fatal) = fatal {
            return Err(LogError::Unavailable(format!(
                "the producer stopped for good ({fatal}); a new one is being made"
            )));
        }
        self.reach.unavailable().map_or(Ok(()), Err)
    }
}

/// A consumer assigned to the partition at a position.
struct KafkaReader {
    consumer: BaseConsumer<Watch>,
    next: Position,
    reach: Arc<Reach>,
}

impl LogReader for KafkaReader {
    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let started = Instant::now();
        let mut out = Vec::new();
        while out.len() < max {
            // Once something came, take only what the client already fetched.
            let waited = started.elapsed();
            let timeout = if out.is_empty() {
                wait.saturating_sub(waited).max(Duration::from_millis(1))
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                Some(Ok(message)) if message.offset() < 0 => continue,
                Some(Ok(message)) => {
                    let position = message.offset() as u64;
                    if position < self.next {
                        continue;
                    }
                    // Offsets are dense without transactions or compaction: a gap is
                    // records deleted (a retention set on the topic after it was made).
                    if position > self.next {
                        return Err(LogError::Missing(format!(
                            "records {} to {} are gone from the topic (a retention on it?)",
                            self.next,
                            position - 1
                        )));
                    }
                    self.next = position + 1;
                    out.push(Record {
                        position,
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(error)) if out.is_empty() => {
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
                        return Err(LogError::Missing(format!(
                            "reading from {}: {error}",
                            self.next
                        )));
                    }
                    // A dropped connection is said, then mended by the client: only one
                    // that lasts while records are owed fails the read.
                    let behind = self.next < self.reach.end.load(Ordering::Acquire);
                    if behind && started.elapsed() >= FETCH_TIMEOUT {
                        return Err(unavailable("reading the topic", error));
                    }
                    if !behind && started.elapsed() >= wait {
                        break;
                    }
                    tracing::debug!(%error, "reading the topic; the client retries");
                }
                Some(Err(_)) => break,
                None if !out.is_empty() => break,
                None => {
                    // Records the topic is known to hold are still on their way: an
                    // empty answer would read as the end of the log.
                    let behind = self.next < self.reach.end.load(Ordering::Acquire);
                    if behind && let Some(error) = self.reach.unavailable() {
                        return Err(error);
                    }
                    if behind && started.elapsed() < FETCH_TIMEOUT {
                        continue;
                    }
                    if behind {
                        return Err(LogError::Unavailable(format!(
                            "records from {} were not fetched within {} s",
                            self.next,
                            FETCH_TIMEOUT.as_secs()
                        )));
                    }
                    if started.elapsed() >= wait {
                        break;
                    }
                }
            }
        }
        // Records read are in the topic: its end is at least past them, whatever the
        // end poller last saw.
        self.reach.saw_end(self.next);
        Ok(out)
    }

    fn position(&self) -> Position {
        self.next
    }
}
