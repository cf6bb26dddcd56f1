//! The state derived from the log, read through the real server: contacts joined across
//! identifiers, carts, orders and products; the same after a restart rebuilds it.

mod common;

use common::{ADMIN_TOKEN, Server, client, get, post_json};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn info(event: &str, at: i64, ids: Value) -> Value {
    let mut info = json!({"eventName": event, "siteId": "S1", "datetime": T0 + at});
    for (k, v) in ids.as_object().unwrap() {
        info[k] = v.clone();
    }
    info
}

fn events() -> Vec<Value> {
    vec![
        // Dated before the page view: the price the page then shows is the later one.
        json!({"GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S1", "datetime": T0},
               "ProductUpdate": [{"product_id": "mug", "name": "Mug", "unit_price": "12", "isInStock": 1,
                                  "url": "https://shop.example/mug", "category": "Home > Kitchen"}]}),
        json!({"GeneralInfo": info("ProductPage", 1, json!({"cookies": {"sc": "anon-1"}})),
               "ProductPage": {"Product": {"productKey": "mug", "price": "10 EUR", "isInStock": "1"}}}),
        json!({"GeneralInfo": info("StatusCart", 2, json!({"cookies": {"sc": "anon-1"}})),
               "StatusCart": {"GUID": "cart-1", "Products": [{"productKey": "mug", "price": 10, "quantity": 2}]}}),
        json!({"GeneralInfo": info("CustomerData", 3, json!({"cookies": {"sc": "anon-1"},
               "user_email": " Olena@Example.com ", "user_name": "Olena"}))}),
        json!({"GeneralInfo": info("PurchasedItems", 4, json!({"user_email": "olena@example.com"})),
               "PurchasedItems": {"OrderNumber": "1001", "GUID": "cart-1",
                                  "Products": [{"product_id": "mug", "unit_price": "10", "quantity": 2}]}}),
    ]
}

