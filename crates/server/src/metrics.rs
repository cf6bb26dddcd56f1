//! `/metrics`: what an operator watches. Label values are fixed names (event types, error
//! codes, routes), never anything a client sent.

use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use spoor_engine::limits::{self, Dropped};
use spoor_ingest::IngestError;
use spoor_protocol::EventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptedLabels {
    pub event: &'static str,
    /// `stored`, `duplicate` or `ignored`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    pub event: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabels {
    pub thread: u32,
}

pub struct Metrics {
    registry: Registry,
    http_connections: Family<ThreadLabels, Gauge>,
    connections_cut: Family<ReasonLabels, Counter>,
    connection_cap_reached: Counter,
    accepted: Family<AcceptedLabels, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    requests: Family<RouteLabels, Histogram>,
    fsync: Histogram,
    group_size: Histogram,
    log_bytes: Gauge,
    log_records: Gauge,
    dedup_requests: Gauge,
    sealing_keys: Gauge,
    trigger_sender: Gauge,
    state_lag: Gauge,
    state_dropped: Family<ReasonLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spoor");
        let accepted = Family::<AcceptedLabels, Counter>::default();
        registry.register(
            "events_accepted",
            "Events acknowledged, by event type and outcome",
            accepted.clone(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "events_rejected",
            "Events refused, by event type (`unknown` when unreadable) and reason",
            rejected.clone(),
        );
        let requests =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            requests.clone(),
        );
        let fsync = latency_histogram();
        registry.register(
            "log_fsync_duration_seconds",
            "Duration of each group commit's fdatasync",
            fsync.clone(),
        );
        let group_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "log_group_commit_records",
            "Records made durable by one fsync",
            group_size.clone(),
        );
        let log_bytes = Gauge::default();
        registry.register(
            "log_size_bytes",
            "Bytes in the event log",
            log_bytes.clone(),
        );
        let log_records = Gauge::default();
        registry.register(
            "log_records",
            "Records in the event log",
            log_records.clone(),
        );
        let dedup_requests = Gauge::default();
        registry.register(
            "dedup_recent_requests",
            "Request hashes held to recognise client retries (kept 24 to 48 hours)",
            dedup_requests.clone(),
        );
        let sealing_keys = Gauge::default();
        registry.register(
            "sealing_keys",
            "Keys held in memory that records' personal parts are sealed with, one per identifier seen (a Kafka log)",
            sealing_keys.clone(),
        );
        let trigger_sender = Gauge::default();
        registry.register(
            "trigger_sender",
            "1 on the node that fires and sends the triggers (one engine node of a shared log; the one node of the embedded log), else 0",
            trigger_sender.clone(),
        );
        let state_lag = Gauge::default();
        registry.register(
            "state_lag_records",
            "Log records not yet applied to the derived state",
            state_lag.clone(),
        );
        let state_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "state_dropped",
            "What events asked the state to hold past a cap, dropped, by reason (see \
             spoor_engine::limits); replays at start count again",
            state_dropped.clone(),
        );
        let http_connections = Family::<ThreadLabels, Gauge>::default();
        registry.register(
            "http_connections_open",
            "Open client connections, per HTTP thread (each thread serves its own)",
            http_connections.clone(),
        );
        let connections_cut = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_cut",
            "Client connections the server closed on a limit: header_timeout (a request's \
             head too slow), idle_timeout (nothing sent between requests), send_timeout (the \
             client read no answer), shutdown_deadline (still open when shutdown's time ran out)",
            connections_cut.clone(),
        );
        let connection_cap_reached = Counter::default();
        registry.register(
            "http_connection_cap_reached",
            "Times the open connections reached --http-max-connections, so that new ones \
             waited in the listen queue",
            connection_cap_reached.clone(),
        );
        Metrics {
            http_connections,
            connections_cut,
            connection_cap_reached,
            state_lag,
            state_dropped,
            registry,
            accepted,
            rejected,
            requests,
            fsync,
            group_size,
            log_bytes,
            log_records,
            dedup_requests,
            sealing_keys,
            trigger_sender,
        }
    }

    /// The open-connection count of HTTP thread `thread`, which the server keeps current.
    pub fn http_connections(&self, thread: u32) -> Gauge {
        self.http_connections
            .get_or_create(&ThreadLabels { thread })
            .clone()
    }

    /// A connection closed by the server on a limit; `reason` is a fixed name.
    pub fn connection_cut(&self, reason: &'static str) {
        self.connections_cut
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn connection_cap_reached(&self) {
        self.connection_cap_reached.inc();
    }

    pub fn accepted(&self, event: Option<EventKind>, outcome: &'static str) {
        let event = event.map_or("plugin", EventKind::as_str);
        self.accepted
            .get_or_create(&AcceptedLabels { event, outcome })
            .inc();
    }

    pub fn rejected(&self, error: &IngestError) {
        let (event, reason) = match error {
            IngestError::Rejected { error, event, .. } => (*event, error.code.as_str()),
            IngestError::UnknownSite { event, .. } => (Some(*event), "unknown_site"),
            IngestError::RateLimited { event, .. } => (Some(*event), "rate_limited"),
            IngestError::KeyRequired { event, problem, .. } => {
                (Some(*event), crate::refusals::key_reason(*problem))
            }
            IngestError::InvalidSite(_) => (None, "invalid_site"),
            IngestError::Log(_) | IngestError::Storage(_) => (None, "storage_unavailable"),
        };
        self.rejected_as(event.map_or("unknown", EventKind::as_str), reason);
    }

    /// A refusal of a whole request before any event in it was read.
    pub fn rejected_as(&self, event: &'static str, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectedLabels { event, reason })
            .inc();
    }

    /// `route` is a route template from the router, never a client's path.
    pub fn request(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteLabels {
                route,
                method: method_label(method),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn group_commit(&self, fsync: Duration, records: usize) {
        self.fsync.observe(fsync.as_secs_f64());
        self.group_size.observe(records as f64);
    }

    /// The exposition text, with point-in-time gauges refreshed.
    pub fn render(
        &self,
        log_bytes: Option<u64>,
        log_records: u64,
        dedup: usize,
        sealing_keys: usize,
        trigger_sender: bool,
        state_lag: u64,
    ) -> String {
        self.trigger_sender.set(i64::from(trigger_sender));
        self.state_lag.set(state_lag as i64);
        for reason in Dropped::ALL {
            let counter = self.state_dropped.get_or_create(&ReasonLabels {
                reason: reason.name(),
            });
            let total = limits::dropped(reason);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        if let Some(bytes) = log_bytes {
            self.log_bytes.set(bytes as i64);
        }
        self.log_records.set(log_records as i64);
        self.dedup_requests.set(dedup as i64);
        self.sealing_keys.set(sealing_keys as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}
