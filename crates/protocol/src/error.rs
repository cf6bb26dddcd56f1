//! Why a request was refused, in terms a shop's engineer can act on.

use serde::Serialize;

/// A machine-readable reason for a rejection. Stable: clients and metrics key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON (or not NDJSON); the message gives line and column.
    InvalidJson,
    /// A required field is absent, null or empty.
    MissingField,
    /// A field is present but of the wrong type, or out of the plausible range.
    InvalidValue,
    /// `GeneralInfo.eventName` names no event this API knows.
    UnknownEvent,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::UnknownEvent => "unknown_event",
        }
    }
}

/// A rejected event. `path` is the field path as the client sent it
/// (`StatusCart.Products[1].quantity`), so the message points at the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub path: Option<String>,
    pub detail: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, path: impl Into<String>, detail: impl Into<String>) -> Self {
        let path = path.into();
        ProtocolError {
            code,
            path: (!path.is_empty()).then_some(path),
            detail: detail.into(),
        }
    }

    pub fn invalid_json(err: &serde_json::Error) -> Self {
        ProtocolError {
            code: ErrorCode::InvalidJson,
            path: None,
            detail: format!(
                "invalid JSON at line {}, column {}: {}",
                err.line(),
                err.column(),
                json_error_reason(err)
            ),
        }
    }

    /// The same error, for a value that was reached through `prefix`: paths are built
    /// from the inside out, and only when something is wrong.
    pub fn within(mut self, prefix: &str) -> Self {
        self.path = Some(match self.path.take() {
            None => prefix.to_string(),
            Some(inner) if inner.starts_with('[') || prefix.is_empty() => {
                format!("{prefix}{inner}")
            }
            Some(inner) => format!("{prefix}.{inner}"),
        });
        self
    }

    /// `path: detail`, or just the detail when the problem is the whole body.
    pub fn message(&self) -> String {
        match &self.path {
            Some(path) => format!("{path}: {}", self.detail),
            None => self.detail.clone(),
        }
    }
}

/// serde_json's message ends with " at line L column C"; we state the position ourselves.
fn json_error_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}
