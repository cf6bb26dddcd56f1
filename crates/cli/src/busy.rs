//! How busy the HTTP threads are, told to the log a few times a second.
//!
//! A log may trade latency for throughput with it (the file log waits longer between
//! fsyncs while the threads that append are saturated); what to do with it is the log's
//! business, measuring it is the server's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spoor_log::EventLog;
use tokio::runtime::RuntimeMetrics;

/// How often the workers' busy time is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The share of the workers' time spent running tasks between two samples.
pub struct BusySampler {
    runtimes: Vec<RuntimeMetrics>,
    workers: usize,
    last: (Duration, Instant),
}

impl BusySampler {
    pub fn new(runtimes: Vec<RuntimeMetrics>) -> BusySampler {
        let workers = runtimes.iter().map(RuntimeMetrics::num_workers).sum();
        let last = (busy_time(&runtimes), Instant::now());
        BusySampler {
            runtimes,
            workers,
            last,
        }
    }

    /// The busy share (0 to 1) since the previous sample; `None` when no time passed.
    pub fn sample(&mut self) -> Option<f64> {
        let now = (busy_time(&self.runtimes), Instant::now());
        let capacity = (now.1 - self.last.1).as_secs_f64() * self.workers as f64;
        let busy = (now.0.saturating_sub(self.last.0)).as_secs_f64() / capacity;
        self.last = now;
        (capacity > 0.0).then_some(busy)
    }
}

/// Samples the workers of `runtimes` (those that serve requests) and tells `log`, until
/// aborted.
pub async fn report_load(log: Arc<dyn EventLog>, runtimes: Vec<RuntimeMetrics>) {
    let mut sampler = BusySampler::new(runtimes);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        if let Some(busy) = sampler.sample() {
            log.note_load(busy);
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_runtime_is_sampled_as_idle_and_a_spinning_one_as_busy() {
        let mut sampler = BusySampler::new(vec![tokio::runtime::Handle::current().metrics()]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = sampler.sample().unwrap();
        assert!(idle < 0.15, "an idle runtime sampled {idle} busy");
        // Two tasks spin without pause: at least one worker runs one all the time (both,
        // when the scheduler puts them on different workers), whatever else the machine
        // does (busy time counts time a worker ran a task, not the CPU it was given).
        let spin = || {
            tokio::spawn(async {
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
        };
        let before = busy_time(&sampler.runtimes);
        let (a, b) = (spin(), spin());
        let _ = tokio::join!(a, b);
        // A worker publishes its busy time when it next parks, which on a loaded
        // machine may come a while after its task ended: waited for, not assumed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spun = busy_time(&sampler.runtimes).saturating_sub(before);
            if spun >= Duration::from_millis(250) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a spinning runtime counted {spun:?} busy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let busy = sampler.sample().unwrap();
        assert!(busy > 0.0, "a spinning runtime sampled {busy} busy");
    }
}
