//! Triggers from events to a real HTTP receiver, with the clock in the test's hands:
//! events are appended to a real log and applied by the engine's follower; `fire_due`
//! and `deliver_due` are called at chosen times.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use spoor_live::LiveState;
use spoor_log::{EventLog, FileLog, FileLogConfig};
use spoor_outgoing::Targets;
use spoor_protocol::stored::{RecordContent, StoredRecord};
use spoor_protocol::{Incoming, parse_value};
use spoor_settings::{TriggerRegistry, TriggerSettings, TuningRegistry};
use spoor_triggers::outbox::DeliveryStatus;
use spoor_triggers::{Outbox, Triggers, signature};

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const SECRET: &str = "test-secret-0123456789";

/// What the receiver saw, and how it answers: `fail_first` attempts get `fail_with`,
/// each answer after `delay`.
#[derive(Default)]
struct Receiver {
    seen: Vec<(HeaderMap, Bytes)>,
    fail_first: usize,
    fail_with: u16,
    delay: Duration,
}

async fn receive(
    State(receiver): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (status, delay) = {
        let mut receiver = receiver.lock().unwrap();
        receiver.seen.push((headers, body));
        let status = if receiver.seen.len() <= receiver.fail_first {
            StatusCode::from_u16(receiver.fail_with).unwrap()
        } else {
            StatusCode::OK
        };
        (status, receiver.delay)
    };
    tokio::time::sleep(delay).await;
    status
}

