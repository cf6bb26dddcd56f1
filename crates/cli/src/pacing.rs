//! The log's commit interval, set from how busy the HTTP threads are.
//!
//! Under load the log waits up to its commit interval between fsyncs, so that each covers
//! more events: every fsync costs kernel CPU. How long that wait should be depends on
//! whether the CPU is what limits the requests. When the HTTP threads are busy nearly
//! all the time, requests queue for CPU anyway, and a longer wait costs them nothing while
//! fewer fsyncs leave them more CPU. When the workers have idle time, a longer wait only
//! adds latency, and with few concurrent clients it caps their throughput (each client
//! waits a whole interval per event). So the interval is the long one while the workers
//! are saturated and the base one otherwise, with a gap between the two thresholds so it
//! does not flap.

use std::time::{Duration, Instant};

use spoor_log::CommitPace;
use tokio::runtime::RuntimeMetrics;

/// Share of the workers' time spent running tasks at which they count as saturated.
const SATURATED_BUSY: f64 = 0.92;
/// Share below which they no longer do.
const RELAXED_BUSY: f64 = 0.85;
/// How often the workers' busy time is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// The interval while the workers have time to spare.
    pub base: Duration,
    /// The interval while they are saturated.
    pub saturated: Duration,
}

impl Pacing {
    /// The interval to use next, given the current one and the workers' busy share.
    pub fn next(&self, current: Duration, busy: f64) -> Duration {
        if busy >= SATURATED_BUSY {
            self.saturated
        } else if busy < RELAXED_BUSY {
            self.base
        } else {
            current
        }
    }
}

/// Samples the workers of `runtimes` (those that serve requests) and sets the log's
/// commit interval, until aborted.
pub async fn pace_commits(pace: CommitPace, pacing: Pacing, runtimes: Vec<RuntimeMetrics>) {
    let workers: usize = runtimes.iter().map(RuntimeMetrics::num_workers).sum();
    let mut last = (busy_time(&runtimes), Instant::now());
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let now = (busy_time(&runtimes), Instant::now());
        let capacity = (now.1 - last.1).as_secs_f64() * workers as f64;
        if capacity > 0.0 {
            let busy = (now.0 - last.0).as_secs_f64() / capacity;
            let current = pace.interval();
            let next = pacing.next(current, busy);
            if next != current {
                tracing::debug!(
                    busy,
                    interval_us = next.as_micros() as u64,
                    "log commit interval"
                );
                pace.set_interval(next);
            }
        }
        last = now;
    }
}

/// Time all workers have spent running tasks since their runtimes started.
fn busy_time(runtimes: &[RuntimeMetrics]) -> Duration {
    let busy = |metrics: &RuntimeMetrics| -> Duration {
        (0..metrics.num_workers())
            .map(|worker| metrics.worker_total_busy_duration(worker))
            .sum()
    };
    runtimes.iter().map(busy).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_lengthens_only_while_the_workers_are_saturated() {
        let pacing = Pacing {
            base: Duration::from_millis(1),
            saturated: Duration::from_millis(4),
        };
        let (base, long) = (pacing.base, pacing.saturated);
        assert_eq!(pacing.next(base, 0.40), base);
        assert_eq!(pacing.next(base, 0.95), long);
        // Between the thresholds it stays where it is, either way.
        assert_eq!(pacing.next(long, 0.88), long);
        assert_eq!(pacing.next(base, 0.88), base);
        assert_eq!(pacing.next(long, 0.60), base);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_runtime_keeps_the_base_interval() {
        let dir = tempfile::tempdir().unwrap();
        let log = spoor_log::FileLog::open(
            dir.path(),
            spoor_log::FileLogConfig {
                commit_interval: Duration::from_millis(4),
                ..spoor_log::FileLogConfig::default()
            },
            None,
        )
        .unwrap();
        let pace = log.commit_pace();
        let pacing = Pacing {
            base: Duration::from_millis(1),
            saturated: Duration::from_millis(4),
        };
        let runtimes = vec![tokio::runtime::Handle::current().metrics()];
        let pacer = tokio::spawn(pace_commits(pace.clone(), pacing, runtimes));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pace.interval() != pacing.base {
            assert!(Instant::now() < deadline, "the interval was not set");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pacer.abort();
    }
}
