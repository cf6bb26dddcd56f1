//! Export and erasure of a contact, through the real server: after an erasure, none of
//! the person's email, phone or name is in any answer, export or file of the data
//! directory, and everyone else's data is untouched.

mod common;

use std::path::Path;

use common::{ADMIN_TOKEN, Server, call, client, export, post_json, run_ok, spoor};
use serde_json::{Value, json};

const EMAIL: &str = "maryna.erase-me@example.com";
const PHONE: &str = "+380 67 765 43 21";
const PHONE_DIGITS: &str = "380677654321";
const NAME: &str = "Maryna Erasable";
const OTHER_EMAIL: &str = "keep.me@example.com";

fn events() -> Vec<Value> {
    let info = |event: &str, ids: Value| {
        let mut info = json!({"eventName": event, "siteId": "S1"});
        for (k, v) in ids.as_object().unwrap() {
            info[k] = v.clone();
        }
        info
    };
    vec![
        json!({"GeneralInfo": info("ProductPage", json!({"cookies": {"sc": "maryna-cookie"}})),
               "ProductPage": {"Product": {"productKey": "lamp", "price": "30 EUR"}}}),
        json!({"GeneralInfo": info("CustomerData", json!({"cookies": {"sc": "maryna-cookie"},
               "user_email": EMAIL, "user_phone": PHONE, "user_name": NAME, "user_city": "Odesa"}))}),
        json!({"GeneralInfo": info("PurchasedItems", json!({"user_email": EMAIL, "user_name": NAME})),
               "PurchasedItems": {"OrderNumber": "M-1", "Products": [{"product_id": "lamp", "unit_price": 30, "quantity": 1}]}}),
        json!({"user_email": EMAIL, "webId": "maryna-cookie", "orgId": "1", "email": EMAIL}),
        json!({"GeneralInfo": info("CustomerData", json!({"cookies": {"sc": "other"}, "user_email": OTHER_EMAIL}))}),
        json!({"GeneralInfo": info("ProductPage", json!({"cookies": {"sc": "other"}})),
               "ProductPage": {"Product": {"productKey": "lamp", "price": "30 EUR"}}}),
    ]
}

fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn an_erased_contact_leaves_no_personal_data_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["S1"]);
    let mut last = 0;
    for event in events() {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        last = answer["position"].as_u64().unwrap_or(last);
    }
    // A restart leaves a state snapshot, holding the person's data too.
    assert!(server.terminate().success());
    let mut server = Server::start(&data, &["S1"]);
    let holding: Vec<String> = files_containing(&data, EMAIL);
    assert!(holding.iter().any(|f| f.ends_with(".log")), "{holding:?}");
    assert!(
        holding.iter().any(|f| f.ends_with("state.snapshot")),
        "{holding:?}"
    );

    let (status, held) = call(
        reqwest::Method::GET,
        &server,
        &format!("/api/v1/sites/S1/contacts/export?phone={PHONE_DIGITS}&after={last}"),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["contact"]["identifiers"]["email"], EMAIL);
    assert_eq!(held["records"].as_array().unwrap().len(), 4, "{held}");
    let output = run_ok(
        spoor()
            .args([
                "contacts",
                "export",
                "--url",
                &server.base,
                "--key",
                ADMIN_TOKEN,
            ])
            .args(["--site", "S1", "--phone", PHONE]),
    );
    let by_cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(by_cli, held);

    // Erased with the command line, as an operator would.
    let output = run_ok(
        spoor()
            .args([
                "contacts",
                "erase",
                "--url",
                &server.base,
                "--key",
                ADMIN_TOKEN,
            ])
            .args(["--site", "S1", "--email", EMAIL]),
    );
    let erased: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(erased["recordsRedacted"], 4, "{erased}");

    let check_gone = |server: &Server| {
        let server_url = server.base.clone();
        async move {
            for query in [
                format!("email={EMAIL}"),
                "sc=maryna-cookie".to_string(),
                format!("phone={PHONE_DIGITS}"),
            ] {
                let response = client()
                    .get(format!("{server_url}/api/v1/sites/S1/contacts?{query}"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 404, "{query}");
            }
        }
    };
    check_gone(&server).await;
    let everything = serde_json::to_string(&export(&data, &[])).unwrap();
    for secret in [EMAIL, PHONE, PHONE_DIGITS, NAME, "maryna-cookie", "Odesa"] {
        assert!(
            !everything.contains(secret),
            "the export still holds {secret:?}"
        );
        assert!(
            files_containing(&data, secret).is_empty(),
            "files still hold {secret:?}: {:?}",
            files_containing(&data, secret)
        );
    }
    // Everyone else, and what the events said about products, is intact.
    let (status, other) = call(
        reqwest::Method::GET,
        &server,
        &format!("/api/v1/sites/S1/contacts?email={OTHER_EMAIL}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(other["viewedProducts"][0]["key"], "lamp");
    let (_, lamp) = call(
        reqwest::Method::GET,
        &server,
        "/api/v1/sites/S1/products/lamp",
    )
    .await;
    assert_eq!(lamp["price"]["value"]["amount"], "30");
    let (_, site) = call(reqwest::Method::GET, &server, "/api/v1/sites/S1").await;
    assert_eq!(site["contacts"], 1);

    // The erasure is in the log: a restart rebuilds the same.
    assert!(server.terminate().success());
    let server = Server::start(&data, &["S1"]);
    let (_, site) = call(
        reqwest::Method::GET,
        &server,
        &format!("/api/v1/sites/S1?after={last}"),
    )
    .await;
    assert_eq!(site["contacts"], 1);
    check_gone(&server).await;
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            &server,
            &format!("/api/v1/sites/S1/contacts?email={EMAIL}")
        )
        .await
        .0,
        404
    );

    // After the erasure, the same person coming back is a new contact, and merges as usual.
    let back = [
        json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S1", "cookies": {"sc": "maryna-cookie"}},
               "ProductPage": {"Product": {"productKey": "rug", "price": 80}}}),
        json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": "S1", "user_email": EMAIL,
                               "cookies": {"sc": "new-device"}}}),
        json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": "S1", "user_email": EMAIL,
                               "cookies": {"sc": "maryna-cookie"}}}),
    ];
    for event in back {
        let (status, answer) = post_json(&server.url("/api/v2"), event.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        last = answer["position"].as_u64().unwrap();
    }
    let (status, again) = call(
        reqwest::Method::GET,
        &server,
        &format!("/api/v1/sites/S1/contacts?email={EMAIL}&after={last}"),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["identifiers"]["cookies"],
        json!(["maryna-cookie", "new-device"])
    );
    assert_eq!(again["viewedProducts"][0]["key"], "rug");
    assert_eq!(
        again["viewedProducts"].as_array().unwrap().len(),
        1,
        "nothing from before the erasure"
    );
    assert_eq!(again["merges"].as_array().unwrap().len(), 1);
    assert!(again["orders"].as_object().unwrap().is_empty());
}
