//! [`Timed`]: a value and the event time that set it, as contacts' profile fields and the
//! catalogue's prices and stock states keep them (the latest by event time wins).

use serde::{Deserialize, Serialize};

/// A value and the event time that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed<T> {
    pub value: T,
    pub at: i64,
}
