//! The parsers of untrusted bytes, as the fuzz targets in `fuzz/` drive them, for a
//! bounded number of generated cases: they never panic, and what they accept holds
//! together.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use spoor_protocol::batch::{Batch, Framing};
use spoor_protocol::{Incoming, TrackerEvent, parse_request};

const NOW: i64 = 1_700_000_000_000;

/// Texts that look like what clients send, with the odd one that does not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("7".to_string()),
        Just("10.50 EUR".to_string()),
        Just("a@x.com".to_string()),
        Just("sc=abc; _ga=1".to_string()),
        Just("javascript:x".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

/// JSON values of a few levels, made of the names events use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((name(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("productKey"),
        Just("product_id"),
        Just("price"),
        Just("unit_price"),
        Just("quantity"),
        Just("Products"),
        Just("Product"),
        Just("GUID"),
        Just("OrderNumber"),
        Just("categoryKey"),
        Just("search"),
        Just("isInStock"),
        Just("tag_color"),
        Just("Tags"),
        Just("container_type"),
        Just("cookies"),
        Just("sc"),
        Just("user_email"),
        Just("user_phone"),
        Just("url"),
        Just("name"),
        Just("datetime"),
        Just("x"),
    ]
    .prop_map(String::from)
}

fn event_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("ProductPage"),
        Just("StatusCart"),
        Just("PurchasedItems"),
        Just("CustomerData"),
        Just("CategoryPage"),
        Just("AddToWishlist"),
        Just("SearchRequest"),
        Just("ProductImpressions"),
        Just("ProductUpdate"),
        Just("PageView"),
    ]
}

/// A request shaped like an event: a `GeneralInfo` and a body under the event's name.
fn event_like() -> impl Strategy<Value = Vec<u8>> {
    (event_name(), json_value(), json_value(), any::<bool>()).prop_map(
        |(event, body, extra, sc)| {
            let mut info = json!({"eventName": event, "siteId": "S1"});
            if sc {
                info["cookies"] = json!({"sc": "c1"});
            }
            if let Value::Object(fields) = extra {
                for (key, value) in fields {
                    info[key] = value;
                }
            }
            serde_json::to_vec(&json!({"GeneralInfo": info, event: body})).unwrap()
        },
    )
}

fn accepted_reads_back(bytes: &[u8]) {
    if let Ok(Incoming::Event(event)) = parse_request(bytes, NOW) {
        let stored = serde_json::to_vec(&event).unwrap();
        let back: TrackerEvent = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back, event);
    }
}

/// Found by the fuzz target `tracker`: a number in a further catalogue field was read less
/// precisely than its stored form is read back, so a state rebuilt from the log could
/// differ from the one built as events arrived.
#[test]
fn numbers_read_the_same_from_the_request_and_from_the_stored_form() {
    for number in [
        "1.1111111111111125e29",
        "0.30000000000000004",
        "2.2250738585072011e-308",
    ] {
        let body = format!(
            r#"{{"GeneralInfo": {{"eventName": "ProductUpdate", "siteId": "S1"}},
                "ProductUpdate": [{{"product_id": "1", "weight": [{number}]}}]}}"#
        );
        let parsed = parse_request(body.as_bytes(), NOW);
        assert!(
            matches!(parsed, Ok(Incoming::Event(_))),
            "{number}: {parsed:?}"
        );
        accepted_reads_back(body.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_are_answered_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        accepted_reads_back(&bytes);
    }

    #[test]
    fn an_accepted_event_reads_back_from_its_stored_form(bytes in event_like()) {
        accepted_reads_back(&bytes);
    }

    /// What the follower and the exports read: a stored record's JSON, from any bytes or
    /// from a record around any event-shaped body.
    #[test]
    fn stored_records_are_read_without_a_panic(
        noise in prop::collection::vec(any::<u8>(), 0..256),
        event in json_value(),
    ) {
        let _ = serde_json::from_slice::<spoor_protocol::stored::StoredRecord>(&noise);
        let record = json!({"receivedAt": 1, "requestHash": "0".repeat(32), "event": event});
        if let Ok(record) = serde_json::from_value::<spoor_protocol::stored::StoredRecord>(record) {
            let _ = (record.event(), record.site_id());
        }
    }

    #[test]
    fn batches_split_without_a_panic(items in prop::collection::vec(event_like(), 0..4), ndjson in any::<bool>(), cut in any::<usize>()) {
        let mut body = Vec::new();
        if ndjson {
            for item in &items {
                body.extend_from_slice(item);
                body.push(b'\n');
            }
        } else {
            body.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(item);
            }
            body.push(b']');
        }
        // Whole, and cut anywhere.
        for body in [&body[..], &body[..cut % (body.len() + 1)]] {
            let framing = if ndjson { Framing::Ndjson } else { Framing::Json };
            if let Ok(batch) = Batch::split(body, framing) {
                for item in batch.items() {
                    accepted_reads_back(item);
                }
            }
        }
    }

    #[test]
    fn feeds_are_read_without_a_panic(items in prop::collection::vec((text(), text(), text()), 0..4), cut in any::<usize>()) {
        let mut xml = String::from(r#"<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0"><channel>"#);
        for (id, price, title) in &items {
            xml.push_str(&format!("<item><g:id>{id}</g:id><g:price>{price}</g:price><g:title>{title}</g:title></item>"));
        }
        xml.push_str("</channel></rss>");
        let bytes = xml.as_bytes();
        let _ = spoor_protocol::feed::parse_feed(bytes);
        let _ = spoor_protocol::feed::parse_feed(&bytes[..cut % (bytes.len() + 1)]);
    }
}
