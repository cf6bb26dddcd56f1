//! Reading a request body: which media types and encodings are accepted, and how big a
//! body may be before and after decompression.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http_body_util::LengthLimitError;
use spoor_protocol::batch::Framing;

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
