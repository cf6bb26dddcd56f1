//! Records read back: the log's framing of one record, and a stored record's JSON as the
//! state's follower and the exports read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor_protocol::stored::StoredRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok((payload, _)) = spoor_log::record::decode(data, 0) {
        assert!(payload.len() <= data.len());
    }
    if let Ok(record) = serde_json::from_slice::<StoredRecord>(data) {
        let _ = record.event();
        let _ = record.site_id();
    }
});
