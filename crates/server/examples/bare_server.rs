//! The ingest benchmark's yardstick: an axum server that reads and parses the same JSON
//! body spoor does and answers 200 without validating or storing anything.
//!
//! `cargo run --release -p spoor-server --example bare_server -- 127.0.0.1:8081`

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

async fn accept(body: Bytes) -> (StatusCode, &'static str) {
    let cleaned = spoor_protocol::json::tolerate_nbsp(&body);
    match serde_json::from_slice::<serde_json::Value>(&cleaned) {
        Ok(_) => (StatusCode::OK, r#"{"status":"ok"}"#),
        Err(_) => (StatusCode::BAD_REQUEST, r#"{"error":"invalid_json"}"#),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("bare server listening on {address}");
    axum::serve(listener, Router::new().route("/api/v2", post(accept))).await
}
