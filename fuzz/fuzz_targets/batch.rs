//! `/api/v2/batch` and the NDJSON import: splitting a body into events, then each event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor_protocol::batch::{Batch, Framing};

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let framing = if first % 2 == 0 { Framing::Json } else { Framing::Ndjson };
    if let Ok(batch) = Batch::split(body, framing) {
        for item in batch.items() {
            let _ = spoor_protocol::parse_request(item, 1_700_000_000_000);
        }
    }
});
