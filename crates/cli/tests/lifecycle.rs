//! The server's life: start, administration, graceful shutdown, restart, export and
//! import, through the real binary.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{ADMIN_TOKEN, Server, client, export, ndjson, post_json, run_ok, spoor};
use serde_json::{Value, json};

fn view(site: &str, sc: &str) -> String {
    json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": site, "cookies": {"sc": sc}},
           "ProductPage": {"Product": {"productKey": "1", "price": 5}}})
    .to_string()
}

async fn admin_get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn graceful_shutdown_restart_and_duplicates_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["S1"]);
    for i in 0..20 {
        let (status, _) = post_json(&server.url("/api/v2"), view("S1", &format!("v{i}"))).await;
        assert_eq!(status, 200);
    }
    let status = server.terminate();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert!(server.log_text().contains("stopped cleanly"));

    let server = Server::start(&data, &["S1"]);
    let (status, answer) = post_json(&server.url("/api/v2"), view("S1", "v3")).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("Duplicated request")
    );
    let (status, answer) = post_json(&server.url("/api/v2"), view("S1", "v20")).await;
    assert_eq!((status, answer["position"].as_u64()), (200, Some(20)));

    assert_eq!(admin_get(&server, "/healthz", None).await.0, 200);
    assert_eq!(admin_get(&server, "/readyz", None).await.0, 200);
    let (_, metrics) = admin_get(&server, "/metrics", None).await;
    assert!(metrics.contains("spoor_log_records 21"), "{metrics}");
    assert!(metrics.contains("spoor_log_fsync_duration_seconds_count"));
    let (status, body) = admin_get(&server, "/nowhere", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("POST /api/v2"));

    // A gzip body is accepted like a plain one.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(view("S1", "gzipped").as_bytes()).unwrap();
    let response = client()
        .post(server.url("/api/v2"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(export(&data, &[]).len(), 22);
}

#[tokio::test]
async fn sites_are_administered_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    let (status, body) = post_json(&server.url("/api/v2"), view("8A412DC", "a")).await;
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spoor serve --site 8A412DC")
    );

    assert_eq!(admin_get(&server, "/admin/v1/sites", None).await.0, 401);
    assert_eq!(
        admin_get(&server, "/admin/v1/sites", Some("wrong")).await.0,
        401
    );

    let create = |body: Value| {
        client()
            .post(server.url("/admin/v1/sites"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let response = create(json!({"siteId": "8A412DC", "name": "Demo shop"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = create(json!({"siteId": "8A412DC"})).await.unwrap();
    assert_eq!(response.status(), 409);
    let response = create(json!({"name": "Generated"})).await.unwrap();
    assert_eq!(response.status(), 201);
    let generated: Value = response.json().await.unwrap();
    let id = generated["siteId"].as_str().unwrap();
    assert!(
        id.len() == 7
            && id
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    let response = create(json!({"siteId": "has space"})).await.unwrap();
    assert_eq!(response.status(), 400);

    let (status, list) = admin_get(&server, "/admin/v1/sites", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["sites"].as_array().unwrap().len(), 2);

    let (status, _) = post_json(&server.url("/api/v2"), view("8A412DC", "a")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn export_and_import_through_the_cli_and_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let source_data = dir.path().join("source");
    let source = Server::start(&source_data, &["S1", "S2"]);
    for i in 0..30 {
        let site = if i % 3 == 0 { "S2" } else { "S1" };
        post_json(&source.url("/api/v2"), view(site, &format!("e{i}"))).await;
    }

    // The admin endpoint streams the same export the CLI writes.
    let (status, streamed) = admin_get(&source, "/admin/v1/events/export", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    let cli_export = export(&source_data, &[]);
    assert_eq!(ndjson(&streamed), cli_export);
    assert_eq!(export(&source_data, &["--site", "S2"]).len(), 10);
    let (_, only_s2) = admin_get(
        &source,
        "/admin/v1/events/export?site=S2",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(only_s2.lines().count(), 10);
    assert_eq!(
        admin_get(&source, "/admin/v1/events/export", None).await.0,
        401
    );

    let file = dir.path().join("events.ndjson");
    run_ok(
        spoor()
            .args(["events", "export", "--data"])
            .arg(&source_data)
            .arg("--output")
            .arg(&file),
    );

    // Into a running server, twice: stored once.
    let target = Server::start(&dir.path().join("target"), &[]);
    for expected_imported in [30, 0] {
        let output = run_ok(
            spoor()
                .args(["events", "import", "--url", &target.base])
                .args(["--admin-token", ADMIN_TOKEN])
                .arg(&file),
        );
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["imported"], expected_imported, "{summary}");
        let mut registered: Vec<&str> = (summary["sitesRegistered"].as_array().unwrap().iter())
            .map(|site| site.as_str().unwrap())
            .collect();
        registered.sort_unstable();
        let expected: &[&str] = if expected_imported > 0 {
            &["S1", "S2"]
        } else {
            &[]
        };
        assert_eq!(registered, expected, "{summary}");
    }
    let (_, sites) = admin_get(&target, "/admin/v1/sites", Some(ADMIN_TOKEN)).await;
    let sites: Value = serde_json::from_str(&sites).unwrap();
    let listed: Vec<&str> = (sites["sites"].as_array().unwrap().iter())
        .map(|site| site["siteId"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["S1", "S2"],
        "the import registered the sites it brought"
    );
    let (_, target_export) = admin_get(&target, "/admin/v1/events/export", Some(ADMIN_TOKEN)).await;
    assert_eq!(ndjson(&target_export), cli_export);

    // Into a data directory no server holds; refused while a server holds it.
    let offline = dir.path().join("offline");
    run_ok(
        spoor()
            .args(["events", "import", "--data"])
            .arg(&offline)
            .arg(&file),
    );
    assert_eq!(export(&offline, &[]), cli_export);
    let output = spoor()
        .args(["events", "import", "--data"])
        .arg(&source_data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("another spoor process"));
}

#[test]
fn help_documents_every_command_and_flag() {
    let output = spoor().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("serve") && help.contains("events"));
    let output = spoor().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "SPOOR_LISTEN",
        "--data",
        "SPOOR_DATA",
        "--site",
        "--admin-token",
        "SPOOR_ADMIN_TOKEN",
        "--allow-private-targets",
        "SPOOR_ALLOW_PRIVATE_TARGETS",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
    let output = spoor()
        .args(["events", "export", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--since") && help.contains("--site"));
}

/// The operations the running server answers (a route of its own: never the fallback's
/// 404 or 405) are exactly those the document describes. The paths probed are those the
/// router is built from, so a route added without a document entry fails here.
#[tokio::test]
async fn every_operation_in_openapi_json_is_served_and_no_other() {
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
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.to_uppercase()));
        }
    }
    let mut served = std::collections::BTreeSet::new();
    for path in spoor_server::route_paths() {
        let concrete = path
            .replace("{site_id}", "S1")
            .replace("{block_id}", "b1")
            .replace("{trigger_id}", "t1")
            .replace("{product_key}", "p1");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let response = client()
                .request(method.parse().unwrap(), server.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if status != 405 && !body.contains("no route for") {
                served.insert((path.to_string(), method.to_string()));
            }
        }
    }
    assert_eq!(served, documented);
    assert!(served.len() >= 30, "{} operations", served.len());
}

/// A request that panics is answered 500 alone and the server goes on; a panic of the
/// state's follower makes `/readyz` say so and the process stop with an error (for its
/// supervisor to restart it), losing nothing acknowledged. Faults come from a switch that
/// the test builds have and `SPOOR_FAULT_INJECTION=1` turns on.
#[tokio::test]
async fn a_request_panic_is_one_500_and_a_follower_panic_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let on = std::path::Path::new("1");
    let mut server = Server::start_with_env(&data, &["S1"], &[], &[("SPOOR_FAULT_INJECTION", on)]);
    let panicked = client()
        .get(server.url("/healthz"))
        .header("spoor-fault", "panic")
        .send()
        .await
        .unwrap();
    assert_eq!(panicked.status().as_u16(), 500);
    let body: Value = panicked.json().await.unwrap();
    assert_eq!(body["error"], "internal", "{body}");
    let after = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 200, "the server goes on");

    // A request still in flight when the state fails: its body never ends.
    let mut in_flight = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = "POST /api/v2 HTTP/1.1\r\nHost: spoor\r\nContent-Length: 100\r\n\r\n{";
    tokio::io::AsyncWriteExt::write_all(&mut in_flight, head.as_bytes())
        .await
        .unwrap();

    let event = r#"{"GeneralInfo": {"eventName": "CategoryPage", "siteId": "S1",
        "cookies": {"sc": "x"}}, "CategoryPage": {"categoryKey": "1"}}"#;
    let failed_at = std::time::Instant::now();
    let stored = client()
        .post(server.url("/api/v2"))
        .header("spoor-fault", "follower")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.status().as_u16(),
        200,
        "acknowledged before the follower applies it"
    );
    let not_ready = loop {
        let ready = client().get(server.url("/readyz")).send().await.unwrap();
        if ready.status().as_u16() == 503 {
            break ready.json::<Value>().await.unwrap();
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(3),
            "readyz says so meanwhile"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        not_ready["message"].as_str().unwrap().contains("panic"),
        "{not_ready}"
    );
    let status = server
        .wait_for_exit(Duration::from_secs(30))
        .expect("the process stops after its follower panicked");
    assert!(!status.success(), "with an error, for a supervisor to see");
    assert!(
        failed_at.elapsed() >= Duration::from_secs(10),
        "requests in flight had their 10 s"
    );
    assert!(
        server
            .log_text()
            .contains("requests did not finish within 10 s"),
        "the request in flight was cut at the deadline"
    );
    drop(in_flight);
    assert!(server.log_text().contains("the state follower panicked"));

    // A restart rebuilds the state from the log, the acknowledged event in it.
    let server = Server::start(&data, &["S1"]);
    let applied = "/api/v1/sites/S1?after=0";
    let (status, site) = common::call(reqwest::Method::GET, &server, applied).await;
    assert_eq!(status, 200, "{site}");
    assert_eq!(site["contacts"], 1, "{site}");
}

/// Open connections per HTTP thread, from `/metrics` (asked on a connection of its own).
async fn connections_per_thread(server: &Server) -> Vec<i64> {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts: Vec<(u32, i64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("spoor_http_connections_open{thread=\"")?;
            let (thread, value) = rest.split_once("\"} ")?;
            Some((thread.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect();
    counts.sort_unstable();
    counts.into_iter().map(|(_, open)| open).collect()
}

#[tokio::test]
async fn connections_are_spread_over_the_http_threads_and_counted_out_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["8A412DC"],
        &["--http-threads", "3"],
    );
    assert!(server.log_text().contains("\"http_threads\":3"));
    // Six clients, each keeping its one connection open after an event.
    let mut clients = Vec::new();
    for n in 0..6 {
        let client = client();
        let answer = client
            .post(server.url("/api/v2"))
            .header("Content-Type", "application/json")
            .body(view("8A412DC", &format!("thread-test-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        clients.push(client);
    }
    // The six, and the one that asks: seven, spread 3, 2, 2.
    let counts = connections_per_thread(&server).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.iter().sum::<i64>(), 7, "{counts:?}");
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // Only the connection that asks is left, once the server has seen the others close.
        let counts = connections_per_thread(&server).await;
        if counts.iter().sum::<i64>() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still open: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
