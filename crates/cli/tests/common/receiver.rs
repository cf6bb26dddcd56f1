//! A shop's webhook receiver on loopback, for the trigger tests: it records each delivery
//! and answers 503 until told to accept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Clone, Default)]
pub struct Receiver {
    pub accepting: Arc<AtomicBool>,
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    /// `Spoor-Trigger`.
    pub trigger: String,
    /// `Spoor-Sender` (on several machines).
    pub sender: String,
    /// Whether it was answered 200.
    pub accepted: bool,
    pub at: Instant,
}

impl Receiver {
    /// A receiver listening on a loopback port, and its URL.
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The keys answered 200 (once each, or more), and how many deliveries came in all.
    pub fn delivered(&self) -> (Vec<String>, usize) {
        let got = self.got.lock().unwrap();
        let keys = (got.iter().filter(|d| d.accepted))
            .map(|d| d.key.clone())
            .collect();
        (keys, got.len())
    }

    /// The senders of the deliveries in the order they came, each run of one sender told
    /// once.
    pub fn sender_runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = Vec::new();
        for delivery in self.got.lock().unwrap().iter() {
            if runs.last() != Some(&delivery.sender) {
                runs.push(delivery.sender.clone());
            }
        }
        runs
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let header = |name: &str| {
        (headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accepted = receiver.accepting.load(Ordering::SeqCst);
    receiver.got.lock().unwrap().push(Delivery {
        key: header("idempotency-key"),
        trigger: header("spoor-trigger"),
        sender: header("spoor-sender"),
        accepted,
        at: Instant::now(),
    });
    match accepted {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    }
}
