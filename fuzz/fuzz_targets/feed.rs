//! A product feed (XML) as `spoor feed import` and the feed route read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spoor_protocol::feed::parse_feed(data);
});
