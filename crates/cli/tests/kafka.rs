//! spoor on a Kafka-protocol log: a real broker (Tansu, its topics in an SQLite file),
//! started here, killed and restarted. Events are acknowledged only once the broker has
//! them; a broker out of reach gives 503 and never a 200; the state, the export and an
//! offline rebuild all read the topic.
//!
//! Needs the `tansu` binary (`cargo install tansu --locked --features libsql`, as
//! .ci/run does): skipped without it, unless SPOOR_REQUIRE_KAFKA=1 says it must run.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{Server, call, call_json, client, get, ndjson, post_json, run_ok, spoor};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn tansu() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SPOOR_REQUIRE_KAFKA").is_none_or(|v| v != "1"),
            "SPOOR_REQUIRE_KAFKA=1 but no tansu on PATH: cargo install tansu --locked --features libsql"
        );
        eprintln!("skipped: no tansu on PATH (cargo install tansu --locked --features libsql)");
    }
    found
}

/// The tests that run a broker take turns: two brokers and their nodes on two cores at
/// once starve each other, and Tansu then resets connections for seconds on end.
static ONE_BROKER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Tansu broker on a loopback port, its data in an SQLite file that outlives a kill.
struct Broker {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn start(binary: PathBuf, dir: &Path) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = Broker {
            binary,
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        broker.restart();
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join(format!("broker-{}.log", now_ms()))).unwrap();
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--kafka-listener-url", &url])
            .args(["--advertised-listener-url", &url])
            // Tansu reads the file's path relative to its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the broker wrote to its standard error, each run's in turn (warnings only).
    fn log_text(&self) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        logs.retain(|path| path.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs.iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                format!("--- {}\n{text}", path.display())
            })
            .collect()
    }

    /// SIGKILL: whatever the broker acknowledged must be in its SQLite file.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn kafka_args<'a>(broker: &'a str, topic: &'a str) -> Vec<&'a str> {
    vec![
        "--log",
        "kafka",
        "--kafka-brokers",
        broker,
        "--kafka-topic",
        topic,
    ]
}

fn view(n: usize) -> Value {
    json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S1", "datetime": T0 + n as i64,
                           "cookies": {"sc": format!("visitor-{}", n % 7)}},
           "ProductPage": {"Product": {"productKey": format!("p{}", n % 11), "price": "10", "isInStock": 1}}})
}

