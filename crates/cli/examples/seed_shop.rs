//! A synthetic shop for the recommendations benchmark, written straight into a data
//! directory as a running server would have stored it, with the state and duplicate-index
//! snapshots of a clean stop, so that `spoor serve --data DIR` is ready in seconds.
//!
//! The shop: `products` products in 500 categories of a hundred brands (ProductUpdate);
//! `contacts` visitors, each viewing one to six products of a category they favour,
//! popular categories and products more often (Zipf-like); one in ten buys one to three of
//! them (a cart, then the order). Every event lies in the 30 days before now.
//!
//! `cargo run --release -p spoor --example seed_shop -- DIR [contacts] [products]`
//! (defaults: 1,000,000 contacts, 50,000 products; site id `BENCH`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rust_decimal::Decimal;
use spoor_ingest::Ingestor;
use spoor_live::LiveState;
use spoor_log::{EventLog, FileLog, FileLogConfig};
use spoor_protocol::stored::{RecordContent, StoredRecord};
use spoor_protocol::{
    Cart, CartLine, EventBody, OrderLine, Price, ProductSeen, ProductUpdate, Purchase,
    TrackerEvent, Visitor,
};
use spoor_server::directory::RegisteredSites;
use spoor_settings::SiteRegistry;

const SITE: &str = "BENCH";
const CATEGORIES: u64 = 500;
const BRANDS: u64 = 100;
const DAY_MS: i64 = 86_400_000;
const RECORDS_PER_APPEND: usize = 20_000;

/// A small deterministic generator (xorshift64*): the same shop on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed towards 0 in `0..n`: the square of a uniform draw, so the first tenth gets
    /// about a third of the draws.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u) * n as f64) as u64
    }
}

struct Shop {
    products: u64,
    start: i64,
    random: Random,
    records: u64,
}

impl Shop {
    fn record(&mut self, at: i64, visitor: Visitor, body: EventBody) -> Vec<u8> {
        self.records += 1;
        let record = StoredRecord {
            sealed: None,
            received_at: at,
            request_hash: format!("{:032x}", self.records),
            content: RecordContent::Event(TrackerEvent {
                site_id: SITE.into(),
                datetime: Some(at),
                visitor,
                body,
                tags: Default::default(),
            }),
        };
        serde_json::to_vec(&record).expect("records serialise")
    }

    fn price(product: u64) -> Price {
        Price {
            amount: Decimal::new(500 + (product * 7919 % 20_000) as i64, 2),
            currency: Some("EUR".into()),
        }
    }

    fn catalogue(&mut self) -> Vec<Vec<u8>> {
        let per_category = self.products.div_ceil(CATEGORIES);
        let mut records = Vec::new();
        let keys: Vec<u64> = (0..self.products).collect();
        for chunk in keys.chunks(100) {
            let updates = chunk
                .iter()
                .map(|p| {
                    let category = p / per_category;
                    ProductUpdate {
                        product_key: format!("p{p}").into(),
                        name: Some(format!("Product {p}")),
                        brand: Some(format!("Brand {}", p % BRANDS)),
                        url: Some(format!("https://shop.example/p/{p}")),
                        image_url: Some(format!("https://shop.example/img/{p}.jpg")),
                        price: Some(Shop::price(*p)),
                        in_stock: Some(p % 50 != 0),
                        category: Some(format!(
                            "Department {} > Category {category}",
                            category / 20
                        )),
                        category_ids: Some(vec![format!("c{category}").into()]),
                        ..ProductUpdate::default()
                    }
                })
                .collect();
            let at = self.start - DAY_MS;
            records.push(self.record(
                at,
                Visitor::default(),
                EventBody::ProductUpdate { products: updates },
            ));
        }
        records
    }

    /// A product of `category`, popular ones more often.
    fn product_in(&mut self, category: u64) -> u64 {
        let per_category = self.products.div_ceil(CATEGORIES);
        (category * per_category + self.random.skewed(per_category)).min(self.products - 1)
    }

