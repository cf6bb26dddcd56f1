//! Every refusal as `{"error": "<code>", "message": "..."}` with the status that fits.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use spoor_ingest::{IngestError, KeyProblem};
use spoor_log::LogError;
use spoor_protocol::batch::BatchError;
use spoor_settings::{Setting, SettingsError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to send as `Retry-After`, for a 429.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 429 whose `Retry-After` is `wait`, rounded up to whole seconds.
    pub fn too_many_requests(
        code: &'static str,
        message: impl Into<String>,
        wait: std::time::Duration,
    ) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <token>` (see `spoor serve --help`)",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
    }
}

impl From<&IngestError> for ApiError {
    fn from(error: &IngestError) -> Self {
        match error {
            IngestError::Rejected { error, .. } => {
                ApiError::bad_request(error.code.as_str(), error.message())
            }
            IngestError::UnknownSite { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_site", error.to_string())
            }
            IngestError::RateLimited { wait, .. } => {
                ApiError::too_many_requests("rate_limited", error.to_string(), *wait)
            }
            IngestError::KeyRequired { problem, .. } => match problem {
                KeyProblem::Missing => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "key_required", error.to_string())
                }
                KeyProblem::NotTheSites => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "key_refused", error.to_string())
                }
                KeyProblem::TooManyRefused(wait) => {
                    ApiError::too_many_requests("too_many_refused_keys", error.to_string(), *wait)
                }
            },
            IngestError::InvalidSite(message) => ApiError::bad_request("invalid_site", message),
            IngestError::Log(LogError::RecordTooLarge(_)) => ApiError::too_large(error.to_string()),
            IngestError::Log(LogError::Stalled(_)) => ApiError {
                retry_after: Some(STALLED_RETRY_AFTER_SECS),
                ..ApiError::unavailable(
                    "the event log cannot take writes now (its disk may be full); the event \
                     was not acknowledged, so retry later",
                )
            },
            IngestError::Log(LogError::Unavailable(_)) => ApiError {
                retry_after: Some(UNREACHABLE_RETRY_AFTER_SECS),
                ..ApiError::unavailable(
                    "the event log cannot be reached now; the event was not acknowledged, so \
                     retry later",
                )
            },
            IngestError::Log(_) | IngestError::Storage(_) => ApiError::unavailable(
                "the event could not be stored; it was not acknowledged, so retry later",
            ),
        }
    }
}

/// What a client told to wait because the log is stalled waits, in seconds.
const STALLED_RETRY_AFTER_SECS: u64 = 10;
/// What a client told to wait because the log's brokers are out of reach waits.
const UNREACHABLE_RETRY_AFTER_SECS: u64 = 5;

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        ApiError::from(&error)
    }
}

impl From<SettingsError> for ApiError {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Invalid { setting, message } => {
                let code = match setting {
                    Setting::Site => "invalid_site",
                    Setting::Block | Setting::Tuning => "invalid_value",
                    Setting::Triggers => "invalid_settings",
                };
                ApiError::bad_request(code, message)
            }
            SettingsError::Storage { setting, message } => {
                tracing::error!(%message, "settings not saved");
                // A file that cannot be written (a full disk) is an outage: the old file
                // and the settings served are as they were, and a retry may succeed.
                let what = match setting {
                    Setting::Site => "the site registry could not be saved",
                    Setting::Block => "the block could not be saved",
                    Setting::Tuning => "the tuning could not be saved",
                    Setting::Triggers => "the trigger settings could not be saved",
                };
                ApiError::unavailable(format!("{what}; nothing changed, retry later"))
            }
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(error: BatchError) -> Self {
        match &error {
            BatchError::InvalidJson(e) => ApiError::bad_request(e.code.as_str(), e.message()),
            BatchError::Empty => ApiError::bad_request("empty_batch", error.to_string()),
            BatchError::TooMany(_) => ApiError::too_large(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            (response.headers_mut()).insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a late body may still be on its way: the connection cannot
            // carry another request.
            (response.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