async fn start_receiver(fail_first: usize, fail_with: u16) -> (String, Arc<Mutex<Receiver>>) {
    let receiver = Arc::new(Mutex::new(Receiver {
        fail_first,
        fail_with,
        ..Receiver::default()
    }));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

struct Shop {
    dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    live: Arc<LiveState>,
    settings: Arc<TriggerRegistry>,
    records: u64,
}

impl Shop {
    fn open(url: &str, extra: Value) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(
            FileLog::open(&dir.path().join("log"), FileLogConfig::default(), None).unwrap(),
        );
        let live = Arc::new(LiveState::default());
        spoor_live::follow(log.clone(), live.clone()).unwrap();
        let settings = Arc::new(TriggerRegistry::open(dir.path()).unwrap());
        let mut config = json!({"webhooks": [{"id": "crm", "url": url, "secret": SECRET,
                                             "firstRetrySeconds": 1, "maxAttempts": 3}]});
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        let config: TriggerSettings = serde_json::from_value(config).unwrap();
        settings.set("S", config).unwrap();
        Shop {
            dir,
            log,
            live,
            settings,
            records: 0,
        }
    }

    fn triggers(&self) -> Triggers {
        self.triggers_for(Targets {
            allow_private: true,
        })
    }

    fn triggers_for(&self, targets: Targets) -> Triggers {
        let outbox = Outbox::open(&self.dir.path().join("outbox")).unwrap();
        self.triggers_with(self.live.clone(), outbox, targets)
    }

    fn triggers_with(&self, live: Arc<LiveState>, outbox: Outbox, targets: Targets) -> Triggers {
        let tuning = Arc::new(TuningRegistry::open(self.dir.path()).unwrap());
        Triggers::new(
            live,
            self.settings.clone(),
            tuning,
            Arc::new(outbox),
            targets,
        )
        .unwrap()
    }

    /// The topic a shared outbox is on, as the engine nodes of a Kafka log share one.
    fn outbox_topic(&self) -> Arc<dyn EventLog> {
        let dir = self.dir.path().join("outbox-topic");
        Arc::new(FileLog::open(&dir, FileLogConfig::default(), None).unwrap())
    }

    /// Another engine node's state, following the same log, once it has every event.
    async fn second_state(&self) -> Arc<LiveState> {
        let live = Arc::new(LiveState::default());
        spoor_live::follow(self.log.clone(), live.clone()).unwrap();
        while live.applied() < self.records {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        live
    }

    /// Appends an event (tracker JSON) and waits until the state has it.
    async fn post(&mut self, body: Value) {
        // Received "later": events of the days after T0 are not in the future.
        let Incoming::Event(event) = parse_value(&body, T0 + 30 * 24 * 60 * MINUTE).unwrap() else {
            panic!("not an event")
        };
        self.records += 1;
        let record = StoredRecord {
            sealed: None,
            received_at: event.datetime.unwrap_or(T0),
            request_hash: format!("{:032x}", self.records),
            content: RecordContent::Event(event),
        };
        self.log
            .append(vec![serde_json::to_vec(&record).unwrap()])
            .await
            .unwrap();
        while self.live.applied() < self.records {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn general(event: &str, sc: &str, at: i64, email: Option<&str>) -> Value {
    let mut info =
        json!({"eventName": event, "siteId": "S", "datetime": T0 + at, "cookies": {"sc": sc}});
    if let Some(email) = email {
        info["user_email"] = email.into();
    }
    info
}

fn cart(sc: &str, at: i64, email: Option<&str>) -> Value {
    json!({"GeneralInfo": general("StatusCart", sc, at, email),
           "StatusCart": {"GUID": format!("g-{sc}"), "Products": [
               {"productKey": "mug", "price": "12.5", "quantity": 2}]}})
}

fn purchase(sc: &str, at: i64) -> Value {
    json!({"GeneralInfo": general("PurchasedItems", sc, at, None),
           "PurchasedItems": {"OrderNumber": format!("o-{sc}-{at}"), "Products": [
               {"product_id": "mug", "unit_price": "12.5", "quantity": 2}]}})
}

fn view(sc: &str, at: i64, email: Option<&str>) -> Value {
    json!({"GeneralInfo": general("ProductPage", sc, at, email),
           "ProductPage": {"Product": {"productKey": "lamp", "price": "40"}}})
}

#[tokio::test]
async fn an_abandoned_cart_is_delivered_signed_through_failures_and_a_restart() {
    let (url, receiver) = start_receiver(2, 503).await;
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("ann", 0, Some("ann@example.com"))).await;
    // Bob buys what he put in his cart: no trigger for him.
    shop.post(cart("bob", 0, Some("bob@example.com"))).await;
    shop.post(purchase("bob", 5 * MINUTE)).await;

    let triggers = shop.triggers();
    assert_eq!(triggers.fire_due(T0 + 59 * MINUTE).await.unwrap(), 0);
    let now = T0 + 60 * MINUTE;
    assert_eq!(triggers.fire_due(now).await.unwrap(), 1);
    assert_eq!(triggers.fire_due(now).await.unwrap(), 0, "fired once");

    // First attempt: 503, retried about a second later.
    assert_eq!(triggers.deliver_due(now).await.unwrap(), 1);
    assert_eq!(triggers.deliver_due(now + 500).await.unwrap(), 0, "not yet");
    assert_eq!(triggers.deliver_due(now + 1_300).await.unwrap(), 1);
    assert_eq!(receiver.lock().unwrap().seen.len(), 2);

    // spoor restarts in the middle of the retries: the outbox still owes the delivery.
    drop(triggers);
    let triggers = shop.triggers();
    assert_eq!(
        triggers.fire_due(now + 5_000).await.unwrap(),
        0,
        "not fired again"
    );
    assert_eq!(triggers.deliver_due(now + 5_000).await.unwrap(), 1);
    assert_eq!(
        triggers.deliver_due(now + 60_000).await.unwrap(),
        0,
        "delivered: done"
    );

    let seen = std::mem::take(&mut receiver.lock().unwrap().seen);
    assert_eq!(seen.len(), 3);
    let keys: Vec<&str> = seen
        .iter()
        .map(|(h, _)| h["idempotency-key"].to_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one idempotency key: {keys:?}"
    );
    let (headers, body) = &seen[2];
    let signed = headers[signature::HEADER].to_str().unwrap();
    assert!(signature::verify(
        SECRET,
        signed,
        body,
        (now + 5_000) / 1000,
        300
    ));
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["type"], "abandoned-cart");
    assert_eq!(payload["contact"]["email"], "ann@example.com");
    assert_eq!(payload["products"][0]["product_id"], "mug");
    assert_eq!(payload["products"][0]["quantity"], 2);
    assert_eq!(payload["products"][0]["unit_price"], "12.5");

    // The follow-up comes a day after the cart, unless the cart changes first.
    assert_eq!(triggers.fire_due(T0 + 24 * 60 * MINUTE).await.unwrap(), 1);
    let listed = triggers
        .outbox()
        .list("S", Some(DeliveryStatus::Pending), 10);
    assert_eq!(listed[0].fired.step, 1);
}

#[tokio::test]
async fn failing_receivers_fill_the_dead_letters_which_replay() {
    let (url, receiver) = start_receiver(usize::MAX, 500).await;
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("cat", 0, Some("cat@example.com"))).await;
    let triggers = shop.triggers();
    let now = T0 + 60 * MINUTE;
    triggers.fire_due(now).await.unwrap();
    for later in [0, 1_300, 4_000] {
        triggers.deliver_due(now + later).await.unwrap();
    }
    assert_eq!(receiver.lock().unwrap().seen.len(), 3, "maxAttempts is 3");
    let dead = triggers.outbox().list("S", Some(DeliveryStatus::Dead), 10);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].deliveries["crm"].last_outcome.as_deref(),
        Some("HTTP 500")
    );
    assert!(
        triggers
            .outbox()
            .replay(&dead[0].fired.id, "crm", now + 10_000)
            .await
            .unwrap()
    );
    assert_eq!(triggers.deliver_due(now + 10_000).await.unwrap(), 1);
}

