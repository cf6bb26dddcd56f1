//! Triggers through the real binary: a shop sets its webhook, posts a cart that was left
//! two hours ago, and its receiver gets the abandoned-cart message, signed, within seconds;
//! over HTTPS too, with a certificate of the shop's private CA named in `SSL_CERT_FILE`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Server, client, get, post_json};
use serde_json::{Value, json};

const SECRET: &str = "shop-webhook-secret-42";
/// The receivers of these tests listen on loopback.
const PRIVATE_TARGETS: &[&str] = &["--allow-private-targets"];

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().unwrap().push((headers, body));
    StatusCode::OK
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn an_abandoned_cart_reaches_the_shops_webhook() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let settings = json!({"webhooks": [{"id": "crm", "url": hook, "secret": SECRET,
                                        "kinds": ["abandoned-cart"]}]});
    // By default a webhook may not point into spoor's own network.
    let guarded = Server::start(&dir.path().join("guarded"), &["S1"]);
    let (status, refused) = put_triggers(&guarded, &settings.to_string()).await;
    assert_eq!(status, 400);
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("webhooks[0].url: "), "{message}");
    assert!(message.contains("--allow-private-targets"), "{message}");
    drop(guarded);

    let server = Server::start_with(&dir.path().join("data"), &["S1"], PRIVATE_TARGETS);
    let (status, shown) = put_triggers(&server, &settings.to_string()).await;
    assert_eq!(status, 200);
    assert!(
        shown["webhooks"][0].get("secret").is_none(),
        "secrets are never shown"
    );

    // A bad setting is named.
    let bad = r#"{"abandonedCart": {"enabled": true, "delaysMinutes": "soon"}}"#;
    let (status, bad) = put_triggers(&server, bad).await;
    assert_eq!(status, 400);
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .starts_with("abandonedCart.delaysMinutes: invalid type"),
        "{bad}"
    );

    post_left_cart(&server, "ann").await;

    let mut waited = 0;
    while seen.lock().unwrap().is_empty() {
        assert!(waited < 100, "no delivery within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let message = first_message(&seen);
    assert_eq!(message["type"], "abandoned-cart");
    assert_eq!(message["contact"]["email"], "ann@example.com");
    assert_eq!(message["products"][0]["product_id"], "mug");

    // The pull API shows it delivered.
    let mut delivered = Value::Null;
    for _ in 0..50 {
        let (status, list) = get(&server, "/api/v1/sites/S1/triggers?status=delivered").await;
        assert_eq!(status, 200);
        if !list["triggers"].as_array().unwrap().is_empty() {
            delivered = list;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &delivered["triggers"][0];
    assert_eq!(first["kind"], "abandoned-cart");
    assert_eq!(first["deliveries"]["crm"]["status"], "delivered");
    assert!(first["deliveries"]["crm"]["lastAttemptAt"].is_i64());
    assert_eq!(
        delivered["keptAfterSettledDays"], 7.0,
        "the list says how long a settled trigger stays"
    );
    assert_eq!(first["payload"]["contact"]["email"], "ann@example.com");

    // Ann asks to be erased: her triggers go too, and no outbox file names her.
    let (status, _) = common::call(
        reqwest::Method::DELETE,
        &server,
        "/api/v1/sites/S1/contacts?email=ann@example.com",
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = get(&server, "/api/v1/sites/S1/triggers").await;
    assert_eq!(list["triggers"], json!([]));
    for file in std::fs::read_dir(dir.path().join("data/outbox")).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("ann@example.com"),
            "the outbox still names her"
        );
    }

    // Bob's trigger fires while only his phone names him, so it is recorded under his
    // phone; he gives his email later, and is erased by it.
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    let cart = json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": "S1",
                                       "datetime": two_hours_ago, "cookies": {"sc": "bob"},
                                       "user_phone": "+380501112233"},
                      "StatusCart": {"GUID": "g2", "Products": [
                          {"productKey": "mug", "price": "12.5 EUR", "quantity": 1}]}});
    let (status, answer) = post_json(&server.url("/api/v2"), cart.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let mut waited = 0;
    while seen.lock().unwrap().len() < 2 {
        assert!(waited < 100, "no delivery for bob within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let outbox_names = |text: &str| {
        std::fs::read_dir(dir.path().join("data/outbox"))
            .unwrap()
            .any(|file| {
                let bytes = std::fs::read(file.unwrap().path()).unwrap();
                String::from_utf8_lossy(&bytes).contains(text)
            })
    };
    assert!(outbox_names("380501112233"), "recorded under his phone");
    let named = json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": "S1",
                                        "cookies": {"sc": "bob"}, "user_phone": "+380501112233",
                                        "user_email": "bob@example.com"}});
    let (status, answer) = post_json(&server.url("/api/v2"), named.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let erase = format!(
        "/api/v1/sites/S1/contacts?email=bob@example.com&after={}",
        answer["position"]
    );
    let (status, _) = common::call(reqwest::Method::DELETE, &server, &erase).await;
    assert_eq!(status, 200);
    assert!(!outbox_names("380501112233"), "the outbox still names him");
}

