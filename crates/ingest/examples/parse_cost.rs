//! How long parsing, validating and encoding one event takes, outside HTTP and storage,
//! and decoding its stored record again (what the state's follower does with each):
//! `cargo run --release -p spoor-ingest --example parse_cost -- ../shared/spec/yespo-tracker-rest-api.md`

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use spoor_ingest::request_hash;
use spoor_protocol::stored::{RecordContent, StoredRecord, hash_hex};
use spoor_protocol::{Incoming, sealing};

/// Counts allocations, to print how many each step makes per event (a figure the
/// machine's noise does not move, unlike the times).
struct CountingAllocations;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocations {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(block, layout, size) }
    }
}

#[global_allocator]
static COUNTING: CountingAllocations = CountingAllocations;

fn main() {
    let spec_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/spec/yespo-tracker-rest-api.md".into());
    let spec = std::fs::read_to_string(&spec_path).expect("the tracker spec");
    let start = spec.find("```json\n").expect("an example") + 8;
    let end = start + spec[start..].find("```").expect("the example's end");
    let example = &spec[start..end];
    let bodies: Vec<Vec<u8>> = (0..10_000)
        .map(|i| example.replace("CDA68358", &format!("{i:08}")).into_bytes())
        .collect();
    let now = 1_700_000_000_000;
    let rounds = 20;
    let timed = |name: &str, work: &dyn Fn(&[u8])| {
        let started = Instant::now();
        for _ in 0..rounds {
            for body in &bodies {
                work(body);
            }
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / (rounds * bodies.len()) as f64;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        work(&bodies[0]);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("{name:28} {per:6.2} us per event, {allocations:3} allocations");
    };
    timed("JSON to Value", &|b| {
        let _: serde_json::Value = spoor_protocol::json::from_slice(b).unwrap();
    });
    timed("JSON to borrowed tree", &|b| {
        spoor_protocol::json::with_tree(b, |_| ()).unwrap();
    });
    timed("JSON to typed event", &|b| {
        spoor_protocol::parse_request(b, now).unwrap();
    });
    timed("typed event + record JSON", &|b| {
        record_json(b, now);
    });
    let records: Vec<StoredRecord> = bodies.iter().map(|b| record(b, now)).collect();
    let started = Instant::now();
    for _ in 0..rounds {
        for record in &records {
            serde_json::to_vec(record).unwrap();
        }
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / (rounds * records.len()) as f64;
    println!("{:28} {per:6.2} us per event", "typed record to JSON");
    let records: Vec<Vec<u8>> = bodies.iter().map(|b| record_json(b, now)).collect();
    let started = Instant::now();
    for _ in 0..rounds {
        for record in &records {
            let _: StoredRecord = serde_json::from_slice(record).unwrap();
        }
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / (rounds * records.len()) as f64;
    println!("{:28} {per:6.2} us per event", "record JSON to typed");
    sealed_costs(&bodies, now, rounds);
}

/// On a log that keeps personal parts sealed (Kafka): the record sealed before it is
/// encoded, and opened after it is decoded, against the same steps without; every key
/// already held, as for a returning visitor.
fn sealed_costs(bodies: &[Vec<u8>], now: i64, rounds: usize) {
    let keys = spoor_log::Keyring::open(Arc::new(spoor_log::MemoryTable::default())).unwrap();
    let plain: Vec<StoredRecord> = bodies.iter().map(|b| record(b, now)).collect();
    let seal = |record: &mut StoredRecord| {
        sealing::seal(record, |name| {
            let key = keys.key_for(name);
            Ok::<_, Infallible>((key.id, key.key))
        })
        .unwrap();
    };
    let sealed: Vec<Vec<u8>> = (plain.iter())
        .map(|record| {
            let mut record = record.clone();
            seal(&mut record);
            serde_json::to_vec(&record).unwrap()
        })
        .collect();
    let encoded: Vec<Vec<u8>> = plain
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    let per_event =
        |started: Instant| started.elapsed().as_secs_f64() * 1e6 / (rounds * plain.len()) as f64;
    for (name, with_seal) in [
        ("record to JSON (a copy)", false),
        ("sealed, to JSON", true),
    ] {
        let started = Instant::now();
        for _ in 0..rounds {
            for record in &plain {
                let mut record = record.clone();
                if with_seal {
                    seal(&mut record);
                }
                serde_json::to_vec(&record).unwrap();
            }
        }
        println!("{name:28} {:6.2} us per event", per_event(started));
    }
    for (name, records, open) in [
        ("record JSON to typed", &encoded, false),
        ("sealed JSON to typed, opened", &sealed, true),
    ] {
        let started = Instant::now();
        for _ in 0..rounds {
            for bytes in records {
                let mut record: StoredRecord = serde_json::from_slice(bytes).unwrap();
                if open {
                    sealing::open(&mut record, |id| keys.key(id)).unwrap();
                }
            }
        }
        println!("{name:28} {:6.2} us per event", per_event(started));
    }
    let sizes = |records: &[Vec<u8>]| records.iter().map(Vec::len).sum::<usize>() / records.len();
    println!(
        "record bytes: {} plain, {} sealed",
        sizes(&encoded),
        sizes(&sealed)
    );
}

/// The log record ingest stores for `body`, as bytes.
fn record_json(body: &[u8], now: i64) -> Vec<u8> {
    serde_json::to_vec(&record(body, now)).unwrap()
}

/// The log record ingest stores for `body`.
fn record(body: &[u8], now: i64) -> StoredRecord {
    let Incoming::Event(event) = spoor_protocol::parse_request(body, now).unwrap() else {
        unreachable!("the spec's example is an event")
    };
    StoredRecord {
        sealed: None,
        received_at: now,
        request_hash: hash_hex(request_hash(body)),
        content: RecordContent::Event(event),
    }
}