#[tokio::test]
async fn anonymous_visitors_wait_for_an_email_and_caps_and_purchases_hold_back() {
    let (url, receiver) = start_receiver(0, 200).await;
    let mut shop = Shop::open(&url, json!({}));
    // Dan browses without being known; he leaves his email two hours later.
    shop.post(view("dan", 0, None)).await;
    // Eve browsed too, but bought something yesterday: no browse message for her.
    shop.post(purchase("eve", -24 * 60 * MINUTE)).await;
    shop.post(view("eve", 0, Some("eve@example.com"))).await;
    let triggers = shop.triggers();
    assert_eq!(triggers.fire_due(T0 + 30 * MINUTE).await.unwrap(), 0);
    shop.post(json!({"GeneralInfo": general("CustomerData", "dan", 120 * MINUTE, Some("dan@example.com"))}))
        .await;
    assert_eq!(triggers.fire_due(T0 + 121 * MINUTE).await.unwrap(), 1);
    triggers.deliver_due(T0 + 121 * MINUTE).await.unwrap();
    let body: Value = serde_json::from_slice(&receiver.lock().unwrap().seen[0].1).unwrap();
    assert_eq!(body["type"], "abandoned-browse");
    assert_eq!(body["contact"]["email"], "dan@example.com");

    // Dan browses again an hour later: within the day's cap, so no second message.
    shop.post(view("dan", 180 * MINUTE, None)).await;
    assert_eq!(triggers.fire_due(T0 + 211 * MINUTE).await.unwrap(), 0);
    // The next day he may get one again.
    shop.post(view("dan", 26 * 60 * MINUTE, None)).await;
    assert_eq!(triggers.fire_due(T0 + 27 * 60 * MINUTE).await.unwrap(), 1);
}

