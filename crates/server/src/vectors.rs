//! Item vectors kept learned on a running server, for each site whose next-item settings
//! give them a say (`embeddingWeight` above 0, as a site's tuning may choose).
//!
//! Snapshots do not hold them, so they are learned once the state is current with the log
//! (after a start, or after a rebuild replaced the state), and again as the site's
//! sessions grow by a tenth of those learned from. The sessions are copied under the
//! state's read lock, learned from on a thread of their own with half the cores at most,
//! so that requests go on meanwhile, and put in under the write lock in a moment. Between
//! two learnings again the thread rests nine times as long as the last one took: it
//! learns a tenth of the time at most, however fast a site grows (a site without vectors
//! does not wait). A site whose settings no longer weigh them lets them go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spoor_engine::recommend::embeddings::background_threads;
use spoor_engine::recommend::{LearnedFrom, LearningCopy};
use spoor_live::LiveState;
use spoor_settings::TuningRegistry;

/// How often the sites are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How much a site's sessions grow, as a share of those its vectors were learned from,
/// before they are learned again.
const GROWTH: f64 = 0.1;
/// The rest after a learning, as a multiple of the time it took.
const REST_FACTOR: u32 = 9;

/// Starts the learning thread; it ends soon after `stop` is set (a learning under way
/// first runs to its end).
pub fn start(
    live: Arc<LiveState>,
    tuning: Arc<TuningRegistry>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spoor-vectors".into())
        .spawn(move || {
            let mut rest_until = Instant::now();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(LOOK_EVERY);
                if !live.is_current() || live.failed() {
                    continue;
                }
                let (due, unweighted) = look(&live, &tuning);
                for site_id in unweighted {
                    forget(&live, &site_id);
                }
                let Some((site_id, first)) = due else {
                    continue;
                };
                // A site without vectors (after a start, a rebuild, a new tuning) waits
                // for no other's rest.
                if !first && Instant::now() < rest_until {
                    continue;
                }
                let started = Instant::now();
                learn_site(&live, &site_id, background_threads());
                rest_until = Instant::now() + started.elapsed() * REST_FACTOR;
            }
        })
}

/// Whether a site's settings give the vectors a say.
pub fn weighted(tuning: &TuningRegistry, site_id: &str) -> bool {
    (tuning.get(site_id)).is_some_and(|t| t.next_item.embedding_weight > 0.0)
}

/// Whether vectors learned `from` (none: never learned) are to be learned again now that
/// the site has `sessions`.
pub fn due(sessions: usize, from: Option<LearnedFrom>) -> bool {
    match from {
        None => sessions > 0,
        Some(from) => {
            let growth = ((from.read as f64 * GROWTH) as usize).max(1);
            sessions >= from.sessions + growth
        }
    }
}

/// The site whose vectors are most overdue (never learned first, then the one that grew
/// most) and whether it has none yet, and the sites that hold vectors their settings no
/// longer weigh.
fn look(live: &LiveState, tuning: &TuningRegistry) -> (Option<(String, bool)>, Vec<String>) {
    let engine = live.read();
    let mut candidates: Vec<(f64, &str)> = Vec::new();
    let mut unweighted = Vec::new();
    for (site_id, site) in engine.sites() {
        let recommender = site.recommender();
        let from = recommender.embeddings().map(|(_, from)| from);
        if !weighted(tuning, site_id) {
            if from.is_some() {
                unweighted.push(site_id.to_string());
            }
            continue;
        }
        let sessions = recommender.view_sessions();
        if due(sessions, from) {
            let growth = from.map_or(f64::INFINITY, |from| {
                sessions.saturating_sub(from.sessions) as f64 / from.read.max(1) as f64
            });
            candidates.push((growth, site_id));
        }
    }
    let most = candidates
        .into_iter()
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(growth, site_id)| (site_id.to_string(), growth.is_infinite()));
    (most, unweighted)
}

/// Lets a site's vectors go (freed outside the state's lock).
fn forget(live: &LiveState, site_id: &str) {
    let before = live.with_site_mut(site_id, |site| site.recommender_mut().forget_embeddings());
    drop(before);
    tracing::info!(
        site_id,
        "item vectors let go: the site's settings no longer weigh them"
    );
}

/// Learns a site's vectors and puts them in, unless a rebuild replaced the state
/// meanwhile (the copy may hold what the rebuild let go: the next look learns again).
fn learn_site(live: &LiveState, site_id: &str, threads: usize) {
    let copied: Option<(LearningCopy, u64)> = {
        let engine = live.read();
        (engine.site(site_id)).map(|site| (site.recommender().learning_copy(), live.generation()))
    };
    let Some((copy, generation)) = copied else {
        return;
    };
    let started = Instant::now();
    let learned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copy.learn(threads)));
    let Ok(learned) = learned else {
        tracing::error!(
            site_id,
            "learning item vectors panicked; answers go on without them"
        );
        return;
    };
    let products = learned.products();
    let from = copy.learned_from();
    drop(copy);
    let learned = Arc::new(learned);
    // A clone goes in, so that vectors not put in are freed here, outside the lock.
    let put = live.with_site_mut(site_id, |site| {
        (live.generation() == generation)
            .then(|| site.recommender_mut().use_embeddings(learned.clone(), from))
    });
    drop(learned);
    // What was answered with before is freed here, outside the lock.
    if let Some(Some(before)) = put {
        drop(before);
        tracing::info!(
            site_id,
            sessions = from.sessions,
            read = from.read,
            products,
            seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "item vectors learned"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_learned_first_and_again_once_the_sessions_grow_by_a_tenth() {
        let from = |sessions, read| Some(LearnedFrom { sessions, read });
        assert!(!due(0, None), "nothing to learn from");
        assert!(due(1, None));
        assert!(!due(1_099, from(1_000, 1_000)));
        assert!(due(1_100, from(1_000, 1_000)));
        assert!(
            !due(5, from(5, 5)) && due(6, from(5, 5)),
            "a small site at every session"
        );
        assert!(due(10, from(0, 0)));
        // A site larger than one learning reads: a tenth of what was read.
        assert!(due(5_050_000, from(5_000_000, 500_000)));
    }
}