/// Waits until the server has applied `records` records; returns its digest of site S1.
async fn digest_once_applied(server: &Server, records: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(server, "/api/v1/sites/S1?digest=1").await;
        if status == 200 && body["statePosition"].as_u64().unwrap_or(0) >= records {
            return body["stateDigest"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the state did not apply {records} records: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `datetime` of every event in an export.
fn event_times(records: &[Value]) -> Vec<i64> {
    fn walk(value: &Value, out: &mut Vec<i64>) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    match field.as_i64() {
                        Some(ms) if name == "datetime" => out.push(ms),
                        _ => walk(field, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    records.iter().for_each(|record| walk(record, &mut out));
    out
}

fn rebuild_digest(data: &Path, broker: &str, topic: &str) -> String {
    let output = run_ok(
        spoor()
            .args(["state", "rebuild", "--data"])
            .arg(data)
            .args(kafka_args(broker, topic)),
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let site = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["siteId"] == "S1")
        .unwrap_or_else(|| panic!("no S1 in {report}"));
    site["stateDigest"].as_str().unwrap().to_string()
}

fn export_topic(data: &Path, broker: &str, topic: &str) -> Vec<Value> {
    let output = run_ok(
        spoor()
            .args(["events", "export", "--data"])
            .arg(data)
            .args(kafka_args(broker, topic)),
    );
    ndjson(&String::from_utf8(output.stdout).unwrap())
}

#[tokio::test]
#[ignore = "needs tansu; run by .ci/run"]
async fn events_live_on_the_topic_and_a_broker_out_of_reach_gives_503_never_200() {
    let Some(binary) = tansu() else { return };
    let _one_broker_at_a_time = ONE_BROKER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(binary, &dir.path().join("broker"));
    let address = broker.address();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &["S1"], &kafka_args(&address, "events"));

    for n in 0..30 {
        let (status, body) = post_json(&server.url("/api/v2"), view(n).to_string()).await;
        assert_eq!(status, 200, "event {n}: {body}");
    }
    let served = digest_once_applied(&server, 30).await;
    assert_eq!(rebuild_digest(&data, &address, "events"), served);
    // Where the records of a time begin, as a new ingest node asks to read only the
    // duplicate window.
    let spec = spoor_log::LogSpec::Kafka(spoor_log::KafkaConfig {
        brokers: address.clone(),
        topic: "events".into(),
        settings_topic: "events-settings".into(),
        keys_topic: "events-keys".into(),
        outbox_topic: "events-outbox".into(),
        properties: Vec::new(),
    });
    let log = spoor_log::open_read_only(&spec).unwrap();
    let now = now_ms() as i64;
    let positions = tokio::task::spawn_blocking(move || {
        [log.position_at(0), log.position_at(now + 3_600_000)].map(Result::unwrap)
    })
    .await
    .unwrap();
    // Tansu 0.6 answers offset 0 for any time (a Kafka broker, the end for a time after
    // the last record): the node then reads the whole topic, as it would without asking.
    assert_eq!(positions[0], Some(0));
    assert!(
        positions[1].is_some_and(|p| p == 0 || p == 30),
        "{positions:?}"
    );
    let exported = export_topic(&data, &address, "events");
    assert_eq!(exported.len(), 30);
    assert_eq!(exported[0]["position"], 0);
    // Erasure by keys (its own test below) answers for whom it knows.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &server,
        "/api/v1/sites/S1/contacts?email=someone%40example.com",
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // The broker goes away: no event is acknowledged, every one is told to retry.
    broker.kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    let refused = loop {
        let started = Instant::now();
        let (status, body) = post_json(&server.url("/api/v2"), view(100).to_string()).await;
        assert_ne!(
            status, 200,
            "an event was acknowledged with the broker down: {body}"
        );
        if status == 503 {
            break (body, started.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "no 503 with the broker down: {status} {body}"
        );
    };
    assert_eq!(refused.0["error"], "storage_unavailable", "{}", refused.0);
    assert!(
        refused.0["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{}",
        refused.0
    );
    for n in 101..106 {
        let (status, body) = post_json(&server.url("/api/v2"), view(n).to_string()).await;
        assert_eq!(status, 503, "event {n} with the broker down: {body}");
    }
    let (ready, _) = get(&server, "/readyz").await;
    assert_eq!(ready, 503, "readiness with the broker down");

    // Back: events are taken again, the earlier ones all still there.
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = post_json(&server.url("/api/v2"), view(200).to_string()).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken after the broker came back: {status} {body}\nthe node's log:\n{}\nthe broker's:\n{}",
            server.log_text(),
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let exported = export_topic(&data, &address, "events");
    let stored = exported.len() as u64;
    let times = event_times(&exported);
    for n in (0..30).chain([200]) {
        assert!(
            times.contains(&(T0 + n)),
            "acknowledged event {n} is not in the topic"
        );
    }
    let served = digest_once_applied(&server, stored).await;
    assert_eq!(rebuild_digest(&data, &address, "events"), served);

    // A new server on a fresh data directory builds the same state from the topic alone.
    server.terminate();
    let fresh = Server::start_with(
        &dir.path().join("fresh"),
        &["S1"],
        &kafka_args(&address, "events"),
    );
    assert_eq!(digest_once_applied(&fresh, stored).await, served);

    // An export imported into another topic stores the same records.
    let file = dir.path().join("export.ndjson");
    std::fs::write(
        &file,
        exported
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>(),
    )
    .unwrap();
    run_ok(
        spoor()
            .args(["events", "import"])
            .arg(&file)
            .arg("--data")
            .arg(dir.path().join("copy"))
            .args(kafka_args(&address, "copy")),
    );
    let copied = export_topic(&dir.path().join("copy"), &address, "copy");
    assert_eq!(copied.len(), exported.len());

    // Topics that would lose acknowledged events are refused before anything is written
    // to them: one deleting records after a week, one compacted (the latest event of each
    // site kept).
    for (topic, setting) in [
        ("weekly", "retention.ms=604800000"),
        ("compacted", "cleanup.policy=compact"),
    ] {
        let created = Command::new(&broker.binary)
            .args(["topic", "create", "--broker", &format!("tcp://{address}")])
            .args(["--partitions", "1", "--config", setting, topic])
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
        let refused = spoor()
            .args(["events", "import"])
            .arg(&file)
            .arg("--data")
            .arg(dir.path().join(topic))
            .args(kafka_args(&address, topic))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success(),
            "topic {topic} ({setting}) was written to"
        );
        assert!(stderr.contains(setting), "{stderr}");
    }
}

/// Polls `path` on `server` until `accept` takes the answer; fails after a while.
async fn eventually(
    server: &Server,
    path: &str,
    what: &str,
    accept: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(server, path).await;
        if accept(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {body} from {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn block(name: &str) -> Value {
    json!({"name": name, "algorithm": "popular", "size": 4})
}

#[tokio::test]
#[ignore = "needs tansu; run by .ci/run"]
async fn nodes_on_one_topic_share_sites_keys_and_blocks_and_build_the_same_state() {
    let Some(binary) = tansu() else { return };
    let _one_broker_at_a_time = ONE_BROKER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(binary, &dir.path().join("broker"));
    let address = broker.address();
    let args = kafka_args(&address, "shared");
    let first = Server::start_with(&dir.path().join("first"), &["S1"], &args);
    let second = Server::start_with(&dir.path().join("second"), &[], &args);

    // A site registered on one node is known to the other, and its key works there.
    eventually(
        &second,
        "/admin/v1/sites",
        "the site reached the second node",
        |s, b| s == 200 && b.to_string().contains("\"S1\""),
    )
    .await;
    let (status, answer) = call(reqwest::Method::POST, &first, "/admin/v1/sites/S1/api-key").await;
    assert_eq!(status, 200, "{answer}");
    let key = answer["apiKey"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client()
            .get(second.url("/api/v1/sites/S1"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key never worked on the second node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A block set on either node reaches the other; the node that sets it reads its
    // own change at once, never an earlier one.
    let path = "/admin/v1/sites/S1/blocks/home";
    let (status, body) =
        call_json(reqwest::Method::PUT, &second, path, &block("from second")).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    eventually(&first, path, "the block reached the first node", |s, b| {
        s == 200 && b["name"] == "from second"
    })
    .await;
    for version in 0..5 {
        let name = format!("version {version}");
        let (status, body) = call_json(reqwest::Method::PUT, &first, path, &block(&name)).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = get(&first, path).await;
        assert_eq!(
            (status, body["name"].as_str()),
            (200, Some(name.as_str())),
            "{body}"
        );
    }
    eventually(
        &second,
        path,
        "the last version reached the second node",
        |s, b| s == 200 && b["name"] == "version 4",
    )
    .await;
    let (status, _) = call(reqwest::Method::DELETE, &first, path).await;
    assert!(status == 200 || status == 204, "{status}");
    eventually(
        &second,
        path,
        "the removal reached the second node",
        |s, _| s == 404,
    )
    .await;

    // Events taken by both nodes make one state, the same on each.
    for n in 0..20 {
        let node = if n % 2 == 0 { &first } else { &second };
        let (status, body) = post_json(&node.url("/api/v2"), view(n).to_string()).await;
        assert_eq!(status, 200, "event {n}: {body}");
    }
    let on_first = digest_once_applied(&first, 20).await;
    assert_eq!(digest_once_applied(&second, 20).await, on_first);
    assert_eq!(
        rebuild_digest(&dir.path().join("first"), &address, "shared"),
        on_first
    );

    // A node started later on an empty data directory has it all from the broker.
    let third = Server::start_with(&dir.path().join("third"), &[], &args);
    eventually(&third, path, "the removed block on a new node", |s, _| {
        s == 404
    })
    .await;
    let response = client()
        .get(third.url("/api/v1/sites/S1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the key on a node started later");
    assert_eq!(digest_once_applied(&third, 20).await, on_first);
    let copy = std::fs::read_to_string(dir.path().join("third/sites.json")).unwrap();
    assert!(
        copy.contains("\"S1\""),
        "the new node's copy of the sites: {copy}"
    );
}

/// A node of a role at a fixed address, so that it is found where it was after a kill.
struct Node {
    server: Server,
    data: PathBuf,
    listen: String,
    args: Vec<String>,
}

impl Node {
    fn start(data: PathBuf, sites: &[&str], args: Vec<String>) -> Node {
        let listen = common::browser::free_address();
        let server = Node::launch(&data, sites, &listen, &args);
        Node {
            server,
            data,
            listen,
            args,
        }
    }

    fn launch(data: &Path, sites: &[&str], listen: &str, args: &[String]) -> Server {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_listening_with(data, sites, listen, &args)
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// SIGKILL, then a start on the same data directory and address.
    fn kill_and_restart(&mut self) {
        self.server.kill();
        self.server = Node::launch(&self.data, &[], &self.listen, &self.args);
    }
}

fn role_args(broker: &str, topic: &str, role: &str) -> Vec<String> {
    let mut args: Vec<String> = kafka_args(broker, topic)
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(["--role".to_string(), role.to_string()]);
    args
}

/// Posts events `from..` until told to stop, each to one ingest node and, when that one
/// fails, to the other, as a client behind a load balancer retries; answers the events
/// acknowledged.
async fn post_until_stopped(
    urls: [String; 2],
    from: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<usize> {
    let mut acknowledged = Vec::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut n = from;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for attempt in 0.. {
            let url = &urls[(n + attempt) % 2];
            let answer = client.post(url).body(view(n).to_string()).send().await;
            if answer.is_ok_and(|a| a.status() == 200) {
                acknowledged.push(n);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
    }
    acknowledged
}

/// `spoor state fetch` of `peer`'s snapshot into `data`, for a node on `topic`.
fn fetch(peer: &Node, data: &Path, broker: &str, topic: &str) -> Command {
    let mut command = spoor();
    command
        .args([
            "state",
            "fetch",
            "--admin-token",
            common::ADMIN_TOKEN,
            "--from",
        ])
        .arg(peer.url(""))
        .arg("--data")
        .arg(data)
        .args(kafka_args(broker, topic));
    command
}

/// A cart left two hours ago by a contact with an email: its abandoned-cart trigger is due
/// at once.
fn left_cart(n: usize) -> Value {
    let two_hours_ago = now_ms() as i64 - 2 * 3_600_000;
    json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": "S1", "datetime": two_hours_ago,
                           "cookies": {"sc": format!("cart-{n}")},
                           "user_email": format!("cart-{n}@example.com")},
           "StatusCart": {"GUID": format!("g{n}"), "Products": [
               {"productKey": "mug", "price": "12.5 EUR", "quantity": 1}]}})
}

/// Posts `bodies` one by one, each to one ingest node and, when it fails, to the other,
/// until acknowledged.
async fn post_each(urls: [String; 2], bodies: Vec<Value>) {
    for (n, body) in bodies.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        for attempt in 0.. {
            let url = &urls[(n + attempt) % 2];
            let (status, _) = post_json(url, body.to_string()).await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "event {n} never taken");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Which of `nodes` sends the triggers, by their metrics: exactly one must.
async fn trigger_sender(nodes: &[&Server]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut senders = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let metrics = common::metrics_text(node).await;
            if metrics.lines().any(|line| line == "spoor_trigger_sender 1") {
                senders.push(index);
            }
        }
        if let [one] = senders[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one trigger sender: {senders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const TRIGGERS: &str = "/api/v1/sites/S1/triggers?limit=100";

/// Stores site S1's trigger settings through the first engine node; returns once the
/// second has them.
async fn set_triggers(engines: &[Node; 2], settings: &Value) {
    let (status, body) = call_json(
        reqwest::Method::PUT,
        &engines[0].server,
        "/admin/v1/sites/S1/triggers",
        settings,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        &engines[1].server,
        "/admin/v1/sites/S1/triggers",
        "the trigger settings on the second engine node",
        |s, b| s == 200 && b.to_string().contains("crm"),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs tansu; run by .ci/run"]
async fn ingest_and_engine_nodes_keep_every_acknowledged_event_through_kills() {
    let Some(binary) = tansu() else { return };
    let _one_broker_at_a_time = ONE_BROKER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(binary, &dir.path().join("broker"));
    let address = broker.address();
    let node = |name: &str, sites: &[&str], role: &str| {
        let mut args = role_args(&address, "roles", role);
        // The shop's webhook receiver is on loopback.
        args.push("--allow-private-targets".into());
        Node::start(dir.path().join(name), sites, args)
    };
    let mut ingest = [
        node("ingest-1", &["S1"], "ingest"),
        node("ingest-2", &[], "ingest"),
    ];
    let mut engines = [
        node("engine-1", &[], "engine"),
        node("engine-2", &[], "engine"),
    ];

    // Each role says where a request of the other belongs.
    let (status, body) = post_json(&engines[0].url("/api/v2"), view(0).to_string()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (421, Some("wrong_role")),
        "{body}"
    );
    let (status, body) = get(&ingest[0].server, "/api/v1/sites/S1").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (421, Some("wrong_role")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("engine"),
        "{body}"
    );
    eventually(
        &ingest[1].server,
        "/admin/v1/sites",
        "the site on the second ingest node",
        |s, b| s == 200 && b.to_string().contains("\"S1\""),
    )
    .await;

    // A client's retry that reaches the other ingest node is stored twice, and counted
    // once by every engine node.
    let retried = view(10_000).to_string();
    for node in &ingest {
        let (status, body) = post_json(&node.url("/api/v2"), retried.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    for engine in &engines {
        let site = eventually(
            &engine.server,
            "/api/v1/sites/S1",
            "both copies applied",
            |s, b| s == 200 && b["statePosition"].as_u64() >= Some(2),
        )
        .await;
        assert_eq!(site["events"], 1, "{site}");
    }

    // Abandoned carts, due at once, owed to a receiver that refuses for now: exactly one
    // engine node fires and sends them; both hold what it fired.
    let (receiver, hook) = Receiver::start().await;
    let settings = json!({"webhooks": [{"id": "crm", "url": hook, "secret": "shop-webhook-secret-42",
                                        "kinds": ["abandoned-cart"], "firstRetrySeconds": 0.5,
                                        "maxAttempts": 50}]});
    set_triggers(&engines, &settings).await;
    const CARTS_BEFORE: usize = 12;
    const CARTS_AFTER: usize = 8;
    let urls = [ingest[0].url("/api/v2"), ingest[1].url("/api/v2")];
    post_each(urls.clone(), (0..CARTS_BEFORE).map(left_cart).collect()).await;
    for engine in &engines {
        eventually(
            &engine.server,
            TRIGGERS,
            "every cart's trigger fired, on both engine nodes",
            |s, b| s == 200 && b["triggers"].as_array().map(Vec::len) == Some(CARTS_BEFORE),
        )
        .await;
    }
    let sender = trigger_sender(&[&engines[0].server, &engines[1].server]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.delivered().1 == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing was sent to the receiver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Load through both ingest nodes while one of them, the engine node that sends the
    // triggers and the broker are killed and restarted; more carts are left meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(post_until_stopped(urls.clone(), 0, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ingest[0].kill_and_restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The sender stays down until the other engine node has taken over.
    engines[sender].server.kill();
    let killed_at = Instant::now();
    let first_sender = receiver.sender_runs().pop().unwrap();
    receiver.accepting.store(true, Ordering::SeqCst);
    let later_carts = tokio::spawn(post_each(
        urls.clone(),
        (CARTS_BEFORE..CARTS_BEFORE + CARTS_AFTER)
            .map(left_cart)
            .collect(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let acknowledged = load.await.unwrap();
    later_carts.await.unwrap();

    // The surviving engine node took over: every trigger, fired before the kill or
    // after, was delivered, once, and the outboxes of both nodes say so. One node sent at
    // a time: the first sender's deliveries, then the survivor's.
    let carts = CARTS_BEFORE + CARTS_AFTER;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (keys, deliveries) = loop {
        let (keys, deliveries) = receiver.delivered();
        let distinct: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
        if distinct.len() >= carts {
            break (keys, deliveries);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {carts} triggers delivered",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runs = receiver.sender_runs();
    assert_eq!(runs.len(), 2, "one sender at a time: {runs:?}");
    assert_eq!(runs[0], first_sender);
    assert!(!runs[1].is_empty(), "deliveries name their sender");
    let keys: std::collections::BTreeSet<String> = keys.into_iter().collect();
    assert_eq!(keys.len(), carts, "one trigger per cart: {keys:?}");
    let accepted = receiver.delivered().0.len();
    let taken_over = (receiver.deliveries().into_iter())
        .find(|d| d.sender != first_sender)
        .map(|d| d.at.duration_since(killed_at));
    eprintln!(
        "{carts} triggers delivered in {deliveries} deliveries, {accepted} answered 200; \
         the survivor's first delivery {taken_over:?} after the sender was killed"
    );
    assert_eq!(accepted, carts, "each delivered once");
    // The survivor sends (its metrics say so).
    trigger_sender(&[&engines[1 - sender].server]).await;
    engines[sender].server = Node::launch(
        &engines[sender].data,
        &[],
        &engines[sender].listen,
        &engines[sender].args,
    );
    for engine in &engines {
        let delivered = eventually(
            &engine.server,
            &format!("{TRIGGERS}&status=delivered"),
            "every trigger delivered, as each engine node's outbox says",
            |s, b| s == 200 && b["triggers"].as_array().map(Vec::len) == Some(carts),
        )
        .await;
        let ids: std::collections::BTreeSet<String> = (delivered["triggers"].as_array().unwrap())
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, keys);
    }
    assert!(
        acknowledged.len() > 20,
        "only {} events taken",
        acknowledged.len()
    );

    // Every acknowledged event is in the topic; both engine nodes hold the state an
    // offline rebuild of the topic makes.
    let exported = export_topic(&dir.path().join("export"), &address, "roles");
    let times = event_times(&exported);
    for n in &acknowledged {
        assert!(
            times.contains(&(T0 + *n as i64)),
            "acknowledged event {n} is not in the topic"
        );
    }
    let copies: Vec<&Value> = (exported.iter())
        .filter(|r| event_times(std::slice::from_ref(*r)) == [T0 + 10_000])
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert_eq!(copies[0].get("retry"), None, "{}", copies[0]);
    assert_eq!(copies[1]["retry"], true, "{}", copies[1]);
    let records = exported.len() as u64;
    eprintln!(
        "{} events acknowledged, {records} records in the topic",
        acknowledged.len()
    );
    let rebuilt = rebuild_digest(&dir.path().join("export"), &address, "roles");
    for engine in &engines {
        assert_eq!(digest_once_applied(&engine.server, records).await, rebuilt);
    }

    // A new engine node starts from a peer's snapshot, not from the topic's beginning.
    let joining = dir.path().join("engine-3");
    let fetched = run_ok(&mut fetch(&engines[1], &joining, &address, "roles"));
    let fetched: Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(fetched["position"], records, "{fetched}");
    let third = Node::start(joining, &[], role_args(&address, "roles", "engine"));
    trigger_sender(&[&engines[0].server, &engines[1].server, &third.server]).await;
    assert_eq!(digest_once_applied(&third.server, records).await, rebuilt);
    let deadline = Instant::now() + Duration::from_secs(30);
    let current = loop {
        let text = third.server.log_text();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("state is current with the log"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the new node never caught up: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        current.contains("\"replayed\":0"),
        "the new node replayed the topic: {current}"
    );
    // The retry window came with the snapshot: a further copy of the retried event
    // (imported with a later receive time) counts for nothing on any engine node.
    let counted = |body: &Value| body["events"].as_u64();
    let (_, before) = get(&third.server, "/api/v1/sites/S1").await;
    let mut copy = (*copies[0]).clone();
    copy["receivedAt"] = json!(copy["receivedAt"].as_i64().unwrap() + 1_000);
    // A 503 says "retry": a client does.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let imported = client()
            .post(ingest[1].url("/admin/v1/events/import"))
            .bearer_auth(common::ADMIN_TOKEN)
            .body(format!("{copy}\n"))
            .send()
            .await
            .unwrap();
        let status = imported.status();
        let answer = imported.text().await.unwrap();
        if status == 200 {
            break;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "{status} {answer}\n{}",
            ingest[1].server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in engines.iter().chain([&third]) {
        let after = eventually(
            &node.server,
            "/api/v1/sites/S1",
            "the copy applied",
            |s, b| s == 200 && b["statePosition"].as_u64() > Some(records),
        )
        .await;
        assert_eq!(counted(&after), counted(&before), "{after}");
    }

    // From another topic, a snapshot is refused before anything is written.
    let elsewhere = dir.path().join("elsewhere");
    let refused = fetch(&engines[1], &elsewhere, &address, "other")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another log"));
    assert!(!elsewhere.join("state.snapshot").exists());
}

fn person_view(email: &str, cookie: &str, n: usize) -> Value {
    let name = if email.starts_with("bob") {
        "Bob Jones"
    } else {
        "Ann Smith"
    };
    json!({"GeneralInfo": {"eventName": "ProductPage", "siteId": "S1", "datetime": T0 + n as i64,
                           "cookies": {"sc": cookie}, "user_email": email, "user_name": name},
           "ProductPage": {"Product": {"productKey": "p1", "price": "10", "isInStock": 1}}})
}

/// Every file of a directory, as bytes (a broker's storage, a node's outbox).
fn files_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let broker_log =
            (path.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("broker-"));
        if path.is_file() && !broker_log {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

const ANN: &str = "/api/v1/sites/S1/contacts?email=ann%40example.com";
const BOB: &str = "/api/v1/sites/S1/contacts?email=bob%40example.com";

#[tokio::test]
#[ignore = "needs tansu; run by .ci/run"]
async fn an_erased_person_is_unreadable_on_every_node_and_in_the_topic() {
    let Some(binary) = tansu() else { return };
    let _one_broker_at_a_time = ONE_BROKER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    let broker = Broker::start(binary, &broker_dir);
    let address = broker.address();
    let ingest = Node::start(
        dir.path().join("ingest"),
        &["S1"],
        role_args(&address, "people", "ingest"),
    );
    let engine = |name: &str| {
        let mut args = role_args(&address, "people", "engine");
        args.push("--allow-private-targets".into());
        Node::start(dir.path().join(name), &[], args)
    };
    let mut engines = [engine("engine-1"), engine("engine-2")];
    for n in 0..3 {
        let body = person_view("Ann@Example.com", "ann-cookie", n).to_string();
        let (status, answer) = post_json(&ingest.url("/api/v2"), body).await;
        assert_eq!(status, 200, "{answer}");
    }
    for n in 3..5 {
        let body = person_view("bob@example.com", "bob-cookie", n).to_string();
        let (status, answer) = post_json(&ingest.url("/api/v2"), body).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Each identifier has a key, held by the node in memory and shown in its metrics.
    let metrics = common::metrics_text(&ingest.server).await;
    let held = (metrics.lines())
        .find_map(|line| line.strip_prefix("spoor_sealing_keys "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(
        held,
        Some(4),
        "Ann's and Bob's emails and cookies: {metrics}"
    );
    for engine in &engines {
        eventually(&engine.server, ANN, "Ann on every engine node", |s, _| {
            s == 200
        })
        .await;
        eventually(&engine.server, BOB, "Bob on every engine node", |s, _| {
            s == 200
        })
        .await;
    }

    // One engine node fires Ann's abandoned cart, owed to a webhook that does not answer,
    // into the outbox's topic: every engine node holds it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let settings = json!({"webhooks": [{"id": "crm", "url": hook, "secret": "shop-webhook-secret-42",
                                        "kinds": ["abandoned-cart"]}]});
    set_triggers(&engines, &settings).await;
    let two_hours_ago = now_ms() as i64 - 2 * 3_600_000;
    let cart = json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": "S1",
                                       "datetime": two_hours_ago, "cookies": {"sc": "ann-cookie"},
                                       "user_email": "ann@example.com"},
                      "StatusCart": {"GUID": "g1", "Products": [
                          {"productKey": "mug", "price": "12.5 EUR", "quantity": 1}]}});
    let (status, body) = post_json(&ingest.url("/api/v2"), cart.to_string()).await;
    assert_eq!(status, 200, "{body}");
    for engine in &engines {
        eventually(
            &engine.server,
            "/api/v1/sites/S1/triggers",
            "Ann's abandoned cart held by every engine node",
            |s, b| s == 200 && b.to_string().contains("ann@example.com"),
        )
        .await;
    }

    // At rest, the topics hold who they are sealed: the broker's own files show what
    // they bought and which triggers fired, never who.
    let stored = files_bytes(&broker_dir);
    assert!(
        holds(&stored, "productKey"),
        "the broker's files hold the records"
    );
    assert!(
        holds(&stored, "abandoned-cart"),
        "the broker's files hold the outbox"
    );
    for clear in [
        "ann@example.com",
        "Ann@Example.com",
        "ann-cookie",
        "Ann Smith",
    ] {
        assert!(!holds(&stored, clear), "{clear} in the broker's files");
    }

    // One engine node is away during the erasure, its snapshot holding Ann.
    engines[1].server.terminate();
    let (status, body) = call(reqwest::Method::DELETE, &engines[0].server, ANN).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["keysDeleted"].as_u64() >= Some(2), "{body}");
    let (status, _) = get(&engines[0].server, ANN).await;
    assert_eq!(status, 404, "the erasing node still answers with Ann");
    engines[1].server = Node::launch(&engines[1].data, &[], &engines[1].listen, &engines[1].args);
    for engine in &engines {
        eventually(
            &engine.server,
            ANN,
            "Ann gone from every engine node",
            |s, _| s == 404,
        )
        .await;
        let (status, _) = get(&engine.server, BOB).await;
        assert_eq!(status, 200, "Bob stays");
        let export = "/api/v1/sites/S1/contacts/export?email=ann%40example.com";
        let (status, body) = get(&engine.server, export).await;
        assert_eq!(status, 404, "{body}");
    }
    // The node that was away met the erasure's mark after its snapshot; the outbox
    // forgot Ann on every node (her trigger's record no longer opens).
    let away = engines[1].server.log_text();
    assert!(away.contains("erased on another node"), "{away}");
    for engine in &engines {
        let (status, listed) = get(&engine.server, "/api/v1/sites/S1/triggers").await;
        assert_eq!(status, 200, "{listed}");
        assert!(
            !listed.to_string().contains("ann@example.com"),
            "an outbox still names Ann: {listed}"
        );
    }

    // Read from the topic with its keys, nothing of Ann comes out, and an offline
    // rebuild makes the state the nodes hold.
    let exported = export_topic(&dir.path().join("export"), &address, "people");
    let text = serde_json::to_string(&exported).unwrap();
    assert!(
        text.contains("bob@example.com") && text.contains("Bob Jones"),
        "Bob's open"
    );
    for clear in ["ann@example.com", "ann-cookie", "Ann Smith"] {
        assert!(!text.contains(clear), "{clear} in the export");
    }
    assert_eq!(
        exported.len(),
        6,
        "six events (the erasure's mark stays in its log)"
    );
    let rebuilt = rebuild_digest(&dir.path().join("export"), &address, "people");
    for engine in &engines {
        assert_eq!(digest_once_applied(&engine.server, 7).await, rebuilt);
    }
}

#[test]
fn kafka_settings_that_would_weaken_durability_are_refused_and_secrets_stay_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No broker is needed: both are refused before any connection.
    let refused = |property: &str| {
        let output = spoor()
            .args(["state", "rebuild", "--data"])
            .arg(dir.path())
            .args(kafka_args("127.0.0.1:1", "events"))
            .args(["--kafka-property", property])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{property} was taken");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let acks = refused("acks=1");
    assert!(acks.contains("acks is set by spoor"), "{acks}");
    let typo = refused("sasl.pasword=hunter2-secret");
    assert!(typo.contains("sasl.pasword"), "{typo}");
    assert!(
        !typo.contains("hunter2-secret"),
        "the value reached the error: {typo}"
    );
    let invalid = refused("security.protocol=hunter3-secret");
    assert!(invalid.contains("security.protocol"), "{invalid}");
    assert!(
        !invalid.contains("hunter3-secret"),
        "the value reached the error: {invalid}"
    );
}

#[test]
fn roles_are_refused_on_the_embedded_log_which_one_process_owns() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["ingest", "engine"] {
        let output = spoor()
            .args(["serve", "--listen", "127.0.0.1:0", "--role", role, "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "--role {role} served on the file log"
        );
        assert!(stderr.contains("--log kafka"), "{stderr}");
    }
}
