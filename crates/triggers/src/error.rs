//! Why a trigger could not be recorded or sent.

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("trigger storage failed: {0}")]
    Storage(String),
}
