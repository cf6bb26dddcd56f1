//! State at scale: applies `contacts × events` synthetic events to the engine (a shop's mix:
//! a sign-up, product views, cart changes, a wishlist add, a search, a purchase per
//! contact, interleaved over time across contacts) and prints one JSON line: apply rate,
//! resident memory per contact, the heap blocks held per contact, and contact lookup
//! latency.
//!
//! `cargo run --release -p spoor-engine --example state_bench -- 1000000 20`
//!
//! With `SPOOR_BENCH_SEVERAL_WRITERS=1`, the engine decides retries as on a log that
//! several ingest nodes append to (a Kafka log), holding the window's request hashes.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mimalloc::MiMalloc;

// The allocator of the `spoor` binary: resident memory as the server would hold it. It
// also counts the bytes of the blocks it hands out: resident memory moves by tens of
// bytes a contact from run to run (when the allocator returns freed pages), the live
// blocks do not, so they show what a change to the state's layout did.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Counting;

unsafe extern "C" {
    /// The size of the block mimalloc gave for `p` (its size class, not the request).
    fn mi_usable_size(p: *const u8) -> usize;
}

// SAFETY: every call is passed on to mimalloc unchanged; the counting only reads the size
// of blocks mimalloc handed out and has not freed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { MiMalloc.alloc(layout) };
        if !block.is_null() {
            LIVE_BYTES.fetch_add(unsafe { mi_usable_size(block) }, Ordering::Relaxed);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !block.is_null() {
            LIVE_BYTES.fetch_add(unsafe { mi_usable_size(block) }, Ordering::Relaxed);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(unsafe { mi_usable_size(block) }, Ordering::Relaxed);
        unsafe { MiMalloc.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let before = unsafe { mi_usable_size(block) };
        let moved = unsafe { MiMalloc.realloc(block, layout, size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_sub(before, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(unsafe { mi_usable_size(moved) }, Ordering::Relaxed);
        }
        moved
    }
}

use spoor_engine::{Engine, Identifier};
use spoor_protocol::stored::{RecordContent, StoredRecord};
use spoor_protocol::*;

const PRODUCTS: u64 = 50_000;
const T0: i64 = 1_700_000_000_000;

/// xorshift64*: fast, deterministic, good enough to pick products.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn price(cents: u64) -> Price {
    Price {
        amount: rust_decimal::Decimal::new(cents as i64, 2),
        currency: Some("EUR".into()),
    }
}

/// A product's price: fixed per product, with a change for one product in a hundred
/// halfway through, as a shop's prices move.
fn price_of(product: u64, step: u64) -> Price {
    let base = 500 + product * 37 % 9500;
    let changed = product.is_multiple_of(100) && step >= 10;
    price(if changed { base - 100 } else { base })
}

fn record(contact: u64, step: u64, rng: &mut Rng) -> StoredRecord {
    let product_number = rng.next() % PRODUCTS;
    let product = format!("p{product_number}");
    let at = T0 + (step * 1_000_000 + contact) as i64;
    let mut visitor = Visitor {
        sc: Some(format!("cookie-{contact:08x}").into()),
        ..Visitor::default()
    };
    let body = match step {
        0 => {
            visitor.email = Some(format!("person{contact}@example.com").into());
            visitor.name = Some(format!("Person {contact}").into());
            EventBody::CustomerData
        }
        1..=12 => EventBody::ProductPage {
            product: ProductSeen {
                product_key: product.into(),
                price: price_of(product_number, step),
                in_stock: Some(true),
                location: None,
                tags: TagMap::new(),
            },
        },
        13..=16 => EventBody::StatusCart {
            cart: Cart {
                guid: Some(format!("g{contact}-{step}")),
                products: (0..1 + rng.next() % 3)
                    .map(|_| rng.next() % PRODUCTS)
                    .map(|n| CartLine {
                        product_key: format!("p{n}").into(),
                        price: price_of(n, step),
                        discount: None,
                        quantity: 1,
                        tags: TagMap::new(),
                    })
                    .collect(),
            },
        },
        17 => EventBody::AddToWishlist {
            product: ProductSeen {
                product_key: product.into(),
                price: price_of(product_number, step),
                in_stock: Some(true),
                location: None,
                tags: TagMap::new(),
            },
        },
        18 => EventBody::SearchRequest {
            search: Search {
                query: "lamp".into(),
                found: Some(!rng.next().is_multiple_of(4)),
            },
        },
        _ => EventBody::PurchasedItems {
            purchase: Purchase {
                order_number: format!("o{contact}"),
                guid: Some(format!("g{contact}-16")),
                tracked_order_id: None,
                products: vec![OrderLine {
                    product_key: product.into(),
                    unit_price: price_of(product_number, step),
                    quantity: 1,
                    tags: TagMap::new(),
                }],
            },
        },
    };
    StoredRecord {
        sealed: None,
        received_at: at,
        // Each record its own request: a repeated one would be a client's retry.
        request_hash: spoor_protocol::stored::hash_hex(u128::from(
            NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )),
        content: RecordContent::Event(TrackerEvent {
            site_id: "S".into(),
            datetime: Some(at),
            visitor,
            body,
            tags: TagMap::new(),
        }),
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let contacts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let per_contact: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut engine = Engine::default();
    let several_writers = std::env::var_os("SPOOR_BENCH_SEVERAL_WRITERS").is_some_and(|v| v == "1");
    engine.decide_retries(several_writers);
    let before = rss_bytes();
    let live_before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    for step in 0..per_contact {
        for contact in 0..contacts {
            engine.apply(&record(contact, step, &mut rng));
        }
    }
    let apply_seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let live = LIVE_BYTES.load(Ordering::Relaxed) - live_before;

    let site = engine.site("S").expect("the site");
    let lookups = 1_000_000;
    let mut nanos = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let contact = rng.next() % contacts;
        let id = Identifier::Email(format!("person{contact}@example.com").into());
        let start = Instant::now();
        let found = site.contact(&id).map(|c| c.orders.len());
        nanos.push(start.elapsed().as_nanos() as u64);
        assert!(found.is_some());
    }
    nanos.sort_unstable();
    let at = |q: f64| nanos[((nanos.len() - 1) as f64 * q) as usize];
    let counts = site.counts();
    println!(
        "{{\"contacts\": {}, \"events\": {}, \"apply_seconds\": {:.1}, \"events_per_second\": {:.0}, \
         \"rss_growth_bytes\": {}, \"bytes_per_contact\": {:.0}, \"heap_bytes_per_contact\": {:.0}, \
         \"lookup_p50_ns\": {}, \
         \"lookup_p99_ns\": {}, \"products\": {}}}",
        counts.contacts,
        counts.events,
        apply_seconds,
        (contacts * per_contact) as f64 / apply_seconds,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / contacts as f64,
        live as f64 / contacts as f64,
        at(0.5),
        at(0.99),
        counts.products
    );
}
