//! `POST /api/v2/batch` bodies: a JSON array of events or NDJSON, one event a line. The
//! items are split without being parsed (each is parsed on its own, so one bad item is
//! refused alone), after the no-break spaces that pasted examples carry are made spaces.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::ProtocolError;
use crate::json::tolerate_nbsp;

/// The most events one batch may carry.
pub const MAX_EVENTS: usize = 500;

/// How a body's items are framed, as its `Content-Type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
}

/// Why a batch body was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{}", .0.message())]
    InvalidJson(ProtocolError),
    #[error("the batch holds no events: send a JSON array or NDJSON lines of events")]
    Empty,
    #[error("the batch holds {0} events; at most {MAX_EVENTS} are accepted per request")]
    TooMany(usize),
}

/// A batch body and where each of its items lies in it.
pub struct Batch<'a> {
    body: Cow<'a, [u8]>,
    items: Vec<Range<usize>>,
}

impl<'a> Batch<'a> {
    /// Splits `body` into its items: the elements of a JSON array (a JSON body that opens
    /// with `[`), else its non-empty lines.
    pub fn split(body: &'a [u8], framing: Framing) -> Result<Batch<'a>, BatchError> {
        let body = tolerate_nbsp(body);
        let is_array = framing == Framing::Json && body.trim_ascii_start().starts_with(b"[");
        let items = if is_array {
            array_items(&body)?
        } else {
            line_items(&body)
        };
        match items.len() {
            0 => Err(BatchError::Empty),
            n if n > MAX_EVENTS => Err(BatchError::TooMany(n)),
            _ => Ok(Batch { body, items }),
        }
    }

    /// Each item's bytes, in the order sent.
    pub fn items(&self) -> Vec<&[u8]> {
        self.items.iter().map(|r| &self.body[r.clone()]).collect()
    }
}

fn array_items(body: &[u8]) -> Result<Vec<Range<usize>>, BatchError> {
    let raw: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| BatchError::InvalidJson(ProtocolError::invalid_json(&e)))?;
    let base = body.as_ptr() as usize;
    Ok(raw
        .into_iter()
        .map(|item| {
            // A raw value borrows its bytes from the body it was read from.
            let start = item.get().as_ptr() as usize - base;
            start..start + item.get().len()
        })
        .collect())
}

fn line_items(body: &[u8]) -> Vec<Range<usize>> {
    let mut items = Vec::new();
    let mut start = 0;
    for line in body.split(|b| *b == b'\n') {
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            let lead = line.len() - line.trim_ascii_start().len();
            items.push(start + lead..start + lead + trimmed.len());
        }
        start += line.len() + 1;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(body: &[u8], framing: Framing) -> Result<Vec<Vec<u8>>, BatchError> {
        let batch = Batch::split(body, framing)?;
        Ok(batch.items().into_iter().map(<[u8]>::to_vec).collect())
    }

    #[test]
    fn batches_split_as_arrays_or_lines() {
        let array = split(br#" [{"a": 1}, {"b": [2]}] "#, Framing::Json).unwrap();
        assert_eq!(array, [b"{\"a\": 1}".to_vec(), b"{\"b\": [2]}".to_vec()]);
        let lines = split(b"{\"a\":1}\r\n\n  {\"b\":2}\n", Framing::Ndjson).unwrap();
        assert_eq!(lines, [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert!(matches!(
            split(b"  ", Framing::Json),
            Err(BatchError::Empty)
        ));
        let many = format!("[{}]", vec!["{}"; 501].join(","));
        assert!(matches!(
            split(many.as_bytes(), Framing::Json),
            Err(BatchError::TooMany(501))
        ));
        assert!(matches!(
            split(b"[{\"a\": }]", Framing::Json),
            Err(BatchError::InvalidJson(_))
        ));
    }

    #[test]
    fn no_break_spaces_outside_strings_are_spaces() {
        let body = "[\u{a0}{\"a\":\u{a0}\"x\u{a0}y\"}]";
        let items = split(body.as_bytes(), Framing::Json).unwrap();
        assert_eq!(items, ["{\"a\":  \"x\u{a0}y\"}".as_bytes().to_vec()]);
    }
}