#[tokio::test]
async fn price_drops_past_the_threshold_and_wishlists_are_told() {
    let (url, receiver) = start_receiver(0, 200).await;
    let mut shop = Shop::open(
        &url,
        json!({"abandonedBrowse": {"enabled": false, "delaysMinutes": [30]}}),
    );
    shop.post(
        json!({"GeneralInfo": general("ProductPage", "ann", 0, Some("ann@example.com")),
                     "ProductPage": {"Product": {"productKey": "lamp", "price": "40"}}}),
    )
    .await;
    let price = |amount: &str, at: i64| {
        json!({"GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S", "datetime": T0 + at},
               "ProductUpdate": [{"product_id": "lamp", "name": "Lamp", "unit_price": amount}]})
    };
    let triggers = shop.triggers();
    // 2.5% off: below the 5% threshold.
    shop.post(price("39", MINUTE)).await;
    assert_eq!(triggers.fire_due(T0 + 2 * MINUTE).await.unwrap(), 0);
    shop.post(price("30", 3 * MINUTE)).await;
    assert_eq!(triggers.fire_due(T0 + 4 * MINUTE).await.unwrap(), 1);
    triggers.deliver_due(T0 + 4 * MINUTE).await.unwrap();
    let body: Value = serde_json::from_slice(&receiver.lock().unwrap().seen[0].1).unwrap();
    assert_eq!(body["type"], "price-drop");
    assert_eq!(body["products"][0]["product_id"], "lamp");
    assert_eq!(body["products"][0]["unit_price"], "30");
    assert_eq!(body["products"][0]["old_price"], "40");

    // A wishlist add is recalled after three days.
    shop.post(
        json!({"GeneralInfo": general("AddToWishlist", "bob", 0, Some("bob@example.com")),
                     "AddToWishlist": {"Product": {"productKey": "vase", "price": "15"}}}),
    )
    .await;
    assert_eq!(triggers.fire_due(T0 + 71 * 60 * MINUTE).await.unwrap(), 0);
    assert_eq!(triggers.fire_due(T0 + 72 * 60 * MINUTE).await.unwrap(), 1);
    triggers.deliver_due(T0 + 72 * 60 * MINUTE).await.unwrap();
    let body: Value = serde_json::from_slice(&receiver.lock().unwrap().seen[1].1).unwrap();
    assert_eq!(body["type"], "wishlist-reminder");
    assert_eq!(body["products"][0]["product_id"], "vase");
}

