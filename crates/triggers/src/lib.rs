//! Behavioural triggers, delivered to the shop's webhooks at least once.
//!
//! The state keeps the timers (`spoor_engine::timers`) and the settings what each site
//! wants (`spoor_settings::triggers`); this crate decides what fires
//! when they come due (who can be reached, frequency caps, staleness), records each fired
//! trigger in a persistent outbox before anything is sent, and delivers them, signed,
//! with retries and dead letters.

pub mod outbox;
pub mod payload;
pub mod runner;
pub mod signature;

pub use outbox::Outbox;
pub use runner::Triggers;

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("trigger storage failed: {0}")]
    Storage(String),
}
