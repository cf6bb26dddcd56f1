//! Runs the real `spoor` binary for end-to-end tests.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod receiver;

pub const ADMIN_TOKEN: &str = "test-admin-token";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn spoor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spoor"))
}

/// A running `spoor serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    pub log_path: PathBuf,
}

impl Server {
    /// Starts on a free loopback port with `data` as its data directory.
    pub fn start(data: &Path, sites: &[&str]) -> Server {
        Server::start_with(data, sites, &[])
    }

    /// [`Server::start`] with further arguments to `spoor serve`.
    pub fn start_with(data: &Path, sites: &[&str], args: &[&str]) -> Server {
        Server::start_with_env(data, sites, args, &[])
    }

    /// [`Server::start_with`] with further environment variables.
    pub fn start_with_env(
        data: &Path,
        sites: &[&str],
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Server {
        Server::launch(data, sites, args, env, "127.0.0.1:0")
    }

    /// [`Server::start`] on the address `listen`: a restart that clients must find where
    /// they left it.
    pub fn start_listening(data: &Path, sites: &[&str], listen: &str) -> Server {
        Server::launch(data, sites, &[], &[], listen)
    }

    /// [`Server::start_listening`] with further arguments to `spoor serve`.
    pub fn start_listening_with(
        data: &Path,
        sites: &[&str],
        listen: &str,
        args: &[&str],
    ) -> Server {
        Server::launch(data, sites, args, &[], listen)
    }

    fn launch(
        data: &Path,
        sites: &[&str],
        args: &[&str],
        env: &[(&str, &Path)],
        listen: &str,
    ) -> Server {
        fs::create_dir_all(data).unwrap();
        let log_path = next_log_path(data);
        let log = File::create(&log_path).unwrap();
        let mut command = spoor();
        command
            .args([
                "serve",
                "--listen",
                listen,
                "--admin-token",
                ADMIN_TOKEN,
                "--log-segment-mib",
                "2",
            ])
            .arg("--data")
            .arg(data)
            .env("SPOOR_LOG_FORMAT", "json")
            .env("SPOOR_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for site in sites {
            command.args(["--site", site]);
        }
        command.args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start spoor serve");
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            data: data.to_path_buf(),
            log_path,
        };
        server.base = format!("http://{}", server.wait_for_listen_address());
        server
    }

    fn wait_for_listen_address(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = fs::read_to_string(&self.log_path).unwrap_or_default();
            for line in text.lines() {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(line)
                    && let Some(listen) = entry["listen"].as_str()
                {
                    return listen.to_string();
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("spoor serve exited with {status} before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "spoor serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// SIGTERM, without waiting for the exit.
    pub fn signal_terminate(&self) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, once the process exits on its own within `within`.
    pub fn wait_for_exit(&mut self, within: std::time::Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn next_log_path(data: &Path) -> PathBuf {
    let parent = data.parent().unwrap_or(data);
    (0..)
        .map(|n| parent.join(format!("server-{n}.log")))
        .find(|p| !p.exists())
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Posts `events` as one batch, which must be taken whole; the answer.
pub async fn post_batch(server: &Server, events: &[serde_json::Value]) -> serde_json::Value {
    let response = client()
        .post(server.url("/api/v2/batch"))
        .json(events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["rejected"], 0, "{answer}");
    answer
}

pub async fn post_json(url: &str, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// `method path` with the admin token: the status and the JSON answer (null if none).
pub async fn call(
    method: reqwest::Method,
    server: &Server,
    path: &str,
) -> (u16, serde_json::Value) {
    answer(client().request(method, server.url(path))).await
}

/// `method path` with the admin token and a JSON body: the status and the JSON answer.
pub async fn call_json(
    method: reqwest::Method,
    server: &Server,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    answer(client().request(method, server.url(path)).json(body)).await
}

/// Sends `request` with the admin token: the status and the JSON answer (null if none).
async fn answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &Server) -> String {
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// `GET path` with the admin token.
pub async fn get(server: &Server, path: &str) -> (u16, serde_json::Value) {
    call(reqwest::Method::GET, server, path).await
}

/// Runs a `spoor` command to completion; fails the test, with its stderr, if it fails.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// NDJSON text as JSON values.
pub fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `spoor events export --data DIR`, parsed line by line.
pub fn export(data: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let output = run_ok(
        spoor()
            .args(["events", "export", "--data"])
            .arg(data)
            .args(extra),
    );
    ndjson(&String::from_utf8(output.stdout).unwrap())
}

/// The shared folder beside the repository (`../shared`), as CI lays it out.
pub fn shared_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../../../shared")
}

/// The JSON examples of the tracker spec, exactly as printed.
pub fn spec_examples() -> Vec<String> {
    let path = shared_dir().join("spec/yespo-tracker-rest-api.md");
    let spec = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; this test needs ../shared/spec", path.display()));
    let mut examples = Vec::new();
    let mut current: Option<String> = None;
    for line in spec.split_inclusive('\n') {
        let fence = line.trim_end();
        match &mut current {
            None if fence == "```" || fence == "```json" => current = Some(String::new()),
            Some(text) if fence == "```" => {
                examples.push(std::mem::take(text));
                current = None;
            }
            Some(text) => text.push_str(line),
            None => {}
        }
    }
    examples
}