    fn visitor(&mut self, contact: u64) -> Vec<Vec<u8>> {
        let visitor = Visitor {
            sc: Some(format!("c{contact}").into()),
            ..Visitor::default()
        };
        let category = self.random.skewed(CATEGORIES);
        let mut at = self.start + self.random.below(29 * DAY_MS as u64) as i64;
        let views = 1 + self.random.below(6);
        let mut seen = Vec::new();
        let mut records = Vec::new();
        for _ in 0..views {
            let product = self.product_in(category);
            seen.push(product);
            at += 20_000 + self.random.below(100_000) as i64;
            let body = EventBody::ProductPage {
                product: ProductSeen {
                    product_key: format!("p{product}").into(),
                    price: Shop::price(product),
                    in_stock: Some(true),
                    location: None,
                    tags: Default::default(),
                },
            };
            records.push(self.record(at, visitor.clone(), body));
        }
        if contact.is_multiple_of(10) {
            seen.sort_unstable();
            seen.dedup();
            seen.truncate(3);
            let lines = |p: &u64| (format!("p{p}"), Shop::price(*p));
            at += 60_000;
            let cart = Cart {
                guid: Some(format!("cart-{contact}")),
                products: seen
                    .iter()
                    .map(lines)
                    .map(|(product_key, price)| CartLine {
                        product_key: product_key.into(),
                        price,
                        discount: None,
                        quantity: 1,
                        tags: Default::default(),
                    })
                    .collect(),
            };
            records.push(self.record(at, visitor.clone(), EventBody::StatusCart { cart }));
            at += 60_000;
            let purchase = Purchase {
                order_number: format!("o{contact}"),
                guid: Some(format!("cart-{contact}")),
                tracked_order_id: None,
                products: seen
                    .iter()
                    .map(lines)
                    .map(|(product_key, unit_price)| OrderLine {
                        product_key: product_key.into(),
                        unit_price,
                        quantity: 1,
                        tags: Default::default(),
                    })
                    .collect(),
            };
            records.push(self.record(at, visitor, EventBody::PurchasedItems { purchase }));
        }
        records
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: seed_shop DIR [contacts] [products]")?,
    );
    let contacts: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let products: u64 = args.next().map_or(Ok(50_000), |a| a.parse())?;
    anyhow::ensure!(
        !dir.join("log").exists(),
        "{} holds a log already: seed an empty directory",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let mut shop = Shop {
        products,
        start: now - 30 * DAY_MS,
        random: Random(0x5eed_5eed_5eed_5eed),
        records: 0,
    };
    let log = Arc::new(FileLog::open(
        &dir.join("log"),
        FileLogConfig::default(),
        None,
    )?);
    log.append(shop.catalogue()).await?;
    let mut pending = Vec::with_capacity(RECORDS_PER_APPEND);
    for contact in 0..contacts {
        pending.extend(shop.visitor(contact));
        if pending.len() >= RECORDS_PER_APPEND {
            log.append(std::mem::take(&mut pending)).await?;
        }
    }
    if !pending.is_empty() {
        log.append(pending).await?;
    }
    let written = started.elapsed().as_secs_f64();
    let records = log.end();

    // The state and the duplicate index, saved as a clean stop saves them.
    let log: Arc<dyn EventLog> = log;
    let sites = SiteRegistry::open(&dir)?;
    sites.register(Some(SITE), Some("Benchmark shop"), now)?;
    let ingestor = Ingestor::open(log.clone(), Arc::new(RegisteredSites(Arc::new(sites))), now)?;
    ingestor.save_index(&dir.join("dedup.snapshot"))?;
    let live = Arc::new(LiveState::default());
    let follower = spoor_live::follow(log.clone(), live.clone())?;
    while live.applied() < records {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let applied = started.elapsed().as_secs_f64() - written;
    spoor_live::snapshot::save(&live.read(), live.applied(), &dir.join("state.snapshot"))?;
    live.stop();
    let _ = follower.join();
    println!(
        "{{\"contacts\": {contacts}, \"products\": {products}, \"records\": {records}, \
         \"write_s\": {written:.1}, \"apply_s\": {applied:.1}, \"total_s\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
