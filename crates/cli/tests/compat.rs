//! Drop-in compatibility, through the real server: every example of the tracker spec, byte
//! for byte, and every variant COMPAT.md records real clients sending, is accepted and
//! reads back through the export equal to what the request said.

mod common;

use common::{Server, export, post_json, spec_examples};
use serde_json::json;
use spoor_protocol::stored::{ExportedRecord, RecordContent};
use spoor_protocol::{Incoming, parse_request};

/// The sites the spec's examples name.
const SPEC_SITES: [&str; 4] = ["8A412DC", "8D3869C", "CE460EC", "site_id"];

/// The spec prints two product objects on their own (the discount / no-discount forms of a
/// ProductUpdate item); they are posted as the items of a ProductUpdate, verbatim.
fn as_request(example: &str) -> String {
    if example.contains("GeneralInfo") {
        example.to_string()
    } else {
        format!(
            "{{\"GeneralInfo\": {{\"eventName\": \"ProductUpdate\", \"siteId\": \"site_id\"}},\n\
             \"ProductUpdate\": [{example}]}}"
        )
    }
}

fn general(event: &str) -> serde_json::Value {
    json!({"eventName": event, "siteId": "8A412DC", "datetime": 1_700_000_000_000i64,
           "cookies": {"sc": "compat-visitor"}})
}

/// Variants from COMPAT.md, each as a real client sends it.
fn compat_variants() -> Vec<(&'static str, String)> {
    let mut woo = general("StatusCart");
    woo["externalCustomerId"] = json!(42);
    woo["cookies"] = json!({"sc": null});
    woo["user_email"] = json!("woo@example.com");
    let mut woo_purchase = woo.clone();
    woo_purchase["eventName"] = json!("PurchasedItems");
    let mut cookie_header = general("CategoryPage");
    cookie_header["cookies"] = json!("_ga=GA1.2.3; sc=HEADER-SC; theme=dark");
    let mut bare_cookie = general("CategoryPage");
    bare_cookie["cookies"] = json!("BARE-SC-VALUE");
    let mut customer = general("CustomerData");
    customer["user_card_id"] = json!("CARD-1");
    customer["user_city"] = json!("Lviv");
    customer["user_tags_gender"] = json!("f");
    let variants = vec![
        (
            "GeneralInfo as a JSON string",
            json!({
            "GeneralInfo": general("CategoryPage").to_string(),
            "CategoryPage": {"Category": {"categoryKey": "Babies"}}}),
        ),
        (
            "cookies as a raw cookie header",
            json!({
            "GeneralInfo": cookie_header, "CategoryPage": {"Category": {"categoryKey": "7"}}}),
        ),
        (
            "cookies as the bare sc value",
            json!({
            "GeneralInfo": bare_cookie, "CategoryPage": {"categoryKey": "8"}}),
        ),
        (
            "numbers and strings swapped",
            json!({
            "GeneralInfo": general("StatusCart"),
            "StatusCart": {"GUID": "g-swap", "Products": [
                {"productKey": 430738, "price": "201.95", "discount": "180", "quantity": "1"},
                {"productKey": "902339", "price": 596, "discount": 590.5, "quantity": 2},
                {"productKey": "3", "price": "754 USD", "quantity": 1, "tag_color": ["red"]}]}}),
        ),
        (
            "isInStock as 1, true and \"0\"",
            json!({
            "GeneralInfo": general("AddToWishlist"),
            "AddToWishlist": {"Product": {"productKey": "1", "price": 5, "isInStock": 1}}}),
        ),
        (
            "flat ProductPage without the Product wrapper",
            json!({
            "GeneralInfo": general("ProductPage"),
            "ProductPage": {"productKey": "72354", "price": "754", "isInStock": true}}),
        ),
        (
            "flat StatusCart: products array and a top-level GUID",
            json!({
            "GeneralInfo": general("StatusCart"),
            "StatusCart": [{"productKey": "1", "price": 10, "quantity": 1}],
            "GUID": "flat-guid"}),
        ),
        (
            "empty cart",
            json!({
            "GeneralInfo": general("StatusCart"),
            "StatusCart": {"GUID": "empty-guid", "Products": []}}),
        ),
        (
            "ProductImpressions under the plural key",
            json!({
            "GeneralInfo": general("ProductImpressions"),
            "ProductImpressions": {"Products": [{"product_id": 1, "container_type": "19534_r24v435"}]}}),
        ),
        (
            "PurchasedItems with productKey, price, GUID, TrackedOrderId and Tags.blockId",
            json!({
            "GeneralInfo": general("PurchasedItems"),
            "PurchasedItems": {"Products": [{"productKey": "1", "price": "10.50", "quantity": 1}],
                               "OrderNumber": "A-1", "GUID": "g-swap", "TrackedOrderId": "T-9",
                               "Tags": {"blockId": ["19534_r24v435"]}}}),
        ),
        (
            "Shopify purchase: TrackedOrderId at the top level",
            json!({
            "GeneralInfo": general("PurchasedItems"),
            "PurchasedItems": {"Products": [{"product_id": "44012345678901", "unit_price": "12.00",
                                             "quantity": 1}], "OrderNumber": "#1001"},
            "TrackedOrderId": "5123456789"}),
        ),
        (
            "Shopify cart: discount with two decimals, currency code, UUID GUID",
            json!({
            "GeneralInfo": general("StatusCart"),
            "StatusCart": {"GUID": "3b241101-e2bb-4255-8caf-4136c566a962", "Products": [
                {"productKey": "44012345678901", "price": "25.00", "discount": "5.00",
                 "quantity": 1, "price_currency_code": "UAH"}]}}),
        ),
        (
            "WooCommerce: numeric customer id, null sc, computed prices, cart hash",
            json!({
            "GeneralInfo": woo,
            "StatusCart": {"GUID": "9f86d081884c7d659a2feaa0c55ad015", "Products": [
                {"productKey": "15", "price": "33.333333333333", "quantity": 3}]}}),
        ),
        (
            "WooCommerce purchase identified by email only",
            json!({
            "GeneralInfo": woo_purchase,
            "PurchasedItems": {"Products": [{"product_id": 15, "unit_price": "33.333333333333",
                                             "quantity": 3}], "OrderNumber": 7781}}),
        ),
        (
            "CustomerData with extra profile fields",
            json!({"GeneralInfo": customer}),
        ),
        (
            "ProductPage with s_location from a block's Buy button",
            json!({
            "GeneralInfo": general("ProductPage"),
            "ProductPage": {"Product": {"productKey": "9", "price": 3, "s_location": "19534_r24v435"}}}),
        ),
        (
            "SearchRequest without results",
            json!({
            "GeneralInfo": general("SearchRequest"),
            "SearchRequest": {"search": "coffe", "isFound": 0}}),
        ),
        (
            "WooCommerce contact link",
            json!({
            "externalCustomerId": "77", "webId": "compat-visitor", "orgId": "1",
            "email": "link@example.com", "phone": "380501112233"}),
        ),
        (
            "contact link with a null customer id",
            json!({
            "externalCustomerId": null, "webId": "compat-visitor-2", "orgId": 1}),
        ),
        (
            "Shopify plugin log record",
            json!({
            "orgId": 123, "typeCMS": "Shopify", "errorMessage": "x", "data": "{\"a\":1}",
            "message": "m", "log_level": "INFO"}),
        ),
    ];
    variants
        .into_iter()
        .map(|(name, v)| (name, v.to_string()))
        .collect()
}

