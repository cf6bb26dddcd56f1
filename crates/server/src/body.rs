//! Reading a request body: which media types and encodings are accepted, and how big a
//! body may be before and after decompression.

use std::error::Error;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use http_body_util::LengthLimitError;
use hyper::body::{Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use spoor_protocol::batch::Framing;
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

const JSON_TYPES: &[&str] = &["application/json", "text/json", "text/plain"];
const NDJSON_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
];

/// Media types a tracker body may be sent as. `text/plain` is what a browser's
/// `navigator.sendBeacon` sends for a string; a missing type is taken as JSON.
pub fn framing(headers: &HeaderMap, allow_ndjson: bool) -> Result<Framing, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(Framing::Json);
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    // Compared without a lowercased copy: this runs on every tracker request.
    let is_any = |types: &[&str]| types.iter().any(|t| media.eq_ignore_ascii_case(t));
    let starts = |prefix: &str| {
        media
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &str| {
        (media.len().checked_sub(suffix.len()))
            .and_then(|at| media.get(at..))
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
    };
    let is_json_suffixed =
        media.len() > "application/+json".len() && starts("application/") && ends("+json");
    if media.is_empty() || is_any(JSON_TYPES) || is_json_suffixed {
        Ok(Framing::Json)
    } else if allow_ndjson && is_any(NDJSON_TYPES) {
        Ok(Framing::Ndjson)
    } else {
        Err(ApiError::unsupported(format!(
            "Content-Type {:?} is not supported: send application/json{}",
            media.to_ascii_lowercase(),
            if allow_ndjson {
                " (a JSON array) or application/x-ndjson"
            } else {
                ""
            }
        )))
    }
}

/// Compressed bodies larger than this are decompressed on a blocking thread, not on the
/// HTTP thread that serves other connections meanwhile.
const DECOMPRESS_INLINE_AT_MOST: usize = 64 * 1024;

/// Reads the whole body, at most `limit` bytes on the wire and `limit` bytes once
/// decompressed (a small gzip body must not expand into gigabytes).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let gzip = match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
        Some(other) => {
            return Err(ApiError::unsupported(format!(
                "Content-Encoding {other:?} is not supported: send gzip or no encoding"
            )));
        }
    };
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if let Some(timed_out) = cause::<BodyTimedOut>(&*inner) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} s (the server's --http-body-timeout-secs)",
                    timed_out.0.as_secs()
                ),
            )
        } else if cause::<LengthLimitError>(&*inner).is_some() {
            ApiError::too_large(format!(
                "the body is over the limit of {}",
                human_bytes(limit)
            ))
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("the body could not be read: {inner}"),
            )
        }
    })?;
    if !gzip {
        return Ok(raw);
    }
    if raw.len() <= DECOMPRESS_INLINE_AT_MOST {
        return gunzip(&raw, limit);
    }
    tokio::task::spawn_blocking(move || gunzip(&raw, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "decompressing the body stopped unexpectedly; the server's log says why",
            )
        })?
}

/// `error` itself or the first of its causes that is an `E`.
fn cause<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// Decompresses a gzip body, refused once it grows past `limit`.
fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the gzip body could not be decompressed: {e}"),
        )
    })?;
    if out.len() > limit {
        return Err(ApiError::too_large(format!(
            "the body decompresses to more than the limit of {}",
            human_bytes(limit)
        )));
    }
    Ok(Bytes::from(out))
}

/// The largest body of the settings routes (sites, blocks, triggers, access).
pub const SETTINGS_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A settings route's body, read by [`read`]: refused as JSON errors (axum's own `Bytes`
/// answers plain text), gzip accepted, at most [`SETTINGS_BODY_LIMIT`].
pub struct SettingsBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for SettingsBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        read(&parts.headers, body, SETTINGS_BODY_LIMIT)
            .await
            .map(SettingsBody)
    }
}

/// A request body cut off by the body timeout.
#[derive(Debug)]
pub(crate) struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body did not arrive within {} s", self.0.as_secs())
    }
}

impl Error for BodyTimedOut {}

pin_project! {
    /// A request's body that fails with [`BodyTimedOut`] once its time is up, so that a
    /// client sending a byte now and then holds no connection for long. Its timer is
    /// set only when the body keeps a reader waiting: most bodies arrive with the head.
    pub(crate) struct TimedBody {
        #[pin]
        body: Incoming,
        deadline: Instant,
        timeout: Duration,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl TimedBody {
    pub(crate) fn new(body: Incoming, timeout: Duration) -> Self {
        TimedBody {
            body,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.timer.is_none() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(BodyTimedOut(*this.timeout).into()))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub fn human_bytes(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn framed(content_type: &str, allow_ndjson: bool) -> Result<Framing, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        framing(&headers, allow_ndjson).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn media_types_are_recognised_in_any_case() {
        assert_eq!(
            framed("Application/JSON; charset=UTF-8", false),
            Ok(Framing::Json)
        );
        assert_eq!(framed("text/plain", false), Ok(Framing::Json));
        assert_eq!(
            framed("application/vnd.shop+JSON", false),
            Ok(Framing::Json)
        );
        assert_eq!(framed("application/X-NDJSON", true), Ok(Framing::Ndjson));
        assert_eq!(framed("application/x-ndjson", false), Err(415));
        assert_eq!(framed("application/+json", false), Err(415));
        assert_eq!(framed("text/html", false), Err(415));
    }
}
