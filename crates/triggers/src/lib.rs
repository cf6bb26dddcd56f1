//! Behavioural triggers, delivered to the shop's webhooks at least once.
//!
//! The state keeps the timers (`spoor_engine::timers`), and the settings say what each
//! site wants (`spoor_settings::triggers`). This crate decides what fires when timers
//! come due (who can be reached, frequency caps, staleness), records each fired trigger
//! in a persistent outbox before anything is sent, and delivers them, signed, with
//! retries and dead letters.

mod error;
pub mod outbox;
pub mod payload;
pub mod runner;
pub mod signature;

pub use error::TriggerError;
pub use outbox::Outbox;
pub use runner::Triggers;
