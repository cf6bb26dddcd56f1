//! What the browser tests share: where Chromium and the driver are, and a running
//! `spoor demo`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether the browser and its driver are installed; says what is missing otherwise.
pub fn browser_at_hand() -> bool {
    let missing: Vec<String> = [
        (chromium(), "chromium (apt-get install chromium)"),
        (
            browser_dir().join("node_modules/playwright-core"),
            "playwright-core (npm ci in crates/cli/tests/browser)",
        ),
    ]
    .into_iter()
    .filter(|(path, _)| !path.exists())
    .map(|(_, what)| what.to_string())
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("SPOOR_REQUIRE_BROWSER").is_none(),
        "the browser tests need {}",
        missing.join(" and ")
    );
    eprintln!("skipped: the browser tests need {}", missing.join(" and "));
    false
}

pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A running `spoor demo`, stopped when dropped.
pub struct Demo {
    child: std::process::Child,
    pub shop: String,
    pub spoor: String,
    pub data: PathBuf,
}

impl Demo {
    /// Starts `spoor demo` with `args`, and waits for it to print the shop's address.
    pub fn start(args: &[&str]) -> Demo {
        use std::io::BufRead;
        let (listen, shop_listen) = (free_address(), free_address());
        let mut child = super::spoor()
            .arg("demo")
            .args(args)
            .args(["--listen", &listen, "--shop-listen", &shop_listen])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut printed = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C stops");
            printed.push(line);
            if done {
                break;
            }
        }
        let after = |label: &str| {
            printed
                .iter()
                .find_map(|line| line.trim().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label:?} in what the demo printed: {printed:?}"))
                .trim()
                .to_string()
        };
        let shop = after("the demo shop:").trim_end_matches('/').to_string();
        let spoor_line = after("spoor:");
        let spoor = spoor_line.split_whitespace().next().unwrap();
        let token = spoor_line.split("admin token in ").nth(1).unwrap();
        Demo {
            child,
            shop,
            spoor: spoor.trim_end_matches('/').to_string(),
            data: Path::new(token.trim_end_matches(')'))
                .parent()
                .unwrap()
                .into(),
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the demo did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a driver script of `tests/browser` with node, `args` after its name, and
/// returns the JSON line it printed last (what it saw); fails the test with its output
/// when it fails.
pub async fn run_driver(script: &str, args: &[&str], env: &[(&str, &Path)]) -> serde_json::Value {
    let mut command = Command::new("node");
    command
        .current_dir(browser_dir())
        .arg(script)
        .args(args)
        .env("CHROMIUM", chromium());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
