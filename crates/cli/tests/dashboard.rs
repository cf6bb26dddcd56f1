//! The dashboard in a real browser (headless Chromium driven by
//! `tests/browser/dashboard.mjs`), on the Online Retail data as `spoor demo` loads it:
//! signing in with each kind of key and being refused with a wrong one, every page
//! without a console error or a serious accessibility violation (axe-core), the figures
//! shown equal to the API's, a block edit's error at its field, a dead letter replayed,
//! a test delivery, a contact erased.
//!
//! Needs what the browser tests need (see `tests/browser.rs`) and ../shared/data.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::browser::{Demo, browser_at_hand, run_driver};
use common::receiver::Receiver;
use common::{ADMIN_TOKEN, Server, call, client, get, post_batch, post_json};
use serde_json::{Value, json};

const SITE: &str = "DEMO";
/// A product of the Online Retail catalogue.
const PRODUCT: &str = "85123A";
/// Whose delivery dies, then is replayed.
const DEAD_LETTER_EMAIL: &str = "dana@example.com";
/// Who is erased from the dashboard.
const ERASED_EMAIL: &str = "erin@example.com";
/// Visitors shown each variant of the A/B block.
const VISITORS_PER_VARIANT: usize = 200;

/// The Online Retail data as the demo loads it (dates moved to end yesterday), in a data
/// directory the test's server then opens.
fn load_online_retail(data: &Path) {
    let data_set = common::shared_dir().join("data/online-retail/online_retail.csv.gz");
    let demo = Demo::start(&[data_set.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    let status = demo.stop();
    assert!(status.success(), "the demo stopped with {status}");
}

async fn wait_for_state(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, site) = get(server, &format!("/api/v1/sites/{SITE}")).await;
        assert_eq!(status, 200, "{site}");
        if site["statePosition"] == site["logEnd"] {
            return site;
        }
        assert!(Instant::now() < deadline, "the state lags: {site}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin(server: &Server, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = client()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

fn visitor(sc: &str, event: &str) -> Value {
    json!({"eventName": event, "siteId": SITE, "cookies": {"sc": sc}})
}

/// An A/B block whose variant b is clicked twice as often as a.
async fn run_an_ab_test(server: &Server) {
    let block = json!({"name": "Home, A/B", "algorithm": "popular", "size": 4,
                       "variants": [{"id": "a", "share": 1}, {"id": "b", "share": 1}]});
    admin(
        server,
        reqwest::Method::PUT,
        &format!("/admin/v1/sites/{SITE}/blocks/ab-test"),
        block,
    )
    .await;
    let products = ["22423", "85099B", "47566", "20725"];
    let mut events = Vec::new();
    for i in 0..2 * VISITORS_PER_VARIANT {
        let (variant, clicks_every) = if i % 2 == 0 { ("a", 10) } else { ("b", 5) };
        let sc = format!("ab-visitor-{i}");
        let shown: Vec<Value> = products
            .iter()
            .map(|p| json!({"productKey": p, "container_type": format!("ab-test_{variant}")}))
            .collect();
        events.push(json!({"GeneralInfo": visitor(&sc, "ProductImpressions"),
                           "ProductImpressions": shown}));
        if (i / 2) % clicks_every == 0 {
            events.push(json!({"GeneralInfo": visitor(&sc, "ProductPage"),
                               "ProductPage": {"productKey": products[0], "price": "1.65"}}));
        }
    }
    for chunk in events.chunks(200) {
        post_batch(server, chunk).await;
    }
}

/// A cart left two hours ago by `email`: its abandoned-cart trigger is due at once.
fn left_cart(email: &str) -> Value {
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 2 * 3_600_000;
    json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": SITE, "datetime": two_hours_ago,
                           "cookies": {"sc": "dana"}, "user_email": email},
           "StatusCart": {"GUID": "left", "Products": [
               {"productKey": PRODUCT, "price": "2.55 GBP", "quantity": 2}]}})
}

/// The site's dead letters, once there are some.
async fn dead_letters(server: &Server) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/api/v1/sites/{SITE}/triggers?status=dead");
        let (_, list) = get(server, &path).await;
        let dead = list["triggers"].as_array().cloned().unwrap_or_default();
        if !dead.is_empty() {
            return dead;
        }
        assert!(Instant::now() < deadline, "no dead letter: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drive(server: &Server, site_key: &str, shots: Option<&Path>) -> Value {
    let args = [
        &server.base,
        ADMIN_TOKEN,
        site_key,
        SITE,
        PRODUCT,
        ERASED_EMAIL,
    ];
    let env: Vec<(&str, &Path)> = shots.map(|dir| ("SCREENSHOTS", dir)).into_iter().collect();
    run_driver("dashboard.mjs", &args, &env).await
}

fn figure(text: &Value) -> u64 {
    text.as_str().unwrap().replace(',', "").parse().unwrap()
}

