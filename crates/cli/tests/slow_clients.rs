//! Clients that hold connections without finishing requests: hundreds of them, sending a
//! byte a second or nothing at all, do not keep others from being served, are cut once
//! their time limit passes, and do not hold a shutdown past its deadline.

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, metrics_text};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const HEADER_TIMEOUT_SECS: u64 = 2;
const BODY_TIMEOUT_SECS: u64 = 2;
const IDLE_TIMEOUT_SECS: u64 = 3;
/// Time for the server to notice a passed limit on a busy test machine: the limits are
/// checked for being kept, not timed.
const SLACK: Duration = Duration::from_secs(20);

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

fn event(n: usize) -> serde_json::Value {
    json!({
        "GeneralInfo": {
            "eventName": "ProductPage", "siteId": "shop",
            "datetime": 1_700_000_000_000i64 + n as i64, "cookies": {"sc": format!("visitor-{n}")}
        },
        "ProductPage": {"Product": {"productKey": "p1", "price": 10}}
    })
}

/// How a slow client's connection ended.
#[derive(Debug)]
struct Ended {
    /// From the connection's opening to the server's closing it.
    after: Duration,
    /// What the server sent before it closed (an answer, or nothing).
    received: String,
}

/// Opens a connection, writes `opening` at once, then `dribble` a byte a second, and
/// reads until the server closes the connection.
async fn slow_client(address: String, opening: String, dribble: &'static [u8]) -> Ended {
    let opened = Instant::now();
    let stream = TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(opening.as_bytes()).await.unwrap();
    let dribbling = tokio::spawn(async move {
        for byte in dribble.iter().cycle() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let _ = tokio::time::timeout(SLACK * 2, reader.read_to_end(&mut received)).await;
    let after = opened.elapsed();
    dribbling.abort();
    Ended {
        after,
        received: String::from_utf8_lossy(&received).into_owned(),
    }
}

/// A client that sends one whole request, reads its answer and then sends nothing.
async fn idle_client(address: String) -> Ended {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = "GET /healthz HTTP/1.1\r\nHost: spoor\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(SLACK * 2, stream.read_to_end(&mut received)).await;
    Ended {
        after: opened.elapsed(),
        received: String::from_utf8_lossy(&received).into_owned(),
    }
}

fn cut_count(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("spoor_http_connections_cut_total{{reason=\"{reason}\"}} ");
    (metrics.lines())
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_at_their_limits_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["shop"],
        &[
            "--http-header-timeout-secs",
            &HEADER_TIMEOUT_SECS.to_string(),
            "--http-body-timeout-secs",
            &BODY_TIMEOUT_SECS.to_string(),
            "--http-idle-timeout-secs",
            &IDLE_TIMEOUT_SECS.to_string(),
        ],
    );
    let address = address(&server);
    let mut heads = JoinSet::new();
    let mut bodies = JoinSet::new();
    let mut idles = JoinSet::new();
    for _ in 0..200 {
        let opening = "POST /api/v2 HTTP/1.1\r\nHost: spoor\r\nX-Slow: ".to_string();
        heads.spawn(slow_client(address.clone(), opening, b"abcdefgh"));
    }
    for _ in 0..100 {
        let opening = "POST /api/v2 HTTP/1.1\r\nHost: spoor\r\nContent-Type: application/json\r\n\
                       Content-Length: 500\r\n\r\n"
            .to_string();
        bodies.spawn(slow_client(address.clone(), opening, b"        "));
    }
    for _ in 0..100 {
        idles.spawn(idle_client(address.clone()));
    }

    // Meanwhile, others are served, each as soon as it asks.
    let others = client();
    for n in 0..40 {
        let answer = others
            .post(server.url("/api/v2"))
            .json(&event(n))
            .timeout(SLACK)
            .send()
            .await
            .expect("served while slow clients hold connections");
        assert_eq!(answer.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let limit = |secs: u64| Duration::from_secs(secs);
    for ended in heads.join_all().await {
        assert!(ended.after >= limit(HEADER_TIMEOUT_SECS) - Duration::from_millis(100));
        assert!(
            ended.after < limit(HEADER_TIMEOUT_SECS) + SLACK,
            "{ended:?}"
        );
        assert_eq!(ended.received, "", "a head cut short gets no answer");
    }
    for ended in bodies.join_all().await {
        assert!(ended.after >= limit(BODY_TIMEOUT_SECS) - Duration::from_millis(100));
        assert!(ended.after < limit(BODY_TIMEOUT_SECS) + SLACK, "{ended:?}");
        assert!(
            ended.received.starts_with("HTTP/1.1 408"),
            "{}",
            ended.received
        );
        assert!(ended.received.contains("\"body_timeout\""));
        assert!(ended.received.contains("--http-body-timeout-secs"));
    }
    for ended in idles.join_all().await {
        assert!(ended.received.starts_with("HTTP/1.1 200"), "{ended:?}");
        assert!(ended.after >= limit(IDLE_TIMEOUT_SECS) - Duration::from_millis(100));
        assert!(ended.after < limit(IDLE_TIMEOUT_SECS) + SLACK, "{ended:?}");
    }

    let metrics = metrics_text(&server).await;
    assert!(cut_count(&metrics, "header_timeout") >= 200, "{metrics}");
    assert!(cut_count(&metrics, "idle_timeout") >= 100, "{metrics}");
    let open: u64 = (metrics.lines())
        .filter(|line| line.starts_with("spoor_http_connections_open{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        open <= 2,
        "only the metrics client's connection is left: {open}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_wait_while_the_cap_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["shop"],
        &[
            "--http-max-connections",
            "5",
            "--http-header-timeout-secs",
            "60",
        ],
    );
    let address = address(&server);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Let the server accept the five, so that the next connection is the sixth.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = tokio::spawn({
        let url = server.url("/healthz");
        async move { client().get(url).timeout(SLACK).send().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "the sixth waits while five are open"
    );
    drop(held.pop());
    let answer = waiting
        .await
        .unwrap()
        .expect("answered once a slot is free");
    assert_eq!(answer.status().as_u16(), 200);
    drop(held);
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("spoor_http_connection_cap_reached_total "));
    assert!(!metrics.contains("spoor_http_connection_cap_reached_total 0\n"));
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_431() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["shop"],
        &["--http-max-header-bytes", "4096"],
    );
    let small = client()
        .get(server.url("/healthz"))
        .header("x-filler", "a".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status().as_u16(), 200);
    let large = client()
        .get(server.url("/healthz"))
        .header("x-filler", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status().as_u16(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_what_is_still_in_flight_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        &dir.path().join("data"),
        &["shop"],
        &[
            "--shutdown-timeout-secs",
            "2",
            "--http-body-timeout-secs",
            "600",
        ],
    );
    let address = address(&server);
    let opening = "POST /api/v2 HTTP/1.1\r\nHost: spoor\r\nContent-Length: 500\r\n\r\n".to_string();
    let in_flight = tokio::spawn(slow_client(address.clone(), opening, b" "));
    let idle = tokio::spawn(idle_client(address));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    server.signal_terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_for_exit(SLACK * 2);
        (status, server)
    });
    let ended_idle = idle.await.unwrap();
    assert!(
        ended_idle.after < Duration::from_secs(1) + SLACK,
        "an idle connection closes at once: {ended_idle:?}"
    );
    let (status, server) = status.await.unwrap();
    let status = status.expect("spoor exits once shutdown's deadline passes");
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "the deadline was kept"
    );
    let ended = in_flight.await.unwrap();
    assert_eq!(ended.received, "", "the unfinished request got no answer");
    assert!(
        server
            .log_text()
            .contains("shutdown's deadline passed: closing connections")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_answer_is_cut_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["shop"],
        &["--http-idle-timeout-secs", "2"],
    );
    // An export of megabytes, more than the socket buffers between server and client hold.
    for start in (0..20_000).step_by(500) {
        let batch: Vec<serde_json::Value> = (start..start + 500).map(event).collect();
        common::post_batch(&server, &batch).await;
    }
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let request = format!(
        "GET /admin/v1/events/export HTTP/1.1\r\nHost: spoor\r\nAuthorization: Bearer {}\r\n\r\n",
        common::ADMIN_TOKEN
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Reads nothing, for longer than the limit.
    let deadline = Instant::now() + SLACK;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = metrics_text(&server).await;
        if cut_count(&metrics, "send_timeout") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not cut: {metrics}");
    }
    // What the client gets now ends early: the connection was closed.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(SLACK, stream.read_to_end(&mut received)).await;
    let whole = client()
        .get(server.url("/admin/v1/events/export"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        received.len() < whole.len(),
        "{} of {} bytes",
        received.len(),
        whole.len()
    );
}