#[tokio::test]
async fn every_spec_example_and_compat_variant_is_accepted_and_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &SPEC_SITES);

    let examples = spec_examples();
    assert!(
        examples.len() >= 9,
        "expected the spec's examples, found {}",
        examples.len()
    );
    assert!(
        examples.iter().any(|e| e.contains('\u{a0}')),
        "the spec's examples carry no-break spaces; this test must post them as printed"
    );
    let mut posted: Vec<(String, String, u64)> = Vec::new();
    let mut bodies: Vec<(String, String)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("spec example {i}"), as_request(e)))
        .collect();
    bodies.extend(
        compat_variants()
            .into_iter()
            .map(|(n, b)| (n.to_string(), b)),
    );

    for (name, body) in &bodies {
        let (status, answer) = post_json(&server.url("/api/v2"), body.clone()).await;
        assert_eq!(status, 200, "{name}: {answer}");
        match answer["status"].as_str() {
            Some("ok") => posted.push((
                name.clone(),
                body.clone(),
                answer["position"].as_u64().unwrap(),
            )),
            Some("ignored") => assert!(name.contains("plugin log"), "{name}: {answer}"),
            other => panic!("{name}: unexpected answer {other:?}: {answer}"),
        }
    }

    // Clients that send a Basic API key or forward the shopper's user agent are served too.
    let response = common::client()
        .post(server.url("/api/v2"))
        .header("authorization", "Basic c29tZTprZXk=")
        .header("user-agent", "Mozilla/5.0 (shopper)")
        .header("accept", "application/json; charset=UTF-8")
        .header("content-type", "application/json; charset=UTF-8")
        .body(as_request(&examples[0]).replace("CDA68358", "BASICAUTH"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let exported = export(&data, &[]);
    let records: Vec<ExportedRecord> = exported
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    for (name, body, position) in posted {
        let record = records
            .iter()
            .find(|r| r.position == position)
            .unwrap_or_else(|| panic!("{name}: position {position} not exported"));
        let expected = match parse_request(body.as_bytes(), record.record.received_at).unwrap() {
            Incoming::Event(mut event) => {
                event.datetime.get_or_insert(record.record.received_at);
                RecordContent::Event(event)
            }
            Incoming::ContactLink(link) => RecordContent::ContactLink(link),
            Incoming::PluginLog(_) => unreachable!("plugin logs are not stored"),
        };
        assert_eq!(record.record.content, expected, "{name}");
    }
}
