//! The tracker front end: any bytes a client posts to `/api/v2`. Parsing never panics, and
//! an event it accepts reads back from its stored form as the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor_protocol::{Incoming, TrackerEvent, parse_request};

const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(Incoming::Event(event)) = parse_request(data, NOW) {
        let stored = serde_json::to_vec(&event).expect("an event serialises");
        let back: TrackerEvent = serde_json::from_slice(&stored).expect("a stored event reads back");
        assert_eq!(back, event);
    }
});
