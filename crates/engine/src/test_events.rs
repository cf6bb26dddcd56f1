//! Events for the engine's unit tests, written as a client would send them.

use serde_json::{Value, json};
use spoor_protocol::{Incoming, TrackerEvent, parse_value};

pub const T0: i64 = 1_700_000_000_000;
pub const MINUTE: i64 = 60_000;

/// `body` parsed as the tracker API would, received at [`T0`].
pub fn event(body: Value) -> TrackerEvent {
    match parse_value(&body, T0).expect("a valid event") {
        Incoming::Event(event) => event,
        _ => panic!("not an event"),
    }
}

/// `GeneralInfo` of an event of site `S` by visitor `v`.
pub fn general(name: &str) -> Value {
    json!({"eventName": name, "siteId": "S", "cookies": {"sc": "v"}})
}
