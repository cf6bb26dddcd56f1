//! `spoor serve`: wire the log, the ingestor and the HTTP server together, and stop cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use spoor_ingest::Ingestor;
use spoor_live::LiveState;
use spoor_log::{CommitObserver, FileLogConfig, Handoff, Keyring, LogSpec};
use spoor_outgoing::Targets;
use spoor_server::auth::{self, TokenSource};
use spoor_server::directory::RegisteredSites;
use spoor_server::guesses::KeyGuesses;
use spoor_server::threads::{HttpLimits, HttpServer};
use spoor_server::{AppState, Metrics, Role, now_ms};
use spoor_settings::{Registration, Settings, Sharing};
use spoor_triggers::{Outbox, Triggers};

use crate::busy::report_load;
use crate::data_dir::{DataDir, LogChoice};

/// Decoded records ingest may hand to the state's follower ahead of it (see
/// `spoor_log::Handoff`): about a megabyte per thousand.
const HANDOFF_RECORDS: usize = 16_384;
/// The bytes of the records handed over at most: a client posting large events while the
/// follower is behind parks no more than this (decoded, a few times as much) before the
/// follower decodes for itself.
const HANDOFF_BYTES: usize = 32 * 1024 * 1024;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SPOOR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    #[command(flatten)]
    data: DataDir,

    #[command(flatten)]
    log: LogChoice,

    /// What this node does on a log several nodes share (`--log kafka`): `ingest` takes
    /// tracker events and appends them (no state), `engine` follows the log, holds the
    /// state and answers reads, recommendations and the dashboard (takes no events),
    /// `all` does both.
    #[arg(long, env = "SPOOR_ROLE", value_enum, default_value = "all")]
    role: RoleArg,

    /// Register this site at start (repeatable; a site registered already is left as is).
    #[arg(long = "site", value_name = "ID")]
    sites: Vec<String>,

    /// Size of each event log segment file, in MiB. Segments are created at full size
    /// (zero-filled) so that commits sync only data.
    #[arg(long, env = "SPOOR_LOG_SEGMENT_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    log_segment_mib: u64,

    /// Under load, start at most one log fsync per this many microseconds, so that each
    /// covers more events (a lone client never waits). 0 syncs as often as the disk allows.
    #[arg(long, env = "SPOOR_LOG_COMMIT_INTERVAL_US", default_value_t = 1000)]
    log_commit_interval_us: u64,

    /// The same, while the HTTP threads are busy at least 92% of the time (the CPU is
    /// what limits requests, so fewer fsyncs leave them more of it); back to the interval
    /// above once they fall under 85%.
    #[arg(
        long,
        env = "SPOOR_LOG_COMMIT_INTERVAL_SATURATED_US",
        default_value_t = 4000
    )]
    log_commit_interval_saturated_us: u64,

    /// Threads that serve HTTP requests, each with its own connections (a new
    /// connection goes to the one with the fewest open). Default: one per CPU.
    #[arg(long, env = "SPOOR_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_threads: Option<u16>,

    /// Seconds a request's head (request line and headers) may take to arrive, from its
    /// first byte (from the connection's opening, for its first request); a client that
    /// is slower is disconnected.
    #[arg(long, env = "SPOOR_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_header_timeout_secs: u64,

    /// Seconds a request's body may take to arrive after its head; a late one is answered
    /// 408. Raise it to post large feeds or imports over a slow link.
    #[arg(long, env = "SPOOR_HTTP_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    http_body_timeout_secs: u64,

    /// Seconds a kept-alive connection may wait for its next request, and an answer for a
    /// client that reads none of it, before the connection is closed.
    #[arg(long, env = "SPOOR_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    http_idle_timeout_secs: u64,

    /// Client connections open at once; beyond it, new ones wait in the listen queue until
    /// others close. Keep it under the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "SPOOR_HTTP_MAX_CONNECTIONS", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_max_connections: u32,

    /// The largest request head (request line and headers), in bytes; a larger one is
    /// answered 431.
    #[arg(long, env = "SPOOR_HTTP_MAX_HEADER_BYTES", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=262_144))]
    http_max_header_bytes: u32,

    /// Seconds a shutdown (SIGTERM or SIGINT) lets requests in flight finish before their
    /// connections are closed.
    #[arg(long, env = "SPOOR_SHUTDOWN_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_timeout_secs: u64,

    /// Take each client's address from the last entry of `X-Forwarded-For`, the one the
    /// proxy in front of spoor added (for rate limits and the slowing of refused keys).
    /// Set it only when spoor is reachable through a proxy that appends to the header.
    #[arg(long, env = "SPOOR_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,

    /// Mark the dashboard's session cookie `Secure` (sent over https only): for a proxy
    /// that serves spoor over https without saying so in `X-Forwarded-Proto` (with
    /// `--trust-forwarded-for`, `X-Forwarded-Proto: https` does it too).
    #[arg(long, env = "SPOOR_SECURE_COOKIES")]
    secure_cookies: bool,

    /// Let webhooks reach loopback, private, link-local and other non-public addresses.
    /// Off by default: anyone with a site's key sets its webhooks, and could otherwise
    /// make spoor send requests into its own network. For tests and on-premises setups.
    #[arg(long, env = "SPOOR_ALLOW_PRIVATE_TARGETS")]
    allow_private_targets: bool,

    /// Refused keys (401 or 403) one client address may send per minute before every
    /// route that takes a key answers it 429 until the minute ends; 0 for no limit.
    #[arg(long, env = "SPOOR_REFUSED_KEYS_PER_MINUTE", default_value_t = spoor_server::guesses::DEFAULT_MAX_FAILURES)]
    refused_keys_per_minute: u32,

    /// Token for /admin/v1 (`Authorization: Bearer <token>`). When absent, one is
    /// generated at first start and kept in <data>/admin-token, readable by its owner only.
    #[arg(long, env = "SPOOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RoleArg {
    All,
    Ingest,
    Engine,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::All => Role::All,
            RoleArg::Ingest => Role::Ingest,
            RoleArg::Engine => Role::Engine,
        }
    }
}

