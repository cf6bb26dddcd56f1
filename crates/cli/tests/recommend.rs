//! Recommendations through the real server: events posted over HTTP change the answers
//! at once, the endpoint is public, and a restart answers the same.

mod common;

use common::{Server, client, get, post_json};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn view(sc: &str, key: &str, at: i64) -> Value {
    json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S1", "datetime": T0 + at, "cookies": {"sc": sc}},
           "ProductPage": {"Product": {"productKey": key, "price": "10 EUR"}}})
}

fn catalogue() -> Value {
    let products: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|key| {
            json!({"product_id": key, "name": format!("Product {key}"), "unit_price": "10",
                          "isInStock": if *key == "d" { 0 } else { 1 },
                          "url": format!("https://shop.example/p/{key}")})
        })
        .collect();
    json!({"GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S1", "datetime": T0},
           "ProductUpdate": products})
}

/// Posts `events`; the log position of the last.
async fn post_all(server: &Server, events: &[Value]) -> u64 {
    let mut last = 0;
    for event in events {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        last = answer["position"].as_u64().unwrap();
    }
    last
}

/// `GET /api/v2/recommendations?<query>` without any credentials.
async fn recommend(server: &Server, query: &str) -> (u16, Option<String>, Value) {
    let response = client()
        .get(server.url(&format!("/api/v2/recommendations?{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cors = response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    (status, cors, response.json().await.unwrap())
}

fn keys(answer: &Value) -> Vec<&str> {
    answer["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn posted_events_change_the_recommendations_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["S1"]);
    let mut events = vec![catalogue()];
    // Two visitors went from a to b; one from a to d, which is out of stock.
    for sc in ["v1", "v2"] {
        events.push(view(sc, "a", 1));
        events.push(view(sc, "b", 2));
    }
    events.push(view("v3", "a", 1));
    events.push(view("v3", "d", 2));
    let last = post_all(&server, &events).await;

    let similar = format!("siteId=S1&algorithm=similar&productKey=a&after={last}");
    let (status, cors, answer) = recommend(&server, &similar).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(cors.as_deref(), Some("*"));
    assert_eq!(keys(&answer), vec!["b"], "{answer}");
    assert_eq!(answer["container_type"], "similar");
    let b = &answer["products"][0];
    assert_eq!(b["name"], "Product b");
    assert_eq!(b["url"], "https://shop.example/p/b?sc_content=similar");
    assert_eq!(b["algorithm"], "similar");

    // Three more visitors go from a to c: c is now the better answer, at once.
    let mut more = Vec::new();
    for sc in ["v4", "v5", "v6"] {
        more.push(view(sc, "a", 3));
        more.push(view(sc, "c", 4));
    }
    let last = post_all(&server, &more).await;
    let similar = format!("siteId=S1&algorithm=similar&productKey=a&after={last}");
    let (_, _, answer) = recommend(&server, &similar).await;
    assert_eq!(keys(&answer), vec!["c", "b"], "{answer}");

    // A visitor in the middle of a session that began with a.
    let last = post_all(&server, &[view("me", "a", 5)]).await;
    let personal = format!("siteId=S1&algorithm=personal&sc=me&after={last}");
    let (_, _, answer) = recommend(&server, &personal).await;
    assert_eq!(keys(&answer), vec!["c", "b"], "{answer}");

    // Unknown product: no error, popular fills in, and the answer says why.
    let chain = "siteId=S1&algorithm=similar,popular&productKey=nope&limit=2";
    let (status, _, answer) = recommend(&server, chain).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(&answer), vec!["a", "c"], "{answer}");
    assert_eq!(
        answer["notes"][0],
        "similar: nothing left after the filters"
    );

    // Bad questions are told what is wrong.
    let (status, _, answer) = recommend(&server, "siteId=S1&algorithm=best").await;
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("algorithm: unknown algorithm")
    );
    let (status, _, answer) = recommend(&server, "siteId=NOPE&algorithm=popular").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_site"))
    );

    // After a restart (from the snapshot written at the stop), the same answers.
    let (_, _, before) = recommend(&server, "siteId=S1&algorithm=similar&productKey=a").await;
    assert!(server.terminate().success());
    let server = Server::start(&data, &["S1"]);
    let (_, _, after) = recommend(&server, "siteId=S1&algorithm=similar&productKey=a").await;
    assert_eq!(after, before);
}

/// `PUT` a block definition with the admin token.
async fn put_block(server: &Server, block_id: &str, body: &str) -> (u16, Value) {
    let response = client()
        .put(server.url(&format!("/admin/v1/sites/S1/blocks/{block_id}")))
        .bearer_auth(common::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn blocks_carry_their_setup_and_split_visitors_stably() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["S1"]);
    let mut events = vec![catalogue()];
    // Popularity: a (3 views), b (2), c (1).
    for (i, key) in ["a", "a", "a", "b", "b", "c"].iter().enumerate() {
        events.push(view(&format!("p{i}"), key, 1));
    }
    let last = post_all(&server, &events).await;

    let block = r#"{"name": "Home", "algorithm": "popular", "size": 2,
        "variants": [{"id": "a", "share": 1},
                     {"id": "b", "share": 1, "algorithm": ["bestsellers", "popular"], "size": 3,
                      "filters": {"exclude": [{"name": "product_id", "values": ["a"]}]}}]}"#;
    let (status, answer) = put_block(&server, "home", block).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["containerTypes"], json!(["home_a", "home_b"]));
    let (status, _) = put_block(&server, "home", block).await;
    assert_eq!(status, 200, "a second PUT replaces");

    // Each visitor sees one variant, every time; both variants are seen.
    let mut seen = std::collections::BTreeMap::new();
    for visitor in 0..20 {
        let query = format!("siteId=S1&block=home&sc=visitor{visitor}&after={last}");
        let (status, _, first) = recommend(&server, &query).await;
        assert_eq!(status, 200, "{first}");
        let (_, _, again) = recommend(&server, &query).await;
        assert_eq!(first["container_type"], again["container_type"]);
        let container = first["container_type"].as_str().unwrap().to_string();
        let products = keys(&first).join(",");
        seen.insert(container, products);
    }
    assert_eq!(
        seen.get("home_a").map(String::as_str),
        Some("a,b"),
        "{seen:?}"
    );
    // Variant b: no bestsellers yet, so popular fills in, without a, three products.
    assert_eq!(
        seen.get("home_b").map(String::as_str),
        Some("b,c"),
        "{seen:?}"
    );

    // A named variant, a request's own filters and limit; the url credits the block.
    let filters = r#"{"include":[{"name":"product_id","values":["b","c"]}]}"#;
    let query = format!(
        "siteId=S1&block=home&variantId=a&limit=1&filters={}",
        url_encode(filters)
    );
    let (status, _, answer) = recommend(&server, &query).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(&answer), vec!["b"]);
    assert_eq!(
        answer["products"][0]["url"],
        "https://shop.example/p/b?sc_content=home_a"
    );

    // Mistakes are named.
    let (status, answer) =
        put_block(&server, "home", r#"{"algorithm": "popular", "size": 500}"#).await;
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("size: expected 1 to 100, got 500"),
        "{answer}"
    );
    let (status, _, answer) = recommend(&server, "siteId=S1&block=home&variantId=zz").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_variant"))
    );
    let (status, _, answer) = recommend(&server, "siteId=S1&block=nope").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_block"))
    );
    let anonymous = client()
        .put(server.url("/admin/v1/sites/S1/blocks/home"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Listed, then deleted.
    let (status, list) = get(&server, "/admin/v1/sites/S1/blocks").await;
    assert_eq!(
        (status, list["blocks"][0]["blockId"].as_str()),
        (200, Some("home"))
    );
    let (status, _) = common::call(
        reqwest::Method::DELETE,
        &server,
        "/admin/v1/sites/S1/blocks/home",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = recommend(&server, "siteId=S1&block=home").await;
    assert_eq!(status, 404);
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn block_stats_count_impressions_clicks_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["S1"]);
    let (status, _) = put_block(&server, "cart", r#"{"algorithm": "popular", "size": 2}"#).await;
    assert_eq!(status, 201);
    let general = |event: &str, sc: &str| json!({"eventName": event, "siteId": "S1", "datetime": T0, "cookies": {"sc": sc}});
    let shown = |sc: &str, keys: &[&str]| {
        let products: Vec<Value> = keys
            .iter()
            .map(|k| json!({"product_id": k, "container_type": "cart_default"}))
            .collect();
        json!({"GeneralInfo": general("ProductImpressions", sc),
               "ProductImpression": {"Products": products}})
    };
    let events = vec![
        catalogue(),
        shown("v1", &["a", "b"]),
        shown("v2", &["a", "c"]),
        // v1 follows the block's link (its url carried sc_content).
        json!({"GeneralInfo": general("ProductPage", "v1"),
               "ProductPage": {"Product": {"productKey": "b", "price": "10", "sc_content": "cart_default"}}}),
        // v1 buys b and something else: the block earns b's line.
        json!({"GeneralInfo": general("PurchasedItems", "v1"),
               "PurchasedItems": {"OrderNumber": "o1", "Products": [
                   {"product_id": "b", "unit_price": "10", "quantity": 2},
                   {"product_id": "x", "unit_price": "99", "quantity": 1}]}}),
        // v2's shop tags the order with the block: the whole order.
        json!({"GeneralInfo": general("PurchasedItems", "v2"),
               "PurchasedItems": {"OrderNumber": "o2", "Products": [
                   {"product_id": "c", "unit_price": "7.5", "quantity": 1}]},
               "Tags": {"blockId": ["cart_default"]}}),
    ];
    let last = post_all(&server, &events).await;
    let day = "2023-11-14"; // T0's UTC date
    let (status, stats) = get(
        &server,
        &format!("/api/v1/sites/S1/blocks/cart/stats?from={day}&to={day}&after={last}"),
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    let variant = &stats["variants"][0];
    assert_eq!(variant["containerType"], "cart_default");
    assert_eq!(variant["defined"], true);
    let expected =
        json!({"impressions": 4, "clicks": 1, "ctr": 0.25, "orders": 2, "revenue": "27.5"});
    assert_eq!(variant["total"], expected);
    assert_eq!(variant["days"][0]["date"], day);
    assert_eq!(variant["days"][0]["orders"], 2);

    // Another period has nothing; bad dates are named.
    let (_, empty) = get(
        &server,
        "/api/v1/sites/S1/blocks/cart/stats?from=2024-01-01&to=2024-01-31",
    )
    .await;
    assert_eq!(empty["variants"][0]["total"]["impressions"], 0);
    assert_eq!(empty["variants"][0]["total"]["ctr"], Value::Null);
    let (status, bad) = get(&server, "/api/v1/sites/S1/blocks/cart/stats?from=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(
        bad["message"],
        "from: expected a date as YYYY-MM-DD, got \"yesterday\""
    );
    let (status, _) = get(&server, "/api/v1/sites/S1/blocks/nothing/stats").await;
    assert_eq!(status, 404);
}

/// `PUT` the site's settings with the admin token.
async fn put_settings(server: &Server, body: &str) -> (u16, Value) {
    let response = client()
        .put(server.url("/admin/v1/sites/S1/settings"))
        .bearer_auth(common::ADMIN_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn sites_set_their_cors_origins_and_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let (status, defaults) = get(&server, "/admin/v1/sites/S1/settings").await;
    assert_eq!(status, 200);
    assert_eq!(defaults["corsOrigins"], json!(["*"]));

    let (status, _) = put_settings(
        &server,
        r#"{"corsOrigins": ["https://shop.example"], "rateLimit": {"perSecond": 1, "burst": 2}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let ask = |origin: &'static str| {
        client()
            .get(server.url("/api/v2/recommendations?siteId=S1&algorithm=popular"))
            .header("origin", origin)
            .send()
    };
    // The shop's own pages may read the answer; another site's may not.
    let own = ask("https://shop.example").await.unwrap();
    assert_eq!(own.status().as_u16(), 200);
    assert_eq!(
        own.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = ask("https://other.example").await.unwrap();
    assert_eq!(other.status().as_u16(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A burst of two, then 429 with how long to wait, still readable by the shop's page.
    let limited = ask("https://shop.example").await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(
        limited.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    // A preflight is answered by the same settings.
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/v2/recommendations?siteId=S1"),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );

    // Mistakes are named; a site without a limit is not limited.
    let (status, answer) = put_settings(&server, r#"{"corsOrigins": ["shop.example"]}"#).await;
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("corsOrigins[0]: expected \"*\" or an origin"),
        "{answer}"
    );
    let (status, _) = put_settings(&server, r#"{"rateLimit": null}"#).await;
    assert_eq!(status, 200);
    for _ in 0..5 {
        assert_eq!(
            ask("https://x.example").await.unwrap().status().as_u16(),
            200
        );
    }
}

#[tokio::test]
async fn a_site_is_tuned_on_its_own_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let tune_for = |goal: &str| {
        client()
            .post(server.url(&format!("/admin/v1/sites/S1/tuning{goal}")))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
    };
    let tune = || tune_for("");
    let too_early = tune().await.unwrap();
    assert_eq!(too_early.status().as_u16(), 409);
    let body: Value = too_early.json().await.unwrap();
    assert_eq!(body["error"], "too_few_sessions");

    // 1,200 visitors, each walking three steps along a ring of 30 products.
    let mut lines = String::new();
    for visitor in 0..1_200 {
        for step in 0..3 {
            let product = format!("p{}", (visitor + step) % 30);
            let event = view(&format!("v{visitor}"), &product, visitor * 10 + step);
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
    }
    // 250 customers ordering three times, mostly from their own two favourites.
    for buyer in 0..250 {
        for order in 0..3 {
            let products: Vec<Value> = [buyer % 30, (buyer + 1) % 30, (buyer + order * 7) % 30]
                .iter()
                .map(|n| json!({"product_id": format!("p{n}"), "unit_price": "5", "quantity": 1}))
                .collect();
            let event = json!({
                "GeneralInfo": {"eventName": "PurchasedItems", "siteId": "S1",
                                "datetime": T0 + 20_000 + buyer * 10 + order,
                                "cookies": {"sc": format!("buyer{buyer}")}},
                "PurchasedItems": {"OrderNumber": format!("o{buyer}-{order}"), "Products": products}});
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
    }
    let mut last = 0;
    for chunk in lines.lines().collect::<Vec<_>>().chunks(500) {
        let response = client()
            .post(server.url("/api/v2/batch"))
            .header("content-type", "application/x-ndjson")
            .body(chunk.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let answer: Value = response.json().await.unwrap();
        let positions = answer["results"].as_array().unwrap();
        last = positions.last().unwrap()["position"].as_u64().unwrap();
    }
    let (status, _) = get(&server, &format!("/api/v1/sites/S1?after={last}")).await;
    assert_eq!(status, 200);

    let tuned = tune().await.unwrap();
    assert_eq!(tuned.status().as_u16(), 200);
    let tuned: Value = tuned.json().await.unwrap();
    assert_eq!(tuned["tuned"], true);
    assert_eq!(tuned["sessions"], 1_200);
    let hit_rate = tuned["report"]["HR@k"].as_f64().unwrap();
    let defaults = tuned["report"]["defaults_HR@k"].as_f64().unwrap();
    assert!(
        hit_rate >= defaults,
        "the choice is never worse than the defaults"
    );
    // Each simple method alone was scored on the same held-out sessions, and the choice
    // is at least as good as the best of them for its goal.
    let report = &tuned["report"];
    assert_eq!(report["goal"], "both");
    // Scored as `personal` serves: what the session holds is left out of the answers,
    // so the repeats alone win nothing.
    assert_eq!(report["as_served"], true);
    let objective =
        |figures: &Value| figures["HR@k"].as_f64().unwrap() + figures["MRR@k"].as_f64().unwrap();
    let components = report["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "repeat-first",
            "sequential-rules",
            "co-occurrence",
            "session-neighbours"
        ]
    );
    for component in components {
        assert!(objective(report) >= objective(component), "{report}");
    }
    // The blends over orders were tuned on the customers' orders alike.
    assert_eq!(tuned["repeatCustomers"], 250);
    let basket_report = &tuned["basketReport"];
    assert_eq!(basket_report["goal"], "recall");
    let parts = basket_report["components"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{basket_report}");
    for part in parts {
        assert!(
            basket_report["recall"].as_f64() >= part["recall"].as_f64(),
            "{basket_report}"
        );
    }
    assert!(
        tuned["baskets"]["personal"]["weight"].is_number(),
        "{tuned}"
    );
    let (_, now) = get(&server, "/admin/v1/sites/S1/tuning").await;
    assert_eq!(now["nextItem"], tuned["nextItem"]);
    assert_eq!(now["baskets"], tuned["baskets"]);

    let unknown = tune_for("?goal=speed").await.unwrap();
    assert_eq!(unknown.status().as_u16(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "invalid_value");
    assert_eq!(
        body["message"],
        "goal: expected HR, MRR or both, got \"speed\""
    );
    let unknown = tune_for("?basketGoal=revenue").await.unwrap();
    assert_eq!(unknown.status().as_u16(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(
        body["message"],
        "basketGoal: expected recall or NDCG, got \"revenue\""
    );
    let by_mrr: Value = tune_for("?goal=MRR").await.unwrap().json().await.unwrap();
    assert_eq!(by_mrr["report"]["goal"], "MRR");
    let best_mrr = components
        .iter()
        .map(|c| c["MRR@k"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(by_mrr["report"]["MRR@k"].as_f64().unwrap() >= best_mrr);

    // Questions are answered with the tuned settings: p1 is followed by p2 on the ring.
    let (status, _, answer) = recommend(&server, "siteId=S1&algorithm=similar&productKey=p1").await;
    assert_eq!(status, 200);
    assert_eq!(keys(&answer)[0], "p2", "{answer}");

    let (status, _) = common::call(
        reqwest::Method::DELETE,
        &server,
        "/admin/v1/sites/S1/tuning",
    )
    .await;
    assert_eq!(status, 204);
    let (_, after) = get(&server, "/admin/v1/sites/S1/tuning").await;
    assert_eq!(after["tuned"], false);
    assert_eq!(
        after["baskets"]["personal"]["weight"], 1.0,
        "built-in: {after}"
    );
}

/// Posts `events` and waits until the state has applied them.
async fn post_applied(server: &Server, events: &[Value]) {
    let last = post_all(server, events).await;
    let (status, _) = get(server, &format!("/api/v1/sites/S1?after={last}")).await;
    assert_eq!(status, 200);
}

/// Sessions of one visitor each, from visitor number `first` on.
fn sessions_of(first: usize, sessions: &[Vec<&str>]) -> Vec<Value> {
    let mut events = Vec::new();
    for (n, products) in sessions.iter().enumerate() {
        let visitor = format!("v{}", first + n);
        for (step, product) in products.iter().enumerate() {
            events.push(view(&visitor, product, ((first + n) * 10 + step) as i64));
        }
    }
    events
}

/// Polls the site's tuning answer until its vectors were learned from `sessions` or more.
async fn vectors_learned_from(server: &Server, sessions: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, tuning) = get(server, "/admin/v1/sites/S1/tuning").await;
        assert_eq!(status, 200);
        if tuning["itemVectors"]["sessions"].as_u64() >= Some(sessions) {
            return tuning;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no vectors learned from {sessions} sessions: {tuning}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_running_server_learns_item_vectors_for_a_site_that_weighs_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["S1"]);
    // q is viewed alone with each of a1..a4 ten times, with b0 fifteen times; b0 lives
    // among b1..b4. Counts say b0 follows q; the products' company says q is of the a's.
    let mut sessions: Vec<Vec<&str>> = Vec::new();
    for round in 0..40 {
        sessions.push(vec!["q", ["a1", "a2", "a3", "a4"][round % 4]]);
    }
    sessions.extend(std::iter::repeat_n(vec!["q", "b0"], 15));
    for round in 0..40 {
        let b = ["b1", "b2", "b3", "b4"];
        sessions.push(vec!["b0", b[round % 4], b[(round + 1) % 4]]);
    }
    post_applied(&server, &sessions_of(0, &sessions)).await;
    let similar = "siteId=S1&algorithm=similar&productKey=q";
    let (_, _, counted) = recommend(&server, similar).await;
    assert_eq!(keys(&counted)[0], "b0", "{counted}");
    let (_, untuned) = get(&server, "/admin/v1/sites/S1/tuning").await;
    assert_eq!(
        untuned["itemVectors"],
        Value::Null,
        "no weight, none learned"
    );

    // Settings that give the vectors a say (as a tuning may choose, here written by hand
    // while the server is stopped): learned once the restarted server is current (its
    // snapshot does not hold them), and the answers follow them.
    server.terminate();
    std::fs::write(
        data.join("tuning.json"),
        json!({"S1": {"nextItem": {"embeddingWeight": 10.0}, "tunedAt": 1, "sessions": 95,
                      "report": null}})
        .to_string(),
    )
    .unwrap();
    let server = Server::start(&data, &["S1"]);
    let tuning = vectors_learned_from(&server, 95).await;
    assert_eq!(tuning["itemVectors"]["products"], 10, "{tuning}");
    let (_, _, close) = recommend(&server, similar).await;
    let first = keys(&close)[0];
    assert!(
        first.starts_with('a'),
        "the a's first once learned: {close}"
    );

    // A tenth more sessions: learned again (once 104 are in, a tenth of the 95).
    let more: Vec<Vec<&str>> = std::iter::repeat_n(vec!["b1", "n1"], 10).collect();
    post_applied(&server, &sessions_of(1_000, &more)).await;
    let tuning = vectors_learned_from(&server, 104).await;
    assert_eq!(
        tuning["itemVectors"]["products"], 11,
        "the new product: {tuning}"
    );

    // Back to the built-in settings: counts answer again.
    let (status, _) = common::call(
        reqwest::Method::DELETE,
        &server,
        "/admin/v1/sites/S1/tuning",
    )
    .await;
    assert_eq!(status, 204);
    let (_, _, counted) = recommend(&server, similar).await;
    assert_eq!(keys(&counted)[0], "b0", "{counted}");
    let (_, untuned) = get(&server, "/admin/v1/sites/S1/tuning").await;
    assert_eq!(untuned["itemVectors"], Value::Null, "{untuned}");
}

/// `GET /api/v2/recommendations?<query>` with `Authorization: Bearer <key>`.
async fn recommend_with_key(server: &Server, query: &str, key: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(&format!("/api/v2/recommendations?{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn issue_key(server: &Server, site_id: &str) -> String {
    let path = format!("/admin/v1/sites/{site_id}/api-key");
    let (status, answer) = common::call(reqwest::Method::POST, server, &path).await;
    assert_eq!(status, 200, "{answer}");
    answer["apiKey"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_contact_number_names_someone_only_with_the_sites_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1", "S2"]);
    let last = post_all(
        &server,
        &[catalogue(), view("v1", "a", 1), view("v1", "b", 2)],
    )
    .await;
    let (own_key, other_key) = (
        issue_key(&server, "S1").await,
        issue_key(&server, "S2").await,
    );

    // A page names its visitor by the cookie the visitor holds: public.
    let by_cookie = format!("siteId=S1&algorithm=recently-viewed&sc=v1&after={last}");
    let (status, _, answer) = recommend(&server, &by_cookie).await;
    assert_eq!((status, keys(&answer)), (200, vec!["b", "a"]), "{answer}");

    // Walking contact numbers without the key reveals nothing, not even who exists.
    for number in 0..4 {
        let walk = format!("siteId=S1&algorithm=recently-viewed&contactId={number}");
        let (status, _, answer) = recommend(&server, &walk).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "unauthorized");
        assert!(answer.get("products").is_none());
    }
    let by_number = "siteId=S1&algorithm=recently-viewed&contactId=0";
    let (status, answer) = recommend_with_key(&server, by_number, &other_key).await;
    assert_eq!(
        (status, &answer["error"]),
        (403, &json!("forbidden")),
        "{answer}"
    );
    assert!(
        !answer.to_string().contains("S2"),
        "the key's own site is not named"
    );
    let (status, answer) = recommend_with_key(&server, by_number, "not-a-key").await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = recommend_with_key(&server, by_number, &own_key).await;
    assert_eq!((status, keys(&answer)), (200, vec!["b", "a"]), "{answer}");
    let (status, answer) = recommend_with_key(&server, by_number, common::ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{answer}");
}

/// A CustomerData event naming `sc` and `email`.
fn customer(sc: &str, email: &str, at: i64) -> Value {
    json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": "S1", "datetime": T0 + at,
                           "cookies": {"sc": sc}, "user_email": email}})
}

#[tokio::test]
async fn a_cookie_put_next_to_someone_elses_email_does_not_see_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let key = issue_key(&server, "S1").await;
    let last = post_all(
        &server,
        &[
            catalogue(),
            customer("ann-cookie", "ann@example.com", 1),
            view("ann-cookie", "a", 2),
            view("ann-cookie", "b", 3),
            view("anonymous", "c", 4),
            // Anyone may post these: their own cookie beside Ann's email, or beside an
            // email nobody has sent.
            customer("mallory-cookie", "ann@example.com", 5),
            customer("probe-cookie", "nobody-yet@example.com", 6),
        ],
    )
    .await;
    let ask =
        |sc: &str, algorithm: &str| format!("siteId=S1&algorithm={algorithm}&sc={sc}&after={last}");

    // A visitor named by nothing but their cookie gets what they did.
    let (status, _, own) = recommend(&server, &ask("anonymous", "recently-viewed")).await;
    assert_eq!((status, keys(&own)), (200, vec!["c"]), "{own}");
    for algorithm in ["recently-viewed", "personal", "popular"] {
        let (_, _, joined) = recommend(&server, &ask("mallory-cookie", algorithm)).await;
        let (_, _, probe) = recommend(&server, &ask("probe-cookie", algorithm)).await;
        let (_, _, stranger) = recommend(&server, &ask("never-seen", algorithm)).await;
        assert_eq!(
            joined, probe,
            "{algorithm}: whether the email was known before is not told"
        );
        assert_eq!(
            joined, stranger,
            "{algorithm}: answered as an unknown visitor"
        );
    }
    // Ann's own cookie too, on the public route: her contact is named by an email that
    // anyone could have put beside a cookie.
    let (_, _, ann) = recommend(&server, &ask("ann-cookie", "recently-viewed")).await;
    assert!(keys(&ann).is_empty(), "{ann}");
    // The shop's server, with its key, gets the contact's history.
    let with_key = ask("mallory-cookie", "recently-viewed");
    let (status, with_key) = recommend_with_key(&server, &with_key, &key).await;
    assert_eq!(
        (status, keys(&with_key)),
        (200, vec!["b", "a"]),
        "{with_key}"
    );
    let wrong_key = ask("mallory-cookie", "recently-viewed");
    let (status, refused) = recommend_with_key(&server, &wrong_key, "not-the-key").await;
    assert_eq!(
        status, 401,
        "a wrong key is refused, not taken for none: {refused}"
    );

    // A shop that links identities only after a sign-in vouches for them.
    let (status, shown) = put_settings(&server, r#"{"trustIdentityLinks": true}"#).await;
    assert_eq!(
        (status, &shown["trustIdentityLinks"]),
        (200, &json!(true)),
        "{shown}"
    );
    let (_, _, trusted) = recommend(&server, &ask("ann-cookie", "recently-viewed")).await;
    assert_eq!(keys(&trusted), vec!["b", "a"], "{trusted}");
}

#[tokio::test]
async fn a_sites_ingest_rate_limit_holds_back_one_client_and_stores_nothing_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["S1"], &["--trust-forwarded-for"]);
    let track = |from: &'static str, body: String| {
        let request = client()
            .post(server.url("/api/v2"))
            .header("x-forwarded-for", from)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status().as_u16();
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    };
    // Off by default: a shop's server posts for every visitor from one address.
    for i in 0..20 {
        let (status, _, _) = track("203.0.113.7", view("v", &format!("a{i}"), i).to_string()).await;
        assert_eq!(status, 200);
    }
    let (status, shown) = put_settings(
        &server,
        r#"{"ingestRateLimit": {"perSecond": 1, "burst": 3}}"#,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["ingestRateLimit"]["burst"], 3);
    for i in 0..3 {
        let (status, _, _) = track("203.0.113.7", view("v", &format!("b{i}"), i).to_string()).await;
        assert_eq!(status, 200);
    }
    let (status, retry_after, refused) = track("203.0.113.7", view("v", "b3", 3).to_string()).await;
    assert_eq!(
        (status, &refused["error"]),
        (429, &json!("rate_limited")),
        "{refused}"
    );
    assert!(retry_after.is_some());
    let (status, _, _) = track("203.0.113.8", view("w", "c0", 0).to_string()).await;
    assert_eq!(status, 200, "another client has its own bucket");
    // In a batch, each event counts.
    let batch: Vec<Value> = (0..5).map(|i| view("x", &format!("d{i}"), i)).collect();
    let answer: Value = client()
        .post(server.url("/api/v2/batch"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(answer["results"][4]["error"], "rate_limited");
    let stored = common::export(&data, &[]).len();
    assert_eq!(stored, 20 + 3 + 1 + 3, "nothing past the limit was stored");
}

#[tokio::test]
async fn a_site_may_take_its_catalogue_from_the_tracker_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["S1"], &["--refused-keys-per-minute", "3"]);
    let post = |path: &'static str, body: Value, key: Option<String>| {
        let mut request = client().post(server.url(path)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    // By default, as the vendor's tracker: anyone, with no key, and a Basic header (some
    // clients send the vendor's key so) is not read.
    let basic = client()
        .post(server.url("/api/v2"))
        .header("authorization", "Basic dmVuZG9yOmtleQ==")
        .json(&catalogue())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 200);

    let (status, shown) = put_settings(&server, r#"{"productUpdates": "withKey"}"#).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["productUpdates"], "withKey");
    let mut renamed = catalogue();
    renamed["ProductUpdate"][0]["name"] = json!("Anyone's name");
    let (status, refused) = post("/api/v2", renamed.clone(), None).await;
    assert_eq!(
        (status, &refused["error"]),
        (401, &json!("key_required")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("ProductUpdate: site \"S1\""),
        "{refused}"
    );
    let (status, wrong) = post("/api/v2", renamed.clone(), Some("not-the-key".into())).await;
    assert_eq!(
        (status, &wrong["error"]),
        (401, &json!("key_refused")),
        "a wrong key is no key: {wrong}"
    );
    // Other events need no key; in a batch, only the catalogue update is refused.
    let batch = json!([renamed.clone(), view("v", "a", 1)]);
    let (status, answer) = post("/api/v2/batch", batch, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(answer["results"][0]["error"], "key_required");
    let mut product = Value::Null;
    for _ in 0..100 {
        let (status, answer) = common::get(&server, "/api/v1/sites/S1/products/a").await;
        product = answer;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        product["name"], "Product a",
        "the refused update changed nothing: {product}"
    );
    // Keys refused by the tracker count against the address, as on the keyed routes.
    // Requests with no key do not count.
    for _ in 0..3 {
        let (status, _) = post("/api/v2", catalogue(), None).await;
        assert_eq!(status, 401);
    }
    let (status, wrong) = post("/api/v2", catalogue(), Some("guess".into())).await;
    assert_eq!((status, &wrong["error"]), (401, &json!("key_refused")));
    // A batch counts once, however many of its events the key was refused for.
    let batch = json!([catalogue(), renamed.clone()]);
    let (status, answer) = post("/api/v2/batch", batch, Some("guess".into())).await;
    assert_eq!(
        (status, &answer["results"][1]["error"]),
        (200, &json!("key_refused"))
    );
    let (status, answer) = recommend_with_key(&server, "siteId=S1&algorithm=popular", "x").await;
    assert_eq!(
        (status, &answer["error"]),
        (429, &json!("too_many_refused_keys")),
        "{answer}"
    );
    let (status, waiting) = post("/api/v2", catalogue(), Some("guess".into())).await;
    assert_eq!(
        (status, &waiting["error"]),
        (429, &json!("too_many_refused_keys")),
        "{waiting}"
    );
    // The admin token opens any site's catalogue, even from an address over its budget.
    let mut by_admin = catalogue();
    by_admin["ProductUpdate"][1]["name"] = json!("The admin's name");
    let (status, answer) = post("/api/v2", by_admin, Some(common::ADMIN_TOKEN.into())).await;
    assert_eq!((status, &answer["status"]), (200, &json!("ok")), "{answer}");

    let key = issue_key(&server, "S1").await;
    let (status, answer) = post("/api/v2", renamed, Some(key)).await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("ok")),
        "with the site's key, stored (the refusals claimed nothing): {answer}"
    );
    let stored = common::export(&data, &[]);
    let updates = stored
        .iter()
        .filter(|r| r["event"]["eventName"] == "ProductUpdate")
        .count();
    assert_eq!(
        updates, 3,
        "the first, open, the admin's and the site key's"
    );
}
