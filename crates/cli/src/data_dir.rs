//! The `--data` flag (where spoor keeps its log, settings, snapshots and admin token) and
//! the `--log` flags (which log: the embedded one in the data directory, or a Kafka topic).

use std::path::PathBuf;

use anyhow::{Context, bail};
use spoor_log::{KafkaConfig, LogSpec};

/// The data directory flag, shared by the subcommands that open one.
#[derive(clap::Args, Clone)]
pub struct DataDir {
    /// Where spoor keeps its log, sites and admin token.
    #[arg(long = "data", env = "SPOOR_DATA", default_value = "./spoor-data")]
    pub path: PathBuf,
}

impl DataDir {
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("log")
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// The embedded log, in `<data>/log`.
    File,
    /// A topic on Kafka-protocol brokers (Apache Kafka, Redpanda, a managed Kafka).
    Kafka,
}

/// Which log a command reads or writes, shared by the subcommands that open one.
#[derive(clap::Args, Clone)]
pub struct LogChoice {
    /// Where the events are kept: the embedded log in the data directory, or a topic on
    /// Kafka-protocol brokers.
    #[arg(
        long = "log",
        env = "SPOOR_EVENT_LOG",
        value_enum,
        default_value = "file"
    )]
    pub kind: LogKind,
    /// The Kafka brokers, `HOST:PORT,...` (with `--log kafka`).
    #[arg(long, env = "SPOOR_KAFKA_BROKERS", value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// The Kafka topic that holds the events (with `--log kafka`; created when missing).
    #[arg(long, env = "SPOOR_KAFKA_TOPIC", default_value = "spoor-events")]
    pub kafka_topic: String,
    /// The compacted Kafka topic where the sites' settings (keys, blocks, triggers,
    /// tuning) are shared by every node; `<--kafka-topic>-settings` when not given.
    #[arg(long, env = "SPOOR_KAFKA_SETTINGS_TOPIC", value_name = "NAME")]
    pub kafka_settings_topic: Option<String>,
    /// The compacted Kafka topic that holds the keys each person's identifying fields are
    /// sealed with (erasing a person deletes theirs); `<--kafka-topic>-keys` when not given.
    #[arg(long, env = "SPOOR_KAFKA_KEYS_TOPIC", value_name = "NAME")]
    pub kafka_keys_topic: Option<String>,
    /// The Kafka topic of the trigger outbox, which every engine node follows and the one
    /// that sends the triggers writes; `<--kafka-topic>-outbox` when not given.
    #[arg(long, env = "SPOOR_KAFKA_OUTBOX_TOPIC", value_name = "NAME")]
    pub kafka_outbox_topic: Option<String>,
    /// A librdkafka property passed through, `KEY=VALUE` (TLS, SASL, timeouts...);
    /// repeatable. Also taken from environment variables `SPOOR_KAFKA_PROPERTY_<KEY>`,
    /// the key upper-cased with `_` for `.` (`SPOOR_KAFKA_PROPERTY_SASL_PASSWORD`).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = property)]
    pub kafka_properties: Vec<(String, String)>,
}

fn property(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("{text:?} has no key before its ="));
    }
    Ok((key.trim().to_string(), value.to_string()))
}

/// Properties given as `SPOOR_KAFKA_PROPERTY_<KEY>` environment variables.
fn environment_properties() -> Vec<(String, String)> {
    const PREFIX: &str = "SPOOR_KAFKA_PROPERTY_";
    std::env::vars()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(PREFIX)?;
            Some((key.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect()
}

impl LogChoice {
    /// The log to open for a command that writes (or serves): the embedded log is
    /// created when missing.
    pub fn spec(&self, data: &DataDir) -> anyhow::Result<LogSpec> {
        match self.kind {
            LogKind::File => Ok(LogSpec::file(data.log_dir())),
            LogKind::Kafka => {
                let brokers = (self.kafka_brokers.clone()).context(
                    "--log kafka needs --kafka-brokers HOST:PORT,... (or SPOOR_KAFKA_BROKERS)",
                )?;
                let mut properties = environment_properties();
                properties.extend(self.kafka_properties.iter().cloned());
                Ok(LogSpec::Kafka(KafkaConfig {
                    brokers,
                    topic: self.kafka_topic.clone(),
                    settings_topic: (self.kafka_settings_topic.clone())
                        .unwrap_or_else(|| format!("{}-settings", self.kafka_topic)),
                    keys_topic: (self.kafka_keys_topic.clone())
                        .unwrap_or_else(|| format!("{}-keys", self.kafka_topic)),
                    outbox_topic: (self.kafka_outbox_topic.clone())
                        .unwrap_or_else(|| format!("{}-outbox", self.kafka_topic)),
                    properties,
                }))
            }
        }
    }

    /// The log to open for a command that only reads it: the embedded one must exist.
    pub fn existing_spec(&self, data: &DataDir) -> anyhow::Result<LogSpec> {
        if self.kind == LogKind::File && !data.log_dir().is_dir() {
            bail!("no event log in {} (is --data right?)", data.path.display());
        }
        self.spec(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_equals_value_and_environment_names_become_dotted_keys() {
        assert_eq!(
            property("sasl.password=a=b").unwrap(),
            ("sasl.password".into(), "a=b".into())
        );
        assert!(property("no-equals").is_err());
        assert!(property("=value").is_err());
        // SAFETY: this test alone sets a variable of this name, before reading it.
        unsafe { std::env::set_var("SPOOR_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL") };
        assert!(
            environment_properties()
                .contains(&("security.protocol".to_string(), "SASL_SSL".to_string()))
        );
    }
}