impl ServeArgs {
    fn http_limits(&self) -> HttpLimits {
        use std::time::Duration;
        HttpLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            body_timeout: Duration::from_secs(self.http_body_timeout_secs),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            max_connections: self.http_max_connections as usize,
            max_header_bytes: self.http_max_header_bytes as usize,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        }
    }
}

/// Files kept open besides connections: log segments, snapshots, settings, the outbox,
/// webhook connections.
const FILES_BESIDES_CONNECTIONS: u64 = 256;

/// Raises the soft limit on open files to the hard one; returns the soft limit then.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) and setrlimit(2) only read or write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The HTTP limits asked for, with the connection cap lowered to what the open-file limit
/// allows: a cap above it would let connections take the descriptors the log needs.
fn fitted_http_limits(args: &ServeArgs) -> HttpLimits {
    let mut limits = args.http_limits();
    let Some(files) = raise_open_file_limit() else {
        return limits;
    };
    let room = files.saturating_sub(FILES_BESIDES_CONNECTIONS).max(1);
    if limits.max_connections as u64 > room {
        tracing::warn!(
            asked = limits.max_connections,
            max_connections = room,
            open_files = files,
            "--http-max-connections lowered to fit the open-file limit; raise that limit \
             (`ulimit -n`, or systemd's LimitNOFILE=) for more"
        );
        limits.max_connections = room as usize;
    }
    limits
}

/// Where the data directory says which log its snapshots were derived from.
const LOG_IDENTITY_FILE: &str = "log-identity";

