//! A full disk is an outage, never a loss: with the data directory on a small tmpfs the
//! test mounts, filling it makes writes 503 `storage_unavailable` and `/readyz` 503,
//! settings and snapshots that cannot be written stay as they were, writes resume once
//! space returns without a restart, and every acknowledged event is in the export.
//!
//! Mounting needs root (as CI runs); elsewhere the test says so and does nothing.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Server, client, export};
use serde_json::{Value, json};

const DISK_MIB: u64 = 40;
const BALLAST_MIB: usize = 8;

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<SmallDisk> {
        if !is_root() {
            eprintln!("full_disk: not root, so no filesystem can be mounted; skipped");
            return None;
        }
        fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs as root failed");
        Some(SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    (status.lines())
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(1))
        == Some("0")
}

/// Writes zeros to `path` until the disk refuses more.
fn fill(path: &Path) {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
}

fn event(n: usize) -> Value {
    json!({
        "GeneralInfo": {"eventName": "ProductPage", "siteId": "shop",
                        "datetime": 1_700_000_000_000i64 + n as i64,
                        "cookies": {"sc": format!("visitor-{n}")}},
        "ProductPage": {"Product": {"productKey": format!("product-{n}"), "price": 10,
                                    "name": "x".repeat(200)}}
    })
}

/// Posts events `from..from + 100` as one batch: their positions if acknowledged, else
/// the refusal's status and answer.
async fn post(base: &str, from: usize) -> Result<Vec<(u64, usize)>, (u16, Value)> {
    let batch: Vec<Value> = (from..from + 100).map(event).collect();
    let response = client()
        .post(format!("{base}/api/v2/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, answer));
    }
    let results = answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    Ok((results.iter().enumerate())
        .map(|(i, r)| (r["position"].as_u64().unwrap(), from + i))
        .collect())
}

async fn status_of(server: &Server, path: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_settings(server: &Server, origin: &str) -> (u16, Value) {
    let response = client()
        .put(server.url("/admin/v1/sites/shop/settings"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"corsOrigins": [origin]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_an_outage_never_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory is the small disk (the server's own log goes beside it).
    let data = dir.path().join("data");
    let Some(_disk) = SmallDisk::mount(&data) else {
        return;
    };
    let ballast = data.join("ballast");
    fs::write(&ballast, vec![1u8; BALLAST_MIB * 1024 * 1024]).unwrap();

    // A first run leaves a state snapshot and settings to keep.
    let mut acknowledged: Vec<(u64, usize)> = Vec::new();
    let mut next = 0;
    let mut server = Server::start(&data, &["shop"]);
    assert_eq!(put_settings(&server, "https://kept.example").await.0, 200);
    acknowledged.extend(post(&server.base, next).await.unwrap());
    next += 100;
    assert!(server.terminate().success());
    let snapshot = fs::read(data.join("state.snapshot")).unwrap();
    let sites = fs::read(data.join("sites.json")).unwrap();

    // Events until the log has no room for its next segment.
    let mut server = Server::start(&data, &["shop"]);
    let refusal = loop {
        match post(&server.base, next).await {
            Ok(positions) => acknowledged.extend(positions),
            Err(refusal) => break refusal,
        }
        next += 100;
        assert!(next < 1_000_000, "the disk never filled");
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert_eq!(refusal.1["error"], "storage_unavailable", "{refusal:?}");
    let (ready, why) = status_of(&server, "/readyz").await;
    assert_eq!(ready, 503);
    assert!(
        why["message"].as_str().unwrap().contains("next segment"),
        "{why}"
    );

    // Every byte taken: settings cannot be written, and stay as they were.
    let filler = data.join("filler");
    fill(&filler);
    assert!(
        post(&server.base, next).await.is_err(),
        "refused while full"
    );
    let (status, answer) = put_settings(&server, "https://lost.example").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("storage_unavailable"))
    );
    let (_, settings) = status_of(&server, "/admin/v1/sites/shop/settings").await;
    assert_eq!(settings["corsOrigins"], json!(["https://kept.example"]));
    assert_eq!(fs::read(data.join("sites.json")).unwrap(), sites);

    // Space returns: writes resume without a restart.
    fs::remove_file(&ballast).unwrap();
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status_of(&server, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    next += 100;
    acknowledged.extend(post(&server.base, next).await.expect("taken again"));
    next += 100;

    // Full again when the server stops: its snapshot cannot be written, the old one stays.
    fill(&filler);
    let stopped = server.terminate();
    assert!(stopped.success(), "{stopped}: {}", server.log_text());
    assert_eq!(fs::read(data.join("state.snapshot")).unwrap(), snapshot);
    assert!(
        !data.join("state.tmp").exists(),
        "no part of a snapshot left"
    );

    // A start on the full disk is clean, and so is one once space returns.
    let mut server = Server::start(&data, &["shop"]);
    let stopped = server.terminate();
    assert!(stopped.success(), "{stopped}: {}", server.log_text());
    fs::remove_file(&filler).unwrap();
    let server = Server::start(&data, &["shop"]);
    acknowledged.extend(
        post(&server.base, next)
            .await
            .expect("taken after the restart"),
    );
    drop(server);

    let product_at: HashMap<u64, String> = (export(&data, &[]).iter())
        .map(|record| {
            let position = record["position"].as_u64().unwrap();
            let text = record.to_string();
            let digits = text.find("product-").map(|at| {
                text[at + 8..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect()
            });
            (position, digits.unwrap_or_default())
        })
        .collect();
    for (position, n) in &acknowledged {
        assert_eq!(
            product_at.get(position),
            Some(&n.to_string()),
            "acknowledged record {position} is in the export"
        );
    }
    assert!(
        acknowledged.len() > 10_000,
        "{} acknowledged",
        acknowledged.len()
    );
}

/// The server's own log on a disk that fills: log lines are lost, the server goes on.
#[tokio::test]
async fn a_server_whose_log_cannot_be_written_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let Some(_disk) = SmallDisk::mount(&logs) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = common::spoor()
        .args(["serve", "--listen", &listen, "--admin-token", ADMIN_TOKEN])
        .args(["--site", "shop", "--log-segment-mib", "2", "--data"])
        .arg(dir.path().join("data"))
        .env("SPOOR_LOG", "debug")
        .stderr(fs::File::create(logs.join("spoor.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "spoor did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fill(&logs.join("filler"));
    // Each refused event is a debug line the log cannot take.
    for _ in 0..300 {
        let refused = client()
            .post(format!("{base}/api/v2"))
            .body("{\"not\": \"an event\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 400);
    }
    post(&base, 0).await.expect("events are still taken");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "a clean stop");
}
