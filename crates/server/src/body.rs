//! Reading a request body: which media types and encodings are accepted, and how big a
//! body may be before and after decompression.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http_body_util::LengthLimitError;

use crate::error::ApiError;

/// How a body's items are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
}

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
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "text/json" | "text/plain" => Ok(Framing::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(Framing::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
            if allow_ndjson =>
        {
            Ok(Framing::Ndjson)
        }
        other => Err(ApiError::unsupported(format!(
            "Content-Type {other:?} is not supported: send application/json{}",
            if allow_ndjson {
                " (a JSON array) or application/x-ndjson"
            } else {
                ""
            }
        ))),
    }
}

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
        if inner.is::<LengthLimitError>() {
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
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
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

pub fn human_bytes(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}
