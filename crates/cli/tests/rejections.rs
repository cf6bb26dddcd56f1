//! Bad input through the real server: each refusal has the right status, a code, and a
//! message naming the field path; nothing refused is stored; no personal data is logged.

mod common;

use std::io::Write;

use common::{Server, client, export};
use serde_json::{Value, json};

const EMAIL: &str = "private.person@example.com";
const PHONE: &str = "380509998877";
const NAME: &str = "Mariia Secretname";

fn info(event: &str) -> Value {
    json!({"eventName": event, "siteId": "S1", "datetime": 1_700_000_000_000i64,
           "cookies": {"sc": "visitor"}, "user_email": EMAIL, "user_phone": PHONE,
           "user_name": NAME})
}

fn cart(products: Value) -> Vec<u8> {
    json!({"GeneralInfo": info("StatusCart"), "StatusCart": {"GUID": "g", "Products": products}})
        .to_string()
        .into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// Text the message must contain: the field path, or what was wrong.
    says: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        path: "/api/v2",
        headers: vec![("content-type", "application/json")],
        body: body.into(),
        status,
        code,
        says,
    }
}

fn cases() -> Vec<Case> {
    let product_page = |product: Value| {
        json!({"GeneralInfo": info("ProductPage"), "ProductPage": {"Product": product}}).to_string()
    };
    let mut far_future = info("CustomerData");
    far_future["datetime"] = json!(4_102_444_800_000i64);
    let mut no_identity = info("CustomerData");
    for key in ["cookies", "user_email", "user_phone"] {
        no_identity.as_object_mut().unwrap().remove(key);
    }
    let mut unknown_site = info("CustomerData");
    unknown_site["siteId"] = json!("NOT-REGISTERED");
    let mut no_site = info("CustomerData");
    no_site.as_object_mut().unwrap().remove("siteId");
    let mut wrong_type_with_email = info("CustomerData");
    wrong_type_with_email["datetime"] = json!(EMAIL);
    vec![
        case("invalid JSON", b"{\"GeneralInfo\": {\n  \"eventName\": ,\n}".to_vec(), 400, "invalid_json", "line 2, column"),
        case("not an object", b"[1, 2]".to_vec(), 400, "invalid_value", "expected a JSON object"),
        case("GeneralInfo missing", json!({"ProductPage": {}}).to_string(), 400, "missing_field", "GeneralInfo: required"),
        case("eventName missing", json!({"GeneralInfo": {"siteId": "S1"}}).to_string(), 400, "missing_field", "GeneralInfo.eventName: required"),
        case("eventName unknown", json!({"GeneralInfo": info("PageViewed")}).to_string(), 400, "unknown_event", "GeneralInfo.eventName: unknown event \"PageViewed\""),
        case("siteId missing", json!({"GeneralInfo": no_site}).to_string(), 400, "missing_field", "GeneralInfo.siteId"),
        case("event body missing", json!({"GeneralInfo": info("ProductPage")}).to_string(), 400, "missing_field", "ProductPage: the event body is missing"),
        case("productKey missing", product_page(json!({"price": 1})), 400, "missing_field", "ProductPage.Product.productKey"),
        case("price missing", product_page(json!({"productKey": "1"})), 400, "missing_field", "ProductPage.Product.price"),
        case("negative price", product_page(json!({"productKey": "1", "price": -3})), 400, "invalid_value", "ProductPage.Product.price: expected an amount of 0 or more"),
        case("isInStock not a flag", product_page(json!({"productKey": "1", "price": 1, "isInStock": "maybe"})), 400, "invalid_value", "ProductPage.Product.isInStock"),
        case("quantity as a word", cart(json!([{"productKey": "1", "price": 1, "quantity": 1}, {"productKey": "2", "price": 1, "quantity": "two"}])), 400, "invalid_value", "StatusCart.Products[1].quantity: expected an integer, got \"two\""),
        case("negative quantity", cart(json!([{"productKey": "1", "price": 1, "quantity": -2}])), 400, "invalid_value", "StatusCart.Products[0].quantity: expected a quantity of 0 or more"),
        case("Products not a list", cart(json!("none")), 400, "invalid_value", "StatusCart.Products: expected an array"),
        case("datetime years ahead", json!({"GeneralInfo": far_future}).to_string(), 400, "invalid_value", "GeneralInfo.datetime: expected a time no more than a day in the future"),
        case("datetime holding an email", json!({"GeneralInfo": wrong_type_with_email}).to_string(), 400, "invalid_value", "GeneralInfo.datetime: expected an integer"),
        case("nothing identifies the visitor", json!({"GeneralInfo": no_identity}).to_string(), 400, "missing_field", "GeneralInfo.cookies.sc"),
        case("order number missing", json!({"GeneralInfo": info("PurchasedItems"), "PurchasedItems": {"Products": [{"product_id": "1", "unit_price": 1, "quantity": 1}]}}).to_string(), 400, "missing_field", "PurchasedItems.OrderNumber"),
        case("Tags not an object", json!({"GeneralInfo": info("CategoryPage"), "CategoryPage": {"categoryKey": "1", "Tags": [1]}}).to_string(), 400, "invalid_value", "CategoryPage.Tags"),
        case("unregistered site", json!({"GeneralInfo": unknown_site}).to_string(), 404, "unknown_site", "POST /admin/v1/sites"),
        case("body over 1 MiB", format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10)), 413, "payload_too_large", "1 MiB"),
        Case { headers: vec![("content-type", "application/xml")], ..case("XML", b"<event/>".to_vec(), 415, "unsupported_media_type", "application/xml") },
        Case { headers: vec![("content-type", "application/x-www-form-urlencoded")], ..case("form post", b"a=1".to_vec(), 415, "unsupported_media_type", "send application/json") },
        Case { headers: vec![("content-type", "application/json"), ("content-encoding", "br")], ..case("brotli", b"xx".to_vec(), 415, "unsupported_media_type", "Content-Encoding") },
        Case { headers: vec![("content-type", "application/json"), ("content-encoding", "gzip")], ..case("gzip bomb", gzip(&vec![b' '; 8 * 1024 * 1024]), 413, "payload_too_large", "decompresses") },
        Case { headers: vec![("content-type", "application/json"), ("content-encoding", "gzip")], ..case("broken gzip", b"not gzip".to_vec(), 400, "invalid_body", "gzip") },
        Case { path: "/api/v2/batch", ..case("batch over 500 events", format!("[{}]", vec!["{}"; 501].join(",")), 413, "payload_too_large", "at most 500") },
        Case { path: "/api/v2/batch", ..case("batch not JSON", b"[{\"a\": 1},".to_vec(), 400, "invalid_json", "line 1") },
        Case { path: "/api/v2/batch", ..case("empty batch", b"[]".to_vec(), 400, "empty_batch", "no events") },
    ]
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_field_path_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["S1"]);
    for case in cases() {
        let mut request = client().post(server.url(case.path)).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {answer}", case.name);
        assert_eq!(answer["error"], case.code, "{}: {answer}", case.name);
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(case.says),
            "{}: {message:?} should say {:?}",
            case.name,
            case.says
        );
    }
    assert!(
        export(&data, &[]).is_empty(),
        "a rejected request stored something"
    );

    // A batch keeps its valid events and reports the others, item by item.
    let good = json!({"GeneralInfo": info("CategoryPage"), "CategoryPage": {"categoryKey": "5"}});
    let bad = json!({"GeneralInfo": info("CategoryPage"), "CategoryPage": {}});
    let ndjson = format!("{good}\n{bad}\nnot json\n");
    let response = client()
        .post(server.url("/api/v2/batch"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        answer["results"][1]["message"],
        "CategoryPage.categoryKey: required field is missing"
    );
    assert_eq!(answer["results"][2]["error"], "invalid_json");
    assert_eq!(export(&data, &[]).len(), 1);

    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains(
            r#"spoor_events_rejected_total{event="StatusCart",reason="invalid_value"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"spoor_events_accepted_total{event="CategoryPage",outcome="stored"} 1"#)
    );

    let log = server.log_text();
    assert!(
        log.contains("event rejected"),
        "debug logging was on, rejections should show"
    );
    for secret in [EMAIL, PHONE, NAME] {
        assert!(!log.contains(secret), "the server log contains {secret:?}");
    }
}