/// The first delivery the receiver got, its signature checked.
fn first_message(seen: &Seen) -> Value {
    let (headers, body) = seen.lock().unwrap()[0].clone();
    let signed = headers["spoor-signature"].to_str().unwrap();
    assert!(spoor_triggers::signature::verify(
        SECRET,
        signed,
        &body,
        now_ms() / 1000,
        300
    ));
    serde_json::from_slice(&body).unwrap()
}

/// A private CA's certificate, written as PEM to a file, and a TLS server configuration
/// for `localhost` with a certificate that CA signed.
struct PrivateCa {
    ca_pem: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn private_ca(dir: &Path) -> PrivateCa {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (ca.distinguished_name).push(rcgen::DnType::CommonName, "Shop test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let ca_pem = dir.join("shop-ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    PrivateCa {
        ca_pem,
        server: Arc::new(server),
    }
}

/// An HTTPS receiver on a loopback port that keeps every request it is sent.
async fn https_receiver(tls: Arc<rustls::ServerConfig>, seen: Seen) -> u16 {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let keep = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body: hyper::body::Incoming = body;
                        let bytes = body.collect().await?.to_bytes();
                        seen.lock().unwrap().push((parts.headers, bytes));
                        let empty = http_body_util::Empty::<Bytes>::new();
                        Ok::<_, hyper::Error>(hyper::Response::new(empty))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let served = hyper::server::conn::http1::Builder::new().serve_connection(io, keep);
                let _ = served.await;
            });
        }
    });
    port
}

async fn set_webhook(server: &Server, url: &str) {
    let settings = json!({"webhooks": [{"id": "crm", "url": url, "secret": SECRET,
                                        "kinds": ["abandoned-cart"]}]});
    let (status, shown) = put_triggers(server, &settings.to_string()).await;
    assert_eq!(status, 200, "{shown}");
}

/// `PUT` site S1's trigger settings with the admin token.
async fn put_triggers(server: &Server, body: &str) -> (u16, Value) {
    let response = client()
        .put(server.url("/admin/v1/sites/S1/triggers"))
        .bearer_auth(common::ADMIN_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A cart of one mug, left two hours ago by `name` (`name@example.com`).
async fn post_left_cart(server: &Server, name: &str) {
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    let cart = json!({"GeneralInfo": {"eventName": "StatusCart", "siteId": "S1",
                                       "datetime": two_hours_ago, "cookies": {"sc": name},
                                       "user_email": format!("{name}@example.com")},
                      "StatusCart": {"GUID": "g1", "Products": [
                          {"productKey": "mug", "price": "12.5 EUR", "quantity": 1}]}});
    let (status, answer) = post_json(&server.url("/api/v2"), cart.to_string()).await;
    assert_eq!(status, 200, "{answer}");
}

/// The webhook's delivery state of the site's first fired trigger, once it was tried.
async fn first_attempt(server: &Server) -> Value {
    for _ in 0..100 {
        let (_, list) = get(server, "/api/v1/sites/S1/triggers").await;
        let delivery = &list["triggers"][0]["deliveries"]["crm"];
        if delivery["attempts"].as_u64().unwrap_or(0) > 0 || delivery["status"] == "delivered" {
            return delivery.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no delivery attempt within 10 s");
}

#[tokio::test]
async fn webhooks_reach_https_receivers_whose_ca_ssl_cert_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = private_ca(dir.path());
    let seen: Seen = Arc::default();
    let port = https_receiver(ca.server.clone(), seen.clone()).await;
    let hook = format!("https://localhost:{port}/hook");

    // The shop's CA is not among the system's roots: the delivery fails, to be retried.
    let untrusting = Server::start_with(&dir.path().join("untrusting"), &["S1"], PRIVATE_TARGETS);
    set_webhook(&untrusting, &hook).await;
    post_left_cart(&untrusting, "bob").await;
    let refused = first_attempt(&untrusting).await;
    assert_eq!(refused["status"], "pending", "{refused}");
    let outcome = refused["lastOutcome"].as_str().unwrap();
    assert!(outcome.contains("certificate"), "{outcome}");
    assert!(seen.lock().unwrap().is_empty());

    // Named in SSL_CERT_FILE, it is trusted beside the system's roots: delivered. A
    // proxy named in the environment is not used (it would resolve the webhook's host
    // where spoor's checks cannot see).
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = PathBuf::from(format!("http://{}", proxy.local_addr().unwrap()));
    let proxied = Arc::new(Mutex::new(0usize));
    let counted = proxied.clone();
    tokio::spawn(async move {
        while let Ok(_connection) = proxy.accept().await {
            *counted.lock().unwrap() += 1;
        }
    });
    let trusting = Server::start_with_env(
        &dir.path().join("trusting"),
        &["S1"],
        PRIVATE_TARGETS,
        &[
            ("SSL_CERT_FILE", &ca.ca_pem),
            ("HTTPS_PROXY", &proxy_url),
            ("HTTP_PROXY", &proxy_url),
            ("ALL_PROXY", &proxy_url),
        ],
    );
    set_webhook(&trusting, &hook).await;
    post_left_cart(&trusting, "bob").await;
    let delivered = first_attempt(&trusting).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    let message = first_message(&seen);
    assert_eq!(message["contact"]["email"], "bob@example.com");
    assert_eq!(
        *proxied.lock().unwrap(),
        0,
        "the environment's proxy was used"
    );
}
