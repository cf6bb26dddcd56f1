//! An erasure survives a crash at any point: over a log of a hundred thousand records
//! with a state snapshot, the server is killed (SIGKILL) at each step of an erasure in
//! turn, and at random moments, then restarted. Every start is clean, every acknowledged
//! event is still in the export, an answered erasure holds after the restart, an
//! unanswered one holds once retried, and no one else's records change.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, call, client, export, post_batch};
use serde_json::{Value, json};

/// Records in the log; `SPOOR_TEST_ERASURE_RECORDS` asks for more (a multiple of
/// [`BATCH`]), for a longer run than the suite's.
fn records() -> usize {
    std::env::var("SPOOR_TEST_ERASURE_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}
const BATCH: usize = 500;
/// Each batch carries one event of each person, so each has `records() / BATCH` records
/// spread over the whole log.
const PEOPLE: usize = 10;

/// The steps of an erasure where the server can be made to kill itself (test builds).
const CRASH_POINTS: [&str; 6] = [
    "erasure_snapshot_removed",
    "redaction_journaled",
    "redaction_half_rewritten",
    "redaction_rewritten",
    "erasure_redacted",
    "erasure_rebuilt",
];

fn email(person: usize) -> String {
    format!("person-{person}@erasure.test")
}

fn event(n: usize) -> Value {
    let slot = n % BATCH;
    let mut info = json!({"eventName": "ProductPage", "siteId": "shop",
                          "datetime": 1_700_000_000_000i64 + n as i64});
    if slot < PEOPLE {
        info["cookies"] = json!({"sc": format!("person-cookie-{slot}")});
        info["user_email"] = json!(email(slot));
    } else {
        info["cookies"] = json!({"sc": format!("visitor-{}", n % 7919)});
    }
    json!({"GeneralInfo": info,
           "ProductPage": {"Product": {"productKey": format!("p{}", n % 977), "price": 10}}})
}

async fn load(server: &Server) {
    for start in (0..records()).step_by(BATCH) {
        let batch: Vec<Value> = (start..start + BATCH).map(event).collect();
        post_batch(server, &batch).await;
    }
}

fn start(data: &Path, crash_at: Option<&str>) -> Server {
    let mut env = vec![("SPOOR_FAULT_INJECTION", Path::new("1"))];
    if let Some(point) = crash_at {
        env.push(("SPOOR_CRASH_AT", Path::new(point)));
    }
    Server::start_with_env(data, &["shop"], &[], &env)
}

async fn wait_for_state(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let path = format!("/api/v1/sites/shop?after={}", records() - 1);
    loop {
        let (status, _) = call(reqwest::Method::GET, server, &path).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the state did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The erasure request; `None` when the server died before answering.
async fn erase(server: &Server, person: usize) -> Option<u16> {
    let response = client()
        .delete(server.url(&format!(
            "/api/v1/sites/shop/contacts?email={}",
            email(person)
        )))
        .bearer_auth(common::ADMIN_TOKEN)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Records of the export naming each person, by person.
fn records_per_person(data: &Path) -> (usize, Vec<usize>) {
    let records = export(data, &[]);
    let mut per_person = vec![0; PEOPLE];
    for record in &records {
        let text = record.to_string();
        for (person, count) in per_person.iter_mut().enumerate() {
            if text.contains(&email(person)) {
                *count += 1;
            }
        }
    }
    (records.len(), per_person)
}

/// Whether the person is in the state.
async fn known(server: &Server, person: usize) -> bool {
    let path = format!("/api/v1/sites/shop/contacts?email={}", email(person));
    let (status, _) = call(reqwest::Method::GET, server, &path).await;
    assert!(matches!(status, 200 | 404), "{status}");
    status == 200
}

/// What an erasure of `person` had reached when the server was killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reached {
    /// Not known: killed at a random moment, before its answer.
    Unknown,
    /// The log was not yet to change: the erasure is to be retried.
    NotBegun,
    /// Its rewrites were durable (journaled) or done: the start finishes it.
    Journaled,
    Answered,
}

/// After a crash in the erasure of `person`: a clean start, nothing acknowledged lost,
/// the person gone (at once when the erasure was journaled or answered, else once
/// retried), everyone still to erase untouched. Stops the server cleanly, which leaves
/// a state snapshot for the next erasure.
async fn check_after_crash(data: &Path, person: usize, reached: Reached) {
    let mut server = start(data, None);
    wait_for_state(&server).await;
    match reached {
        Reached::Journaled | Reached::Answered => {
            assert!(!known(&server, person).await, "{reached:?}: gone at once");
        }
        Reached::NotBegun | Reached::Unknown => {
            if reached == Reached::NotBegun {
                assert!(known(&server, person).await, "not erased before its retry");
            }
            let retried = erase(&server, person).await;
            assert!(matches!(retried, Some(200 | 404)), "{retried:?}");
            assert!(!known(&server, person).await, "gone once retried");
        }
    }
    let (exported, per_person) = records_per_person(data);
    assert_eq!(
        exported,
        records(),
        "every acknowledged event is in the export"
    );
    for (other, count) in per_person.iter().enumerate() {
        if other <= person {
            assert_eq!(*count, 0, "person {other} stays erased");
        } else {
            assert_eq!(*count, records() / BATCH, "person {other} is untouched");
        }
    }
    assert!(server.terminate().success());
    assert!(data.join("state.snapshot").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_at_any_step_neither_loses_nor_resurrects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data, None);
    load(&server).await;
    wait_for_state(&server).await;
    assert!(server.terminate().success());

    let mut person = 0;
    let mut whole_erasure = Duration::ZERO;
    for point in CRASH_POINTS {
        let mut server = start(&data, Some(point));
        let asked = Instant::now();
        let answer = erase(&server, person).await;
        assert_eq!(answer, None, "killed at {point} before answering");
        let status = server
            .wait_for_exit(Duration::from_secs(60))
            .expect("the crash point was reached");
        assert!(!status.success());
        assert!(
            !data.join("state.snapshot").exists(),
            "removed before the log changes ({point})"
        );
        whole_erasure = whole_erasure.max(asked.elapsed());
        let reached = if point == "erasure_snapshot_removed" {
            Reached::NotBegun
        } else {
            Reached::Journaled
        };
        check_after_crash(&data, person, reached).await;
        person += 1;
    }

    // Answered, then killed before any snapshot followed.
    let mut server = start(&data, None);
    assert_eq!(erase(&server, person).await, Some(200));
    server.kill();
    check_after_crash(&data, person, Reached::Answered).await;
    person += 1;

    // Killed at random moments of the erasure, from its first scan to its answer.
    while person < PEOPLE {
        let mut server = start(&data, None);
        let delay = whole_erasure.mul_f64(rand_fraction(person));
        let erasing = tokio::spawn({
            let url = server.url(&format!(
                "/api/v1/sites/shop/contacts?email={}",
                email(person)
            ));
            async move {
                let response = client()
                    .delete(url)
                    .bearer_auth(common::ADMIN_TOKEN)
                    .send()
                    .await;
                response.ok().map(|r| r.status().as_u16())
            }
        });
        tokio::time::sleep(delay).await;
        server.kill();
        let reached = match erasing.await.unwrap() {
            Some(200) => Reached::Answered,
            _ => Reached::Unknown,
        };
        check_after_crash(&data, person, reached).await;
        person += 1;
    }
}

/// A fraction in (0, 1) that differs from run to run.
fn rand_fraction(salt: usize) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let mixed = (nanos ^ salt.wrapping_mul(0x9E37_79B9)) % 1000;
    (mixed as f64 + 0.5) / 1000.0
}