/// Removes the state's and the duplicate index's snapshots when they were derived from
/// another log than this start's (the same data directory with another `--log` or
/// topic): loaded, they would be built upon as if they were this log's. Both are caches;
/// the state is replayed from the log. A data directory without the file was the
/// embedded log's.
pub(crate) fn forget_caches_of_another_log(data_dir: &Path, spec: &LogSpec) -> anyhow::Result<()> {
    let path = data_dir.join(LOG_IDENTITY_FILE);
    let identity = spec.identity();
    let before = spoor_log::read_if_exists(&path)
        .with_context(|| format!("read {}", path.display()))?
        .map_or_else(
            || "file".to_string(),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        );
    if before.trim() == identity {
        return Ok(());
    }
    for cache in ["state.snapshot", "dedup.snapshot"] {
        match std::fs::remove_file(data_dir.join(cache)) {
            Ok(()) => tracing::warn!(
                cache,
                "snapshot of another log removed (the data directory was used with another \
                 --log or topic); the state is replayed from this log"
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("remove {cache} of another log"));
            }
        }
    }
    // Written only when the log changed, so a start on a full disk with the same log
    // never comes here; one that cannot note the change does not start, or it would save
    // snapshots a later start on the other log would take for its own.
    spoor_log::write_atomically(&path, identity.as_bytes()).with_context(|| {
        format!(
            "note which log the data directory is on in {}",
            path.display()
        )
    })
}

/// The log `spoor serve` runs on, from its flags.
fn log_spec(args: &ServeArgs) -> anyhow::Result<LogSpec> {
    let spec = args.log.spec(&args.data)?;
    let LogSpec::File { dir, .. } = spec else {
        return Ok(spec);
    };
    Ok(LogSpec::File {
        dir,
        config: FileLogConfig {
            segment_bytes: args.log_segment_mib * 1024 * 1024,
            commit_interval: std::time::Duration::from_micros(args.log_commit_interval_us),
            saturated_commit_interval: std::time::Duration::from_micros(
                args.log_commit_interval_saturated_us,
            ),
            ..FileLogConfig::default()
        },
    })
}

/// Starts the thread that keeps `live` current from the log.
fn follow_state(
    log: &Arc<dyn spoor_log::EventLog>,
    live: LiveState,
) -> anyhow::Result<(Arc<LiveState>, std::thread::JoinHandle<()>)> {
    let live = Arc::new(live);
    let follower =
        spoor_live::follow(log.clone(), live.clone()).context("start the state follower")?;
    Ok((live, follower))
}

/// On a log that several nodes share, shares the sites' settings through it too: read
/// whole before serving, followed after.
fn share_settings(settings: &Settings, spec: &LogSpec) -> anyhow::Result<()> {
    let Some(table) = spoor_log::open_shared_table(spec).context("open the shared settings")?
    else {
        return Ok(());
    };
    let shared_in = table.describe();
    let sharing = (settings.share(table)).context("read the shared settings")?;
    match sharing {
        Sharing::Joined { entries } => tracing::info!(
            entries,
            shared_in,
            "settings read from the shared settings; the data directory's files now copy them"
        ),
        Sharing::Seeded { entries } => tracing::info!(
            entries,
            shared_in,
            "the shared settings were empty: this data directory's settings were stored there"
        ),
    }
    Ok(())
}

/// What another node's erasure asks of this node's trigger outbox: the contacts' records
/// overwritten, as the erasing node does with its own.
fn forget_in_outbox(outbox: Arc<Outbox>) -> spoor_live::ErasureHook {
    Box::new(move |site_id, contacts| {
        let checks = contacts
            .iter()
            .flat_map(|contact| spoor_triggers::payload::contact_checks(contact));
        let mut forgotten = 0;
        for check in checks {
            match outbox.forget(&check) {
                Ok(records) => forgotten += records,
                Err(error) => {
                    tracing::error!(site_id, %error, "erasing a contact's trigger records failed")
                }
            }
        }
        if forgotten > 0 {
            tracing::info!(
                site_id,
                records = forgotten,
                "trigger outbox records of a contact erased on another node erased"
            );
        }
    })
}

