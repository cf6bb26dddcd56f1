//! What every handler shares: the parts of spoor a request reaches, and the clock.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use spoor_ingest::Ingestor;
use spoor_live::LiveState;
use spoor_log::EventLog;
use spoor_settings::Settings;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::rate_limits::Limiters;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Whether this node takes events, holds the state, or both.
    pub role: crate::Role,
    pub ingestor: Arc<Ingestor>,
    /// The event log: the source of truth, read by exports and health checks.
    pub log: Arc<dyn EventLog>,
    /// Which log this is (`LogSpec::identity`): sent with a snapshot, so that a node of
    /// another log does not take it.
    pub log_identity: Arc<str>,
    /// Every site's settings: sites and keys, CORS and rate limits, blocks, tuning,
    /// triggers.
    pub settings: Arc<Settings>,
    /// The state derived from the log, kept current by its follower thread.
    pub live: Arc<LiveState>,
    pub metrics: Arc<Metrics>,
    /// Events refused per site, by reason and field path, for the dashboard.
    pub refusals: Arc<crate::refusals::Refusals>,
    /// The dashboard's signed-in sessions.
    pub sessions: Arc<crate::ui::session::Sessions>,
    /// Where the log and settings live: the dashboard shows the disk's free space.
    pub data_dir: Arc<std::path::Path>,
    pub admin_token: Arc<str>,
    /// Refused keys per client address, to slow guessing down.
    pub guesses: Arc<crate::guesses::KeyGuesses>,
    /// Rate limits of the tracker endpoints, per site and client, for the sites that set one.
    pub ingest_limiters: Arc<Limiters>,
    /// Rate limits of the public recommendations endpoint, per site and client.
    pub limiters: Arc<Limiters>,
    /// Take the client's address from `X-Forwarded-For` (spoor is behind a proxy).
    pub trust_forwarded_for: bool,
    /// Mark the dashboard's session cookie `Secure` whatever the request says.
    pub secure_cookies: bool,
    /// Where webhooks may point (see `spoor_outgoing::Targets`).
    pub targets: spoor_outgoing::Targets,
    pub tuning_running: Arc<Running>,
    /// The trigger firing and delivery loop.
    pub triggers: Arc<spoor_triggers::Triggers>,
    /// A runtime for requests whose work holds a thread for long (an import reads the
    /// whole log, or parses a feed of megabytes): each HTTP thread serves many
    /// connections (see [`crate::threads`]), and none of them should wait behind an import.
    pub background: tokio::runtime::Handle,
}

impl AppState {
    /// Runs `work` on the [`AppState::background`] runtime and waits for it. The work goes
    /// on to its end even if the client hangs up meanwhile.
    pub async fn in_background<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.background.spawn(work).await.map_err(|error| {
            // A panic's text (in the error) may quote the request: the hook logged it.
            tracing::error!(
                panicked = error.is_panic(),
                "background work of a request failed"
            );
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request's work stopped unexpectedly; the server's log says why",
            )
        })
    }
}

/// Runs `work` on a blocking thread and waits for it: for what syncs files (settings,
/// an erasure's rewrites), which would otherwise hold up every connection of the HTTP
/// thread meanwhile (see [`crate::threads`]).
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(
            panicked = error.is_panic(),
            "blocking work of a request failed"
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request's work stopped unexpectedly; the server's log says why",
        )
    })
}

/// The handlers' state: one reference count per request instead of one per part.
pub(crate) type Shared = Arc<AppState>;

/// The current time in milliseconds since the epoch: the receive time of an event.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sites being tuned now: one tuning per site at a time.
#[derive(Default)]
pub struct Running(Mutex<HashSet<String>>);

pub(crate) struct RunningGuard<'a> {
    running: &'a Running,
    site_id: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.running.end(&self.site_id);
    }
}

/// [`RunningGuard`] that a blocking job can own: the job holds its site until it ends,
/// even when the request that started it is gone.
pub(crate) struct OwnedRunningGuard {
    running: Arc<Running>,
    site_id: String,
}

impl Drop for OwnedRunningGuard {
    fn drop(&mut self) {
        self.running.end(&self.site_id);
    }
}

impl Running {
    fn end(&self, site_id: &str) {
        let mut sites = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sites.remove(site_id);
    }

    pub(crate) fn start_owned(self: &Arc<Self>, site_id: &str) -> Option<OwnedRunningGuard> {
        let mut sites = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sites
            .insert(site_id.to_string())
            .then(|| OwnedRunningGuard {
                running: self.clone(),
                site_id: site_id.to_string(),
            })
    }

    pub(crate) fn start(&self, site_id: &str) -> Option<RunningGuard<'_>> {
        let mut sites = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sites.insert(site_id.to_string()).then(|| RunningGuard {
            running: self,
            site_id: site_id.to_string(),
        })
    }
}