/// The outcome of the one trigger's last delivery attempt.
fn last_outcome(triggers: &Triggers) -> String {
    let listed = triggers.outbox().list("S", None, 10);
    let delivery = &listed[0].deliveries["crm"];
    delivery.last_outcome.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_webhook_whose_host_is_private_by_the_time_it_is_called_gets_nothing() {
    let strict = Targets {
        allow_private: false,
    };
    let (url, receiver) = start_receiver(0, 200).await;
    // The URL was allowed when it was set (say the name resolved elsewhere then): it is
    // judged again at each call, as an address and as a name.
    let by_name = url.replace("127.0.0.1", "localhost");
    for hook in [url, by_name] {
        let mut shop = Shop::open(&hook, json!({}));
        shop.post(cart("eve", 0, Some("eve@example.com"))).await;
        let triggers = shop.triggers_for(strict);
        let now = T0 + 60 * MINUTE;
        triggers.fire_due(now).await.unwrap();
        triggers.deliver_due(now).await.unwrap();
        let outcome = last_outcome(&triggers);
        assert!(
            outcome.contains("--allow-private-targets"),
            "{hook}: {outcome}"
        );
    }
    assert!(receiver.lock().unwrap().seen.is_empty());
}

#[tokio::test]
async fn redirects_are_followed_a_few_times_only() {
    // A receiver that sends every request on to itself.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(0usize));
    let (target, counted) = (url.clone(), hits.clone());
    let app = Router::new().route(
        "/hook",
        post(move || {
            *counted.lock().unwrap() += 1;
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", target)]) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("rex", 0, Some("rex@example.com"))).await;
    let triggers = shop.triggers();
    let now = T0 + 60 * MINUTE;
    triggers.fire_due(now).await.unwrap();
    triggers.deliver_due(now).await.unwrap();
    let outcome = last_outcome(&triggers);
    assert!(outcome.contains("redirects"), "{outcome}");
    assert_eq!(*hits.lock().unwrap(), 1 + spoor_outgoing::MAX_REDIRECTS);
}

#[tokio::test]
async fn a_stop_waits_for_the_batch_in_flight_not_for_the_backlog() {
    let (url, receiver) = start_receiver(0, 200).await;
    receiver.lock().unwrap().delay = Duration::from_millis(300);
    let mut shop = Shop::open(&url, json!({}));
    let carts = 150;
    for n in 0..carts {
        let (sc, email) = (format!("c{n}"), format!("c{n}@example.com"));
        shop.post(cart(&sc, 0, Some(&email))).await;
    }
    let triggers = Arc::new(shop.triggers());
    let stop = Arc::new(AtomicBool::new(false));
    fn an_hour_later() -> i64 {
        T0 + 60 * MINUTE
    }
    let running = tokio::spawn(triggers.clone().run(stop.clone(), an_hour_later));
    while receiver.lock().unwrap().seen.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Release);
    running.await.unwrap();

    let sent = receiver.lock().unwrap().seen.len();
    assert!(
        sent > 0 && sent < carts,
        "one batch sent, not the backlog: {sent}"
    );
    let owed = triggers
        .outbox()
        .list("S", Some(DeliveryStatus::Pending), 1000);
    assert_eq!(owed.len(), carts - sent, "the rest still owed");
}

#[tokio::test]
async fn a_node_taking_over_follows_up_what_the_last_sender_fired_and_fires_nothing_twice() {
    let (url, receiver) = start_receiver(0, 200).await;
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("ann", 0, Some("ann@example.com"))).await;
    // Two engine nodes of one shared log: their own states, one outbox topic.
    let topic = shop.outbox_topic();
    let keys = keyring_knowing(&["ann@example.com"]).await;
    let node = |live: Arc<LiveState>| {
        let outbox = Outbox::open_shared(topic.clone(), keys.clone()).unwrap();
        shop.triggers_with(
            live,
            outbox,
            Targets {
                allow_private: true,
            },
        )
    };
    let first = node(shop.live.clone());
    let second = node(shop.second_state().await);
    let now = T0 + 60 * MINUTE;
    assert!(first.outbox().take_turn(now).await.unwrap());
    assert!(!second.outbox().take_turn(now).await.unwrap());
    assert_eq!(first.fire_due(now).await.unwrap(), 1);
    assert_eq!(first.deliver_due(now).await.unwrap(), 1);

    // The first node dies; once its lease has lapsed the second sends. The cart's first
    // message is not fired again (the frequency cap would also have held it back, and
    // with it the follow-up): it is followed up, a day after the cart.
    let later = now + 20_000;
    assert!(second.outbox().take_turn(later).await.unwrap());
    second.fire_due(later).await.unwrap();
    assert_eq!(second.outbox().len(), 1, "fired once");
    assert_eq!(
        second.deliver_due(later).await.unwrap(),
        0,
        "delivered once"
    );
    let next_day = T0 + 24 * 60 * MINUTE;
    assert!(second.outbox().take_turn(next_day).await.unwrap());
    assert_eq!(second.fire_due(next_day).await.unwrap(), 1);
    assert_eq!(second.deliver_due(next_day).await.unwrap(), 1);
    let seen = &receiver.lock().unwrap().seen;
    let steps: Vec<(String, String)> = (seen.iter())
        .map(|(headers, body)| {
            let body: Value = serde_json::from_slice(body).unwrap();
            let key = headers["idempotency-key"].to_str().unwrap().to_string();
            (key, body["step"].to_string())
        })
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_ne!(steps[0].0, steps[1].0, "two triggers: {steps:?}");
}

/// The keys of a shared log, with the keys of `emails` (whose events were sealed) held.
async fn keyring_knowing(emails: &[&str]) -> Arc<spoor_log::Keyring> {
    let keys = spoor_log::Keyring::open(Arc::new(spoor_log::MemoryTable::default())).unwrap();
    for email in emails {
        let id = spoor_protocol::identity::Identifier::Email((*email).into());
        let key = keys.key_for(&spoor_protocol::sealing::key_name("S", &id));
        if let Some(storing) = key.storing {
            storing.wait().await.unwrap();
            keys.settle(&key.id, true);
        }
    }
    keys
}

/// The real log, whose appends fail while `down` is set, as a topic's do while its
/// brokers are out of reach.
struct Unreachable {
    log: FileLog,
    down: AtomicBool,
}

impl EventLog for Unreachable {
    fn append(&self, records: Vec<Vec<u8>>) -> spoor_log::AppendFuture {
        if self.down.load(Ordering::SeqCst) {
            let error = spoor_log::LogError::Unavailable("the brokers are down".into());
            return Box::pin(std::future::ready(Err(error)));
        }
        self.log.append(records)
    }

    fn reader(
        &self,
        from: spoor_log::Position,
    ) -> Result<Box<dyn spoor_log::LogReader>, spoor_log::LogError> {
        self.log.reader(from)
    }

    fn end(&self) -> spoor_log::Position {
        self.log.end()
    }
}

#[tokio::test]
async fn a_trigger_whose_record_cannot_be_stored_fires_at_a_later_turn() {
    let (url, receiver) = start_receiver(0, 200).await;
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("ann", 0, Some("ann@example.com"))).await;
    let topic = Arc::new(Unreachable {
        log: FileLog::open(
            &shop.dir.path().join("outbox-topic"),
            FileLogConfig::default(),
            None,
        )
        .unwrap(),
        down: AtomicBool::new(false),
    });
    let keys = keyring_knowing(&["ann@example.com"]).await;
    let outbox = Outbox::open_shared(topic.clone(), keys).unwrap();
    let triggers = shop.triggers_with(
        shop.live.clone(),
        outbox,
        Targets {
            allow_private: true,
        },
    );
    let now = T0 + 60 * MINUTE;
    assert!(triggers.outbox().take_turn(now).await.unwrap());
    topic.down.store(true, Ordering::SeqCst);
    assert!(triggers.fire_due(now).await.is_err());
    assert!(triggers.outbox().is_empty());
    // The brokers are back: the trigger taken out of the state was put back, and fires.
    topic.down.store(false, Ordering::SeqCst);
    assert!(triggers.outbox().take_turn(now + 1_000).await.unwrap());
    assert_eq!(triggers.fire_due(now + 1_000).await.unwrap(), 1);
    assert_eq!(triggers.deliver_due(now + 1_000).await.unwrap(), 1);
    assert_eq!(receiver.lock().unwrap().seen.len(), 1);
}

static SECOND_NODES_CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn second_nodes_clock() -> i64 {
    SECOND_NODES_CLOCK.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_node_that_does_not_send_keeps_what_the_sender_keeps_of_its_due_timers() {
    let (url, _receiver) = start_receiver(0, 200).await;
    let mut shop = Shop::open(&url, json!({}));
    shop.post(cart("ann", 0, Some("ann@example.com"))).await;
    // Dan browses without being known; Bob's cart comes due after the sender's turn.
    shop.post(view("dan", 0, None)).await;
    shop.post(cart("bob", 5 * MINUTE, Some("bob@example.com")))
        .await;
    let topic = shop.outbox_topic();
    let keys = keyring_knowing(&["ann@example.com", "bob@example.com"]).await;
    let node = |live: Arc<LiveState>| {
        let outbox = Outbox::open_shared(topic.clone(), keys.clone()).unwrap();
        Arc::new(shop.triggers_with(
            live,
            outbox,
            Targets {
                allow_private: true,
            },
        ))
    };
    let sender = node(shop.live.clone());
    let second_state = shop.second_state().await;
    let second = node(second_state.clone());
    let now = T0 + 60 * MINUTE;
    assert!(sender.outbox().take_turn(now).await.unwrap());
    assert_eq!(sender.fire_due(now).await.unwrap(), 1, "Ann's cart");

    // The other node's loop, ten minutes on (the sender renewed its lease, but has not
    // fired since): it does not send, and settles its due timers as the sender judges
    // them.
    let later = now + 10 * MINUTE;
    assert!(sender.outbox().take_turn(later).await.unwrap(), "renewed");
    SECOND_NODES_CLOCK.store(later, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(second.clone().run(stop.clone(), second_nodes_clock));
    let timers = || {
        second_state
            .read()
            .site("S")
            .unwrap()
            .timers()
            .to_snapshot()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while timers().awaiting.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    running.await.unwrap();
    assert!(!second.outbox().sends());
    let timers = timers();
    let mut waiting: Vec<(String, u8, i64)> = (timers.pending.iter())
        .map(|p| (p.kind.name().to_string(), p.step, p.anchor))
        .collect();
    waiting.sort();
    assert_eq!(
        waiting,
        [
            ("abandoned-cart".to_string(), 0, T0 + 5 * MINUTE),
            ("abandoned-cart".to_string(), 1, T0)
        ],
        "Bob's cart kept for the sender, Ann's followed up"
    );
    assert_eq!(timers.awaiting.len(), 1, "Dan's browse waits for his email");
    assert_eq!(second.outbox().len(), 1, "nothing fired by the other node");
}