/// The trigger outbox: on a shared log, an engine node's is the topic every engine node
/// follows; otherwise this node's own, in its data directory (an ingest node's stays
/// empty).
fn open_outbox(
    log_spec: &LogSpec,
    role: Role,
    data_dir: &Path,
    keys: Option<Arc<Keyring>>,
) -> anyhow::Result<Outbox> {
    let topic = if role.holds_state() {
        spoor_log::open_outbox_log(log_spec).context("open the trigger outbox's topic")?
    } else {
        None
    };
    match (topic, keys) {
        (Some(topic), Some(keys)) => {
            let outbox =
                Outbox::open_shared(topic, keys).context("read the trigger outbox's topic")?;
            tracing::info!(
                triggers = outbox.len(),
                "trigger outbox read from its topic"
            );
            Ok(outbox)
        }
        (Some(_), None) => anyhow::bail!("a shared trigger outbox needs the log's key table"),
        (None, _) => Outbox::open(&data_dir.join("outbox")).context("open the trigger outbox"),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let http_limits = fitted_http_limits(&args);
    let data_dir = &args.data.path;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    let metrics = Arc::new(Metrics::new());
    let observer: CommitObserver = {
        let metrics = metrics.clone();
        Box::new(move |fsync, records| metrics.group_commit(fsync, records))
    };
    let log_spec = log_spec(&args)?;
    let role = Role::from(args.role);
    if role != Role::All && matches!(log_spec, LogSpec::File { .. }) {
        anyhow::bail!(
            "--role {} is for nodes that share one log: add --log kafka --kafka-brokers \
             HOST:PORT,... (the embedded log belongs to one process)",
            role.name()
        );
    }
    forget_caches_of_another_log(data_dir, &log_spec)?;
    let log =
        spoor_log::open(&log_spec, Some(observer)).with_context(|| format!("open {log_spec}"))?;
    let settings = Arc::new(Settings::open(data_dir).context("load the sites' settings")?);
    share_settings(&settings, &log_spec)?;
    let keys = spoor_log::open_keyring(&log_spec).context("open the key table")?;
    for site in &args.sites {
        let (_, registration) = settings.sites.register(Some(site), None, now_ms())?;
        if registration == Registration::Created {
            tracing::info!(site_id = %site, "site registered");
        }
    }
    let outbox_keys = keys.clone();
    let index_snapshot = data_dir.join("dedup.snapshot");
    let sites = Arc::new(RegisteredSites(settings.sites.clone()));
    let (ingestor, live, follower) = match role {
        Role::All => {
            // Ingest hands each record it appends, decoded, to the state's follower,
            // which would otherwise decode the bytes it reads back. Room for well over
            // the follower's usual lag; beyond it, the follower decodes.
            let handoff = Arc::new(Handoff::new(HANDOFF_RECORDS, HANDOFF_BYTES));
            let ingestor =
                Ingestor::open_with_snapshot(log.clone(), sites, now_ms(), &index_snapshot)?
                    .hand_off_to(handoff.clone())
                    .sealing_with(keys.clone());
            let live = LiveState::resume(&*log, &data_dir.join("state.snapshot"))
                .with_handoff(handoff)
                .with_keys(&*log, keys);
            let (live, follower) = follow_state(&log, live)?;
            (ingestor, live, Some(follower))
        }
        Role::Ingest => {
            let ingestor =
                Ingestor::open_with_snapshot(log.clone(), sites, now_ms(), &index_snapshot)?
                    .sealing_with(keys);
            (ingestor, Arc::new(LiveState::default()), None)
        }
        Role::Engine => {
            let live =
                LiveState::resume(&*log, &data_dir.join("state.snapshot")).with_keys(&*log, keys);
            let (live, follower) = follow_state(&log, live)?;
            (
                Ingestor::taking_no_events(log.clone(), sites),
                live,
                Some(follower),
            )
        }
    };
    let (admin_token, source) =
        auth::admin_token(args.admin_token, data_dir).context("load or create the admin token")?;
    match source {
        TokenSource::Given => tracing::info!("admin token: as given by --admin-token"),
        TokenSource::Stored(path) => {
            tracing::info!(path = %path.display(), "admin token: read from the data directory")
        }
        TokenSource::Generated(path) => tracing::info!(
            path = %path.display(),
            "admin token: generated and stored (mode 0600); send it as `Authorization: Bearer <token>`"
        ),
    }
    let targets = Targets {
        allow_private: args.allow_private_targets,
    };
    if targets.allow_private {
        tracing::warn!(
            "webhooks may reach private and loopback addresses (--allow-private-targets)"
        );
    }
    let outbox = Arc::new(open_outbox(&log_spec, role, data_dir, outbox_keys)?);
    live.on_erasure(forget_in_outbox(outbox.clone()));
    let triggers = Arc::new(Triggers::new(
        live.clone(),
        settings.triggers.clone(),
        settings.tuning.clone(),
        outbox,
        targets,
    )?);
    let stop_triggers = Arc::new(AtomicBool::new(false));
    let trigger_loop = (role.holds_state())
        .then(|| tokio::spawn(triggers.clone().run(stop_triggers.clone(), now_ms)));
    let stop_vectors = Arc::new(AtomicBool::new(false));
    if role.holds_state() {
        spoor_server::vectors::start(live.clone(), settings.tuning.clone(), stop_vectors.clone())
            .context("start the item vectors' thread")?;
    }
    let state = AppState {
        role,
        log_identity: log_spec.identity().into(),
        ingestor: Arc::new(ingestor),
        log,
        settings,
        live: live.clone(),
        metrics,
        refusals: Arc::default(),
        sessions: Arc::default(),
        data_dir: data_dir.as_path().into(),
        admin_token: admin_token.into(),
        limiters: Arc::default(),
        ingest_limiters: Arc::default(),
        guesses: Arc::new(KeyGuesses::new(args.refused_keys_per_minute)),
        tuning_running: Arc::default(),
        trust_forwarded_for: args.trust_forwarded_for,
        secure_cookies: args.secure_cookies,
        targets,
        triggers: triggers.clone(),
        background: tokio::runtime::Handle::current(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let http_threads = args.http_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let local_addr = listener.local_addr()?;
    let server = HttpServer::start(listener, state.clone(), http_threads, http_limits)
        .context("start the HTTP threads")?;
    tracing::info!(
        listen = %local_addr,
        data = %data_dir.display(),
        records = state.log.end(),
        sites = state.settings.sites.list().len(),
        role = role.name(),
        http_threads,
        "{}",
        if role.takes_events() {
            "spoor is serving: POST events to /api/v2"
        } else {
            "spoor is serving reads, recommendations and the dashboard; events go to ingest nodes"
        }
    );
    let index_saver = (role.takes_events()).then(|| {
        tokio::spawn(save_index_while_serving(
            state.ingestor.clone(),
            index_snapshot.clone(),
        ))
    });
    let load_reporter = tokio::spawn(report_load(state.log.clone(), server.runtime_metrics()));
    // After a panic of the state, the server goes on a moment (readiness probes see
    // /readyz answer 503, and events are still stored) before it stops taking requests.
    let follower_failed = {
        let live = live.clone();
        async move {
            while !live.failed() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tokio::time::sleep(FAILED_GRACE).await;
        }
    };
    let failure_deadline = {
        let live = live.clone();
        async move {
            while !live.failed() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tokio::time::sleep(FAILED_DRAIN).await;
        }
    };
    tokio::select! {
        served = server.run_until(async {
            tokio::select! {
                () = shutdown_signal() => {},
                () = follower_failed => {},
            }
        }) => served?,
        // A failed state is not served for long: requests still in flight past the
        // deadline are cut, and the process exits for its supervisor to restart it.
        () = failure_deadline => anyhow::bail!(
            "the state failed after a panic (see the log above) and requests did not finish \
             within {} s; exiting for a supervisor to restart spoor",
            FAILED_DRAIN.as_secs()
        ),
    }
    // A delivery in flight finishes (its attempt recorded) before the loop ends.
    stop_triggers.store(true, Ordering::Release);
    // A learning under way is not waited for: it only computes, and its result would be
    // learned again at the next start.
    stop_vectors.store(true, Ordering::Release);
    if let Some(trigger_loop) = trigger_loop {
        let _ = trigger_loop.await;
    }
    load_reporter.abort();
    live.stop();
    if let Some(follower) = follower {
        let _ = follower.join();
    }
    if let Some(index_saver) = index_saver {
        // A save in progress finishes before the last one below (they take turns).
        index_saver.abort();
        // Nothing is in flight any more: the duplicate index matches the log exactly.
        if let Err(error) = state.ingestor.save_index(&index_snapshot) {
            tracing::warn!(%error, "saving the duplicate index failed; the next start rebuilds it");
        }
    }
    let log = state.log.clone();
    drop(state);
    // Every acknowledged append was fsynced before its answer; this only waits for the
    // writer thread, once the last reference to the log is gone.
    if live.failed() {
        // Every acknowledged record is in the log; a supervisor's restart rebuilds the
        // state from the last snapshot and the log.
        anyhow::bail!(
            "the state's follower panicked (see the log above); stopped with an error so \
             that a supervisor restarts spoor"
        );
    }
    tracing::info!(records = log.end(), "stopped cleanly");
    Ok(())
}

/// How long requests in flight may finish once the state failed, before the process exits.
const FAILED_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the server goes on taking requests once the state failed, with `/readyz`
/// answering 503, before it stops accepting them (within [`FAILED_DRAIN`]).
const FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Log records between two saves of the duplicate index while serving: after a crash, a
/// start reads about this many records to bring the index up to date (a few tenths of a
/// second), not the whole log.
const INDEX_SNAPSHOT_EVERY: u64 = 250_000;

/// Saves the duplicate index every [`INDEX_SNAPSHOT_EVERY`] records, until aborted.
async fn save_index_while_serving(ingestor: Arc<Ingestor>, path: std::path::PathBuf) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let (ingestor, path) = (ingestor.clone(), path.clone());
        let saved = tokio::task::spawn_blocking(move || {
            ingestor.save_index_every(&path, INDEX_SNAPSHOT_EVERY)
        })
        .await;
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "saving the duplicate index failed"),
            Err(error) => tracing::warn!(%error, "the duplicate index saver stopped"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_derived_from_another_log_are_removed_and_this_logs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let caches = || {
            for cache in ["state.snapshot", "dedup.snapshot"] {
                std::fs::write(data.join(cache), b"derived").unwrap();
            }
        };
        let kept = || ["state.snapshot", "dedup.snapshot"].map(|c| data.join(c).exists());
        let file = LogSpec::file(data.join("log"));
        let kafka = LogSpec::Kafka(spoor_log::KafkaConfig {
            brokers: "b:9092".into(),
            topic: "events".into(),
            settings_topic: "events-settings".into(),
            keys_topic: "events-keys".into(),
            outbox_topic: "events-outbox".into(),
            properties: Vec::new(),
        });
        caches();
        // A data directory from before the identity file was the embedded log's.
        forget_caches_of_another_log(data, &file).unwrap();
        assert_eq!(kept(), [true, true]);
        forget_caches_of_another_log(data, &kafka).unwrap();
        assert_eq!(kept(), [false, false]);
        caches();
        forget_caches_of_another_log(data, &kafka).unwrap();
        assert_eq!(kept(), [true, true]);
        forget_caches_of_another_log(data, &file).unwrap();
        assert_eq!(kept(), [false, false]);
    }
}
