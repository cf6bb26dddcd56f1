//! What anonymous clients send cannot grow the server's memory without a bound: streams
//! built to inflate each structure an event can grow are posted to the real server, and
//! its resident memory is measured before and after (memory, not time).

mod common;

use common::{Server, client};
use serde_json::{Value, json};

/// Growth of the server's resident memory allowed across all the streams below. With the
/// caps of `spoor_engine::limits` it grew by about 52 MiB (mostly what the allocator keeps
/// of parsing 5 MB batches); with the caps on profile and catalogue fields lifted, by
/// 187 MiB.
const GROWTH_BOUND_MIB: u64 = 96;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn general(event: &str, sc: &str, at: i64) -> Value {
    json!({"eventName": event, "siteId": "S1", "datetime": at, "cookies": {"sc": sc}})
}

/// Posts `events` as batches of `per_batch`, waiting each time until the state has them
/// (so that what is measured is the state, not events queued on their way to it).
async fn post(server: &Server, events: Vec<Value>, per_batch: usize) {
    for batch in events.chunks(per_batch) {
        let response = client()
            .post(server.url("/api/v2/batch"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["rejected"], 0, "{answer}");
        let last = (answer["results"].as_array().unwrap().iter())
            .filter_map(|r| r["position"].as_u64())
            .max()
            .unwrap();
        let (status, _) = common::get(server, &format!("/api/v1/sites/S1?after={last}")).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn adversarial_streams_leave_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let t0 = 1_700_000_000_000i64;
    post(
        &server,
        vec![json!({"GeneralInfo": general("CustomerData", "warm", t0)})],
        1,
    )
    .await;
    let before = resident_kib(server.pid());

    // One visitor, thousands of distinct unknown GeneralInfo fields of nearly 1 KiB each.
    let filler = "x".repeat(900);
    let fields = (0..2_000).map(|i| {
        let mut info = general("CustomerData", "hoarder", t0 + i);
        for j in 0..50 {
            info[format!("user_f{i}_{j}")] = json!(filler);
        }
        json!({"GeneralInfo": info})
    });
    post(&server, fields.collect(), 100).await;

    // One product shown at alternating prices and stock states, each event older than
    // the one before (a history takes every one of them as a change).
    let flapping = (0..5_000).map(|i| {
        let at = t0 + (5_000 - i) * 1_000;
        json!({"GeneralInfo": general("ProductPage", &format!("v{i}"), at),
               "ProductPage": {"Product": {"productKey": "flap", "price": 10 + (i % 2) * 10,
                                           "isInStock": i % 2}}})
    });
    post(&server, flapping.collect(), 500).await;

    // One product given thousands of distinct tags and catalogue fields.
    let tagged = (0..1_000).map(|i| {
        let mut product = json!({"product_id": "tagged"});
        for j in 0..20 {
            product[format!("tag_t{i}_{j}")] = json!(["a", "b", "c"]);
            product[format!("field_{i}_{j}")] = json!(filler);
        }
        json!({"GeneralInfo": general("ProductUpdate", "shop", t0 + i),
               "ProductUpdate": [product]})
    });
    post(&server, tagged.collect(), 100).await;

    // One contact with thousands of orders, and a wishlist of thousands of products.
    let orders = (0..3_000).map(|i| {
        json!({"GeneralInfo": general("PurchasedItems", "buyer", t0 + i),
               "PurchasedItems": {"OrderNumber": format!("o{i}"), "Products": [
                   {"product_id": "mug", "unit_price": "5", "quantity": 1}]}})
    });
    post(&server, orders.collect(), 500).await;
    let wishes = (0..2_000).map(|i| {
        json!({"GeneralInfo": general("AddToWishlist", "buyer", t0 + i),
               "AddToWishlist": {"Product": {"productKey": format!("w{i}"), "price": 1}}})
    });
    post(&server, wishes.collect(), 500).await;

    // A cart of thousands of lines.
    let lines: Vec<Value> = (0..2_000)
        .map(|i| json!({"productKey": format!("l{i}"), "price": 1, "quantity": 1}))
        .collect();
    let cart = json!({"GeneralInfo": general("StatusCart", "carter", t0),
                      "StatusCart": {"GUID": "big", "Products": lines}});
    post(&server, vec![cart], 1).await;

    let after = resident_kib(server.pid());
    let growth_mib = after.saturating_sub(before) / 1024;
    assert!(
        growth_mib < GROWTH_BOUND_MIB,
        "resident memory grew by {growth_mib} MiB ({before} KiB -> {after} KiB)"
    );

    // Each cap held, and what went past it was counted.
    let (_, hoarder) = common::get(&server, "/api/v1/sites/S1/contacts?sc=hoarder").await;
    let held = hoarder["profile"].as_object().map_or(0, |p| p.len());
    assert!(held <= 64 + 8, "{held} profile fields held");
    let (_, buyer) = common::get(&server, "/api/v1/sites/S1/contacts?sc=buyer").await;
    assert_eq!(buyer["orders"].as_object().unwrap().len(), 1_000);
    assert_eq!(buyer["wishlist"].as_object().unwrap().len(), 500);
    let (_, carter) = common::get(&server, "/api/v1/sites/S1/contacts?sc=carter").await;
    assert_eq!(carter["cart"]["lines"].as_array().unwrap().len(), 500);
    let (_, product) = common::get(&server, "/api/v1/sites/S1/products/flap").await;
    assert_eq!(product["priceHistory"].as_array().unwrap().len(), 256);
    assert_eq!(product["stockHistory"].as_array().unwrap().len(), 256);
    let metrics = common::metrics_text(&server).await;
    for reason in [
        "profile_field",
        "history_point",
        "product_tag",
        "product_field",
        "order",
        "wishlist_item",
        "line",
    ] {
        let line = (metrics.lines())
            .find(|l| l.starts_with(&format!("spoor_state_dropped_total{{reason=\"{reason}\"}}")))
            .unwrap_or_else(|| panic!("no count for {reason}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count > 0.0, "{line}");
    }
}
