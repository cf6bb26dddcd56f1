//! Recommendations through the real server: events posted over HTTP change the answers
//! at once, the endpoint is public, and a restart answers the same.

mod common;

use common::{Server, client, post_json};
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
