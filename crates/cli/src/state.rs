//! `spoor state rebuild`: the state replayed from the log, offline; `spoor state fetch`:
//! a peer's snapshot copied in, for a new node to start from.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;
use spoor_live::LiveState;

use crate::data_dir::{DataDir, LogChoice};

#[derive(clap::Subcommand)]
pub enum StateCommand {
    /// Replay the whole event log into a fresh state and print, per site, its counts and
    /// a digest of the whole state. A running server gives the same digest at
    /// GET /api/v1/sites/{siteId}?digest=1 once it has applied the same records. Safe
    /// beside a running server: it only reads.
    Rebuild {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        log: LogChoice,
        /// Only this site.
        #[arg(long, value_name = "ID")]
        site: Option<String>,
    },
    /// Copy a peer's state snapshot into this data directory, so that a new node starts
    /// from it rather than from the log's beginning: the peer (an engine node on the
    /// same Kafka log) saves one now and sends it. Run it before `spoor serve` on this
    /// data directory, not beside it.
    Fetch {
        /// The peer, `http://HOST:PORT`.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The peer's admin token.
        #[arg(long, env = "SPOOR_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        log: LogChoice,
    },
}

pub async fn run(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Rebuild { data, log, site } => rebuild(&data, &log, site.as_deref()),
        StateCommand::Fetch {
            from,
            admin_token,
            data,
            log,
        } => fetch(&from, &admin_token, &data, &log).await,
    }
}

fn rebuild(data: &DataDir, log: &LogChoice, site: Option<&str>) -> anyhow::Result<()> {
    let spec = log.existing_spec(data)?;
    let log = spoor_log::open_read_only(&spec).with_context(|| format!("open {spec}"))?;
    let started = std::time::Instant::now();
    let keys = spoor_log::open_keyring(&spec).context("open the key table")?;
    let state = LiveState::replay(&*log, keys)?;
    let engine = state.read();
    let sites: Vec<_> = engine
        .sites()
        .into_iter()
        .filter(|(id, _)| site.is_none_or(|wanted| wanted == *id))
        .map(|(id, site)| {
            let mut answer = serde_json::to_value(site.counts()).expect("counts serialise");
            answer["siteId"] = json!(id);
            answer["stateDigest"] = json!(site.digest());
            answer
        })
        .collect();
    let report = json!({
        "records": state.applied(),
        "undecodable": state.undecodable(),
        "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "sites": sites,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn fetch(from: &str, token: &str, data: &DataDir, log: &LogChoice) -> anyhow::Result<()> {
    let spec = log.spec(data)?;
    if matches!(spec, spoor_log::LogSpec::File { .. }) {
        bail!(
            "a snapshot comes from a peer on the same shared log: add --log kafka and the \
             peer's --kafka-brokers and --kafka-topic"
        );
    }
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&data.path)
        .with_context(|| format!("create the data directory {}", data.path.display()))?;
    crate::serve::forget_caches_of_another_log(&data.path, &spec)?;
    let url = format!("{}/admin/v1/state/snapshot", from.trim_end_matches('/'));
    if !is_private_transport(&url) {
        tracing::warn!(
            "fetching over plain http from another machine: the admin token and every \
             site's state (personal data) cross the network readable; use https or a \
             private network between nodes"
        );
    }
    let client = spoor_outgoing::client_builder()
        .build()
        .context("make the HTTP client")?;
    let mut response = (client.get(&url).bearer_auth(token).send().await)
        .with_context(|| format!("ask {url} for a snapshot"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("the peer answered {status}: {body}");
    }
    let header = |name: &str| {
        (response.headers().get(name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let theirs = header(spoor_server::admin::LOG_IDENTITY_HEADER).unwrap_or_default();
    if theirs != spec.identity() {
        bail!(
            "the peer follows another log ({theirs:?}; this node: {:?}): its state is not \
             this log's. Give the same --kafka-brokers and --kafka-topic as the peer",
            spec.identity()
        );
    }
    let position = header(spoor_server::admin::SNAPSHOT_POSITION_HEADER);
    let path = data.path.join("state.snapshot");
    let tmp = path.with_extension("fetching");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut bytes = 0u64;
    while let Some(chunk) = (response.chunk().await).context("read the snapshot")? {
        file.write_all(&chunk)
            .with_context(|| format!("write {}", tmp.display()))?;
        bytes += chunk.len() as u64;
    }
    let said = position.as_deref().and_then(|p| p.parse::<u64>().ok());
    if let Err(error) = check_snapshot(&tmp, said) {
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    keep(file, &tmp, &path)?;
    let seconds = started.elapsed().as_secs_f64();
    let report = json!({
        "path": path,
        "position": said,
        "bytes": bytes,
        "seconds": (seconds * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Makes the fetched file the data directory's snapshot, durably.
fn keep(file: std::fs::File, tmp: &Path, path: &Path) -> anyhow::Result<()> {
    file.sync_all()
        .with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("sync {}", dir.display()))?;
    }
    Ok(())
}

/// https, or http to this machine.
fn is_private_transport(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if url.scheme() == "https" {
        return true;
    }
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the fetched file through as a snapshot of this version: a cut or foreign file
/// never becomes the data directory's snapshot.
fn check_snapshot(path: &Path, position: Option<u64>) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Head {
        version: u32,
        position: u64,
        #[serde(default)]
        retries: Option<serde::de::IgnoredAny>,
    }
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let head: Head = serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file))
        .context("the peer's snapshot is not a whole snapshot")?;
    if head.version != spoor_engine::snapshot::VERSION {
        bail!(
            "the peer's snapshot has format {} and this spoor reads {}: run the same version \
             of spoor on both",
            head.version,
            spoor_engine::snapshot::VERSION
        );
    }
    if position.is_some_and(|said| said > head.position) {
        bail!("the peer's snapshot reflects fewer records than the peer said: fetch again");
    }
    // A node on a log with several writers would not use it (see `LiveState::resume`).
    if head.retries.is_none() {
        bail!("the peer's snapshot holds no retry window: is the peer on this Kafka log?");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_counts_as_private() {
        for url in [
            "https://peer:8080",
            "HTTPS://peer",
            "http://127.0.0.1:8080",
            "http://[::1]:1",
            "http://LOCALHOST",
        ] {
            assert!(is_private_transport(url), "{url}");
        }
        for url in [
            "http://peer:8080",
            "http://127.evil.example",
            "http://localhost.evil.example",
            "http://localhost@peer",
            "nonsense",
        ] {
            assert!(!is_private_transport(url), "{url}");
        }
    }
}
