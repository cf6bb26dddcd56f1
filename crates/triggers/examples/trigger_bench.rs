//! Triggers at scale: N contacts with an abandoned cart each (a pending timer), their
//! memory, how fast due timers are evaluated and recorded, and how many webhooks per
//! second the delivery path sends to a local receiver.
//!
//! `cargo run --release -p spoor-triggers --example trigger_bench -- 1000000 20000`
//! (contacts, deliveries to send).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use spoor_live::LiveState;
use spoor_log::{EventLog, FileLog, FileLogConfig};
use spoor_protocol::stored::{RecordContent, StoredRecord};
use spoor_protocol::{Cart, CartLine, EventBody, Price, TrackerEvent, Visitor};
use spoor_settings::{TriggerRegistry, TriggerSettings};
use spoor_triggers::{Outbox, Triggers};

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cart_record(i: u64) -> Vec<u8> {
    let event = TrackerEvent {
        site_id: "S".into(),
        datetime: Some(T0 + i as i64),
        visitor: Visitor {
            sc: Some(format!("c{i}").into()),
            email: Some(format!("c{i}@shop.example").into()),
            ..Visitor::default()
        },
        body: EventBody::StatusCart {
            cart: Cart {
                guid: Some(format!("g{i}")),
                products: vec![CartLine {
                    product_key: format!("p{}", i % 50_000).into(),
                    price: Price {
                        amount: rust_decimal::Decimal::new(1999, 2),
                        currency: Some("EUR".into()),
                    },
                    discount: None,
                    quantity: 1,
                    tags: Default::default(),
                }],
            },
        },
        tags: Default::default(),
    };
    let record = StoredRecord {
        sealed: None,
        received_at: T0 + i as i64,
        request_hash: format!("{i:032x}"),
        content: RecordContent::Event(event),
    };
    serde_json::to_vec(&record).expect("records serialise")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let contacts: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let deliveries: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;

    // The receiver: answers 200 to everything, counting.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let log: Arc<dyn EventLog> = Arc::new(FileLog::open(
        &dir.path().join("log"),
        FileLogConfig::default(),
        None,
    )?);
    let mut next = 0;
    while next < contacts {
        let end = (next + 20_000).min(contacts);
        log.append((next..end).map(cart_record).collect()).await?;
        next = end;
    }
    let before = resident_mib();
    let live = Arc::new(LiveState::default());
    let follower = spoor_live::follow(log.clone(), live.clone())?;
    while live.applied() < contacts {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state_mib = resident_mib() - before;
    let pending = live.read().site("S").map_or(0, |s| s.timers().len());

    let settings = Arc::new(TriggerRegistry::open(dir.path())?);
    let config: TriggerSettings = serde_json::from_value(serde_json::json!({
        "webhooks": [{"id": "bench", "url": url, "secret": "bench-secret-0123456789"}]
    }))?;
    settings.set("S", config)?;
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"))?);
    let tuning = Arc::new(spoor_settings::TuningRegistry::open(dir.path())?);
    let triggers = Triggers::new(
        live.clone(),
        settings,
        tuning,
        outbox,
        spoor_outgoing::Targets {
            allow_private: true,
        },
    )?;

    let now = T0 + contacts as i64 + 2 * HOUR;
    let started = Instant::now();
    let fired = triggers.fire_due(now).await?;
    let fire_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut sent = 0;
    while sent < deliveries {
        let batch = triggers
            .deliver_some(now, (deliveries - sent).min(1_000))
            .await?;
        if batch == 0 {
            break;
        }
        sent += batch;
    }
    let deliver_s = started.elapsed().as_secs_f64();
    live.stop();
    let _ = follower.join();
    println!(
        "{{\"contacts\": {contacts}, \"pending_timers\": {pending}, \"state_mib\": {state_mib:.0}, \
         \"bytes_per_contact\": {:.0}, \"fired\": {fired}, \"fire_s\": {fire_s:.2}, \
         \"fired_per_s\": {:.0}, \"delivered\": {}, \"deliver_s\": {deliver_s:.2}, \
         \"webhooks_per_s\": {:.0}}}",
        state_mib * 1024.0 * 1024.0 / contacts as f64,
        fired as f64 / fire_s,
        received.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed) as f64 / deliver_s,
    );
    Ok(())
}
