//! Crash safety: SIGKILL the server again and again while clients post, restart it, and
//! check that every acknowledged event is in the export exactly once and the log reads
//! cleanly.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, export};
use serde_json::json;

const CLIENTS: usize = 24;
const KILLS: usize = 5;

fn event(client: usize, n: usize) -> String {
    json!({
        "GeneralInfo": {"eventName": "ProductPage", "siteId": "S1",
                        "cookies": {"sc": format!("crash-{client}-{n}")}},
        "ProductPage": {"Product": {"productKey": format!("{}", n % 50), "price": "9.99 EUR"}}
    })
    .to_string()
}

/// Posts unique events until the server stops answering; returns the acknowledged cookies.
async fn post_until_refused(
    base: String,
    client_id: usize,
    start: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for n in start.. {
        let result = client
            .post(format!("{base}/api/v2"))
            .header("content-type", "application/json")
            .body(event(client_id, n))
            .send()
            .await;
        match result {
            Ok(response) if response.status() == 200 => {
                let answer: serde_json::Value = match response.json().await {
                    Ok(answer) => answer,
                    Err(_) => return, // killed while answering: not acknowledged
                };
                assert_eq!(answer["status"], "ok");
                acked.lock().unwrap().push(format!("crash-{client_id}-{n}"));
            }
            Ok(response) => panic!("unexpected status {}", response.status()),
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_repeated_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..KILLS {
        let mut server = Server::start(&data, &["S1"]);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(post_until_refused(
                    server.base.clone(),
                    c,
                    round * 1_000_000,
                    acked.clone(),
                ))
            })
            .collect();
        // Kill at a different moment each round, while requests are in flight.
        tokio::time::sleep(Duration::from_millis(150 + 70 * round as u64)).await;
        server.kill();
        for client in clients {
            client.await.unwrap();
        }
    }

    // The log opens (recovering any torn tail) and reads cleanly.
    let server = Server::start(&data, &["S1"]);
    let exported = export(&data, &[]);
    drop(server);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in &exported {
        let sc = line["event"]["visitor"]["sc"].as_str().unwrap().to_string();
        *seen.entry(sc).or_default() += 1;
    }
    let acked = acked.lock().unwrap();
    eprintln!(
        "{} acknowledged, {} stored, over {KILLS} kills",
        acked.len(),
        exported.len()
    );
    assert!(
        acked.len() > 100,
        "too few acknowledged events ({}) to test anything",
        acked.len()
    );
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len());
    for sc in acked.iter() {
        assert_eq!(
            seen.get(sc),
            Some(&1),
            "acknowledged event {sc} is not in the log exactly once"
        );
    }
    // Nothing at all is stored twice, acknowledged or not.
    assert!(seen.values().all(|&count| count == 1));
    let positions: Vec<u64> = exported
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (0..exported.len() as u64).collect::<Vec<_>>());
}