#[tokio::test]
async fn events_become_state_and_a_restart_rebuilds_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["S1"]);
    let mut last = 0;
    for event in events() {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        last = answer["position"].as_u64().unwrap();
    }

    let by_email = format!("/api/v1/sites/S1/contacts?email=OLENA@example.com&after={last}");
    let (status, olena) = get(&server, &by_email).await;
    assert_eq!(status, 200, "{olena}");
    assert_eq!(olena["identifiers"]["email"], "olena@example.com");
    assert_eq!(olena["identifiers"]["cookies"], json!(["anon-1"]));
    assert_eq!(olena["profile"]["name"]["value"], "Olena");
    assert_eq!(olena["viewedProducts"][0]["key"], "mug");
    assert_eq!(
        olena["cart"]["lines"],
        json!([]),
        "the purchase of cart-1 emptied it"
    );
    assert_eq!(olena["orders"]["1001"]["total"], "20");
    assert_eq!(
        olena["orders"]["1001"]["lines"],
        json!([{"productKey": "mug", "unitPrice": {"amount": "10"}, "quantity": 2}])
    );
    assert_eq!(olena["orders"]["1001"]["cartGuid"], "cart-1");
    let (_, by_cookie) = get(&server, "/api/v1/sites/S1/contacts?sc=anon-1").await;
    assert_eq!(by_cookie, olena);

    let (status, mug) = get(&server, "/api/v1/sites/S1/products/mug").await;
    assert_eq!(status, 200);
    assert_eq!(mug["name"], "Mug");
    // The latest price the site showed: the cart's, after the page's "10 EUR" and the update's 12.
    assert_eq!(mug["price"]["value"], json!({"amount": "10"}));
    assert_eq!(mug["priceHistory"].as_array().unwrap().len(), 2);
    assert_eq!(mug["categoryPath"], json!(["Home", "Kitchen"]));

    let (_, site) = get(&server, "/api/v1/sites/S1").await;
    assert_eq!(
        (
            site["contacts"].as_u64(),
            site["orders"].as_u64(),
            site["products"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );

    assert_eq!(
        get(&server, "/api/v1/sites/S1/contacts?sc=nobody").await.0,
        404
    );
    assert_eq!(
        get(&server, "/api/v1/sites/NOPE/contacts?sc=anon-1")
            .await
            .0,
        404
    );
    assert_eq!(get(&server, "/api/v1/sites/S1/contacts").await.0, 400);
    let anonymous = client()
        .get(server.url("/api/v1/sites/S1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    assert!(server.terminate().success());
    let server = Server::start(&data, &["S1"]);
    let (status, rebuilt) = get(&server, &by_email).await;
    assert_eq!(status, 200);
    assert_eq!(
        rebuilt, olena,
        "the state rebuilt from the log equals the live state"
    );
    // An offline rebuild beside the running server gives the same state, digest for digest.
    let (_, live) = get(&server, &format!("/api/v1/sites/S1?digest=1&after={last}")).await;
    let output = common::run_ok(
        common::spoor()
            .args(["state", "rebuild", "--data"])
            .arg(&data),
    );
    let rebuilt: Value = serde_json::from_slice(&output.stdout).unwrap();
    let site = &rebuilt["sites"][0];
    assert_eq!(site["siteId"], "S1");
    assert_eq!(
        site["stateDigest"], live["stateDigest"],
        "{rebuilt} vs {live}"
    );
    assert_eq!(site["contacts"], live["contacts"]);
    assert_eq!(live["stateDigest"].as_str().unwrap().len(), 64);
    let metrics = common::metrics_text(&server).await;
    assert!(metrics.contains("spoor_state_lag_records 0"), "{metrics}");
}

#[tokio::test]
async fn cart_and_order_lines_read_back_as_they_were_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let ids = json!({"cookies": {"sc": "lines"}});
    let lines = json!([
        {"productKey": "lamp", "price": "30 EUR", "discount": "5", "quantity": 1, "tag_color": ["red"]},
        {"productKey": "rug", "price": 80, "quantity": 2}]);
    let cart = json!({"GeneralInfo": info("StatusCart", 1, ids.clone()),
                      "StatusCart": {"GUID": "g-7", "Products": lines}});
    let order = json!({"GeneralInfo": info("PurchasedItems", 2, ids),
                       "PurchasedItems": {"OrderNumber": "A-7",
                           "Products": [{"product_id": "rug", "unit_price": "80 EUR", "quantity": 2}]}});
    let mut last = 0;
    for event in [cart, order] {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        last = answer["position"].as_u64().unwrap();
    }
    let (status, contact) = get(
        &server,
        &format!("/api/v1/sites/S1/contacts?sc=lines&after={last}"),
    )
    .await;
    assert_eq!(status, 200, "{contact}");
    assert_eq!(
        contact["cart"]["lines"],
        json!([
            {"productKey": "lamp", "price": {"amount": "30", "currency": "EUR"}, "discount": "5",
             "quantity": 1, "tags": {"tag_color": ["red"]}},
            {"productKey": "rug", "price": {"amount": "80"}, "quantity": 2}]),
        "an order without the cart's GUID leaves the cart as it was"
    );
    assert_eq!(
        contact["orders"]["A-7"]["lines"],
        json!([{"productKey": "rug", "unitPrice": {"amount": "80", "currency": "EUR"}, "quantity": 2}])
    );
    assert_eq!(contact["orders"]["A-7"]["currency"], "EUR");
}

#[tokio::test]
async fn a_site_key_reads_its_own_site_only_and_rotation_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["OTHER"]);
    let create = client()
        .post(server.url("/admin/v1/sites"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"siteId": "MINE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let created: Value = create.json().await.unwrap();
    let key = created["apiKey"].as_str().unwrap().to_string();
    let read = |path: &'static str, key: String| {
        let request = client().get(server.url(path)).bearer_auth(key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(read("/api/v1/sites/MINE", key.clone()).await, 200);
    // Another site's key is known but not for this site: forbidden, not unauthorised.
    assert_eq!(read("/api/v1/sites/OTHER", key.clone()).await, 403);
    let (_, listed) = get(&server, "/admin/v1/sites").await;
    let listed = listed.to_string();
    assert!(
        !listed.contains(&key) && !listed.contains("apiKey"),
        "{listed}"
    );

    let (_, rotated) = common::call(
        reqwest::Method::POST,
        &server,
        "/admin/v1/sites/MINE/api-key",
    )
    .await;
    let new_key = rotated["apiKey"].as_str().unwrap().to_string();
    assert_eq!(read("/api/v1/sites/MINE", key).await, 401);
    assert_eq!(read("/api/v1/sites/MINE", new_key).await, 200);
    let stored = std::fs::read_to_string(dir.path().join("data/sites.json")).unwrap();
    assert!(
        !stored.contains("spoor_"),
        "sites.json holds a key in clear"
    );
}

const FEED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>
 <item><g:id>lamp</g:id><g:title>Desk lamp</g:title><g:price>20.00 EUR</g:price>
       <g:availability>in stock</g:availability><g:product_type>Home &gt; Lighting</g:product_type>
       <g:link>https://shop.example/lamp</g:link></item>
 <item><g:title>No id</g:title></item>
 <item><g:id>rug</g:id><g:price>ten</g:price></item>
 <item><g:id>vase</g:id><g:title>Vase</g:title><g:price>7 EUR</g:price></item>
</channel></rss>"#;

#[tokio::test]
async fn a_feed_import_keeps_good_items_reports_bad_ones_and_the_site_value_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let feed_path = dir.path().join("feed.xml");
    std::fs::write(&feed_path, FEED).unwrap();
    let import = || {
        common::run_ok(
            common::spoor()
                .args(["feed", "import"])
                .arg(&feed_path)
                .args(["--site", "S1", "--url", &server.base, "--key", ADMIN_TOKEN]),
        )
    };
    let summary: Value = serde_json::from_slice(&import().stdout).unwrap();
    assert_eq!(
        (summary["items"].as_u64(), summary["imported"].as_u64()),
        (Some(4), Some(2)),
        "{summary}"
    );
    let rejected = summary["rejected"].as_array().unwrap();
    assert_eq!(rejected[0]["item"], 2);
    assert_eq!(rejected[0]["reason"], "g:id is missing");
    assert_eq!(rejected[1]["id"], "rug");

    // The site shows another price since; the same feed again does not undo it.
    let view = json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S1", "cookies": {"sc": "v"}},
                      "ProductPage": {"Product": {"productKey": "lamp", "price": "17.50 EUR"}}});
    let (_, answer) = post_json(&server.url("/api/v2"), view.to_string()).await;
    let after = answer["position"].as_u64().unwrap();
    let again: Value = serde_json::from_slice(&import().stdout).unwrap();
    assert_eq!(again["unchangedRepeat"], true);
    let (status, lamp) = get(
        &server,
        &format!("/api/v1/sites/S1/products/lamp?after={after}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lamp["name"], "Desk lamp");
    assert_eq!(lamp["url"], "https://shop.example/lamp");
    assert_eq!(lamp["categoryPath"], json!(["Home", "Lighting"]));
    assert_eq!(
        lamp["price"]["value"],
        json!({"amount": "17.5", "currency": "EUR"})
    );
    let (status, _) = get(&server, "/api/v1/sites/S1/products/vase").await;
    assert_eq!(status, 200);
    let (status, _) = get(&server, "/api/v1/sites/S1/products/rug").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_address_sending_refused_keys_is_slowed_down_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["S1"],
        &["--trust-forwarded-for"],
    );
    let read = |from: &'static str, key: &'static str| {
        let request = client()
            .get(server.url("/api/v1/sites/S1"))
            .header("x-forwarded-for", from)
            .bearer_auth(key);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry_after)
        }
    };
    for _ in 0..10 {
        assert_eq!(read("203.0.113.7", "guess").await.0, 401);
    }
    // The eleventh guess waits; a good key from the same address (a shop's server, an
    // operator behind the same proxy) does not, and neither does another address.
    let (status, retry_after) = read("203.0.113.7", "guess").await;
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    assert_eq!(read("203.0.113.7", ADMIN_TOKEN).await.0, 200);
    assert_eq!(read("203.0.113.8", "guess").await.0, 401);
    // The address is the one the proxy added, last: a client's own entries before it
    // change nothing.
    assert_eq!(read("198.51.100.9, 203.0.113.7", "guess").await.0, 429);
    // Events are still taken from the slowed address: the tracker takes no key.
    let event = r#"{"GeneralInfo": {"eventName": "CategoryPage", "siteId": "S1",
        "cookies": {"sc": "x"}}, "CategoryPage": {"categoryKey": "1"}}"#;
    let response = client()
        .post(server.url("/api/v2"))
        .header("x-forwarded-for", "203.0.113.7")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // And so are a page's public calls, which carry no key; an IPv4 client of a
    // dual-stack listener counts as itself.
    let public = client()
        .get(server.url("/api/v2/recommendations?siteId=S1&algorithm=popular"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 200);
    assert_eq!(read("::ffff:203.0.113.7", "guess").await.0, 429);
    assert_eq!(read("::ffff:203.0.113.9", "guess").await.0, 401);
}

#[tokio::test]
async fn a_snapshot_asked_for_is_saved_and_used_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["S1"]);
    for event in events() {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
    let refused = client()
        .post(server.url("/admin/v1/state/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "the admin token is needed");
    let saved: Value = client()
        .post(server.url("/admin/v1/state/snapshot"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saved["position"], 5, "{saved}");
    assert!(saved["copySeconds"].as_f64().unwrap() <= saved["seconds"].as_f64().unwrap());
    assert!(data.join("state.snapshot").exists());
    // Killed: only the snapshot asked for is there to start from.
    drop(server);
    let server = Server::start(&data, &["S1"]);
    let (status, contact) = get(&server, "/api/v1/sites/S1/contacts?email=olena@example.com").await;
    assert_eq!(status, 200, "{contact}");
    assert!(server.log_text().contains("state loaded from its snapshot"));
}