#[tokio::test]
#[ignore = "needs ../shared/data beside the repository (CI runs it with --include-ignored)"]
async fn the_dashboard_shows_the_apis_figures_and_acts_through_it() {
    if !browser_at_hand() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    load_online_retail(&data);
    let server = Server::start_with(&data, &[SITE, "OTHER"], &["--allow-private-targets"]);
    wait_for_state(&server).await;
    let issued = admin(
        &server,
        reqwest::Method::POST,
        &format!("/admin/v1/sites/{SITE}/api-key"),
        json!({}),
    )
    .await;
    let site_key = issued["apiKey"].as_str().unwrap().to_string();

    run_an_ab_test(&server).await;
    // A refused event, counted by reason and field on the overview.
    let refused =
        json!({"GeneralInfo": visitor("x", "ProductPage"), "ProductPage": {"price": "1"}});
    let (status, answer) = post_json(&server.url("/api/v2"), refused.to_string()).await;
    assert_eq!(status, 400, "{answer}");

    // A delivery that dies (the receiver fails, one attempt allowed), then a receiver
    // that takes deliveries again.
    let (receiver, hook) = Receiver::start().await;
    let settings = json!({"webhooks": [{"id": "crm", "url": hook, "secret": "dashboard-test-secret",
                                        "kinds": ["abandoned-cart"], "maxAttempts": 1}]});
    admin(
        &server,
        reqwest::Method::PUT,
        &format!("/admin/v1/sites/{SITE}/triggers"),
        settings,
    )
    .await;
    let erin = json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": SITE,
                                       "cookies": {"sc": "erin"}, "user_email": ERASED_EMAIL}});
    post_batch(&server, &[left_cart(DEAD_LETTER_EMAIL), erin]).await;
    let dead = dead_letters(&server).await;
    let dead_id = dead[0]["id"].as_str().unwrap().to_string();
    receiver.accepting.store(true, Ordering::SeqCst);
    let expected = wait_for_state(&server).await;

    let shots = std::env::var_os("SCREENSHOTS").map(std::path::PathBuf::from);
    let seen = drive(&server, &site_key, shots.as_deref()).await;

    assert_eq!(seen["errors"], json!([]), "no console error: {seen}");
    for (page, violations) in seen["axe"].as_object().unwrap() {
        assert_eq!(
            violations,
            &json!([]),
            "{page}: serious accessibility violations"
        );
    }
    assert_eq!(seen["axe"].as_object().unwrap().len(), 8, "{seen}");

    let wrong = &seen["wrongKey"];
    assert_eq!(wrong["status"], 401, "{seen}");
    assert!(
        wrong["ms"].as_u64().unwrap() >= 900,
        "answered slowly: {wrong}"
    );
    assert!(
        wrong["said"]
            .as_str()
            .unwrap()
            .contains("neither the admin token"),
        "{wrong}"
    );

    let site_key_walk = &seen["siteKey"];
    assert_eq!(
        site_key_walk["landed"],
        format!("/ui/sites/{SITE}/overview")
    );
    assert_eq!(
        site_key_walk["cookie"],
        json!({"httpOnly": true, "sameSite": "Strict"})
    );
    assert_eq!(
        site_key_walk["otherSite"], 404,
        "a site key sees its site only"
    );
    assert_eq!(
        site_key_walk["forgedSignOut"], 403,
        "no change without the form's token"
    );
    assert_eq!(site_key_walk["otherSitesErase"], 404, "nor on another site");
    assert_eq!(
        site_key_walk["crossSiteForm"], 403,
        "nor from another site's page"
    );
    assert_eq!(site_key_walk["stillIn"], true);
    assert_eq!(
        site_key_walk["afterSignOut"],
        json!({"path": "/ui/", "asksKey": 1})
    );

    assert_eq!(
        seen["sites"],
        json!([SITE, "OTHER"]),
        "the admin sees every site"
    );
    let overview = &seen["overview"];
    for field in ["events", "contacts", "products", "orders"] {
        assert_eq!(
            figure(&overview[field]),
            expected[field].as_u64().unwrap(),
            "{field}: {overview}"
        );
    }
    let refusals = overview["refusals"].to_string();
    assert!(
        refusals.contains("missing_field") && refusals.contains("productKey"),
        "{refusals}"
    );
    let (before, after) = (&overview["liveViewsBefore"], &overview["liveViewsAfter"]);
    assert_eq!(
        after.as_u64().unwrap(),
        before.as_u64().unwrap() + 1,
        "the live part shows a new view without a reload: {overview}"
    );

    let (_, stats) = get(
        &server,
        &format!("/api/v1/sites/{SITE}/blocks/ab-test/stats"),
    )
    .await;
    for variant in stats["variants"].as_array().unwrap() {
        let shown = &seen["variants"][variant["variantId"].as_str().unwrap()];
        assert_eq!(
            figure(&shown["impressions"]),
            variant["total"]["impressions"].as_u64().unwrap()
        );
        assert_eq!(
            figure(&shown["clicks"]),
            variant["total"]["clicks"].as_u64().unwrap()
        );
    }
    assert_eq!(
        figure(&seen["variants"]["a"]["impressions"]),
        4 * VISITORS_PER_VARIANT as u64
    );
    let verdict = seen["verdicts"][0].as_str().unwrap();
    assert!(verdict.starts_with("variant b: CTR +"), "{verdict}");
    assert!(verdict.ends_with("b does better than a"), "{verdict}");

    assert_eq!(seen["badEdit"]["status"], 422, "{seen}");
    assert!(
        seen["badEdit"]["error"]
            .as_str()
            .unwrap()
            .starts_with("size: "),
        "{seen}"
    );
    assert_eq!(seen["badEdit"]["invalid"], "true");
    assert_eq!(seen["badEdit"]["kept"], "1000");
    assert_eq!(seen["goodEdit"]["said"], 1, "{seen}");
    let (_, block) = get(&server, &format!("/admin/v1/sites/{SITE}/blocks/ab-test")).await;
    assert_eq!(block["size"], 4);
    assert!(seen["preview"].as_u64().unwrap() > 0, "{seen}");

    assert!(seen["deadLetters"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["replayed"].as_str().unwrap().starts_with("Replayed"),
        "{seen}"
    );
    assert!(
        seen["testDelivery"].as_str().unwrap().contains("HTTP 200"),
        "{seen}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = receiver.deliveries();
        let replays = got.iter().filter(|d| d.key == dead_id).count();
        if replays >= 2 {
            assert!(
                got.iter().any(|d| d.trigger == "test"),
                "the test delivery: {got:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead letter was not sent again: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(seen["catalogue"]["product"], 1, "{seen}");
    assert!(seen["catalogue"]["similar"].as_u64().unwrap() > 0, "{seen}");
    assert!(
        seen["catalogue"]["weeklyViews"].as_u64().unwrap() > 0,
        "{seen}"
    );

    let contact = &seen["contact"];
    assert_eq!(contact["found"], 1, "{seen}");
    assert_eq!(
        contact["mistyped"], 1,
        "a mistyped confirmation erases nothing"
    );
    assert_eq!(contact["erased"], 1, "{seen}");
    assert_eq!(contact["afterwards"], 1, "{seen}");
    let (status, _) = call(
        reqwest::Method::GET,
        &server,
        &format!("/api/v1/sites/{SITE}/contacts?email={ERASED_EMAIL}"),
    )
    .await;
    assert_eq!(status, 404, "erased from the state");
    backtest_the_ab_block(&server, &data).await;

    let log = std::fs::read_dir(data.join("log")).unwrap();
    for segment in log {
        let bytes = std::fs::read(segment.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(ERASED_EMAIL),
            "erased from the log"
        );
    }
}

/// The block's variants replayed over the Online Retail demo's last week, through the
/// admin route and `spoor eval backtest` (which read the same log, so answer alike).
async fn backtest_the_ab_block(server: &Server, data: &Path) {
    let path = format!("/admin/v1/sites/{SITE}/blocks/ab-test/backtest?days=7");
    let answer = admin(server, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(answer["days"], 7, "{answer}");
    assert!(answer["moments"].as_u64().unwrap() > 100, "{answer}");
    let variants = answer["variants"].as_array().unwrap();
    let ids: Vec<&str> = variants
        .iter()
        .map(|v| v["variantId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    for variant in variants {
        assert!(variant["scored"].as_u64().unwrap() > 0, "{variant}");
        let hit_rate = variant["hitRate"].as_f64().unwrap();
        let mrr = variant["mrr"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&hit_rate) && mrr <= hit_rate,
            "{variant}"
        );
        assert!(variant["coverage"].as_f64().unwrap() > 0.0, "{variant}");
    }
    let (status, refused) = call(reqwest::Method::POST, server, &path.replace("=7", "=0")).await;
    assert_eq!(status, 400, "{refused}");

    let output = common::run_ok(
        common::spoor()
            .args([
                "eval", "backtest", "--site", SITE, "--block", "ab-test", "--days", "7",
            ])
            .arg("--data")
            .arg(data),
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    // The same moments, the same answers but for the order of products that tie (maps
    // are keyed per process), which can move a rank.
    for (cli, route) in (printed["variants"].as_array().unwrap().iter()).zip(variants) {
        assert_eq!(
            cli["scored"], route["scored"],
            "the CLI answers as the route"
        );
        for figure in ["hitRate", "mrr", "coverage"] {
            let (a, b) = (
                cli[figure].as_f64().unwrap(),
                route[figure].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 0.01, "{figure}: the CLI {a}, the route {b}");
        }
    }
}
