//! The OpenAPI document against the router itself, through the real server: every
//! documented path answers each documented method with a route of its own (never the
//! fallback's 404 or 405), and refuses every other method with 405.

mod common;

use common::{ADMIN_TOKEN, Server, client};
use serde_json::Value;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// A path with its `{parameters}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{site_id}", "S1")
        .replace("{block_id}", "b1")
        .replace("{trigger_id}", "t1")
        .replace("{product_key}", "p1")
}

#[tokio::test]
async fn every_documented_route_and_method_is_served_and_no_other_method() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["S1"]);
    let document: Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (path, operations) in paths {
        let documented: Vec<String> = (operations.as_object().unwrap().keys())
            .map(|method| method.to_uppercase())
            .collect();
        for method in METHODS {
            let response = client()
                .request(method.parse().unwrap(), server.url(&concrete(path)))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let fallback = matches!(
                answer["error"].as_str(),
                Some("method_not_allowed") | Some("not_found")
                    if answer["message"].as_str().is_some_and(|m| {
                        m.starts_with("no route") || m.contains("is not allowed on")
                    })
            );
            if documented.iter().any(|m| m == method) {
                assert!(
                    !fallback,
                    "{method} {path} is documented but not served: {answer}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }
}
