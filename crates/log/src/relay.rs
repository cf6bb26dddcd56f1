//! Append completions handed back to the thread that asked for them, a group at a time.
//!
//! The writer thread answers each append through its oneshot channel. Waking a task that
//! waits on another thread's single-threaded runtime costs a system call (the runtime's
//! wake-up descriptor) per task: one per request under load, on the writer's critical
//! path. A thread that runs one single-threaded runtime for its whole life (an HTTP
//! thread) can instead [`install`] a relay: the writer then leaves that thread's answers
//! in the relay's queue and wakes one task of the thread's runtime per group, which hands
//! them out there, as local wake-ups.

use std::cell::RefCell;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use crate::{LogError, Position};

pub(crate) type Reply = oneshot::Sender<Result<Position, LogError>>;
/// An appender's channel and what to send it.
type Answer = (Reply, Result<Position, LogError>);

thread_local! {
    static INSTALLED: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

pub(crate) struct Relay {
    answers: Mutex<Vec<Answer>>,
    ready: Notify,
}

/// Makes appends submitted on this thread answered through a task of the current
/// single-threaded runtime, which must run on this thread for as long as it appends.
/// Must be called from within that runtime.
pub fn install() {
    let relay = Arc::new(Relay {
        answers: Mutex::new(Vec::new()),
        ready: Notify::new(),
    });
    INSTALLED.with(|installed| *installed.borrow_mut() = Some(relay.clone()));
    tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            relay.ready.notified().await;
            std::mem::swap(
                &mut batch,
                &mut *relay.answers.lock().unwrap_or_else(PoisonError::into_inner),
            );
            for (reply, answer) in batch.drain(..) {
                let _ = reply.send(answer);
            }
        }
    });
}

/// The relay installed on this thread, if any.
pub(crate) fn current() -> Option<Arc<Relay>> {
    INSTALLED.with(|installed| installed.borrow().clone())
}

/// Answers gathered by the writer for one group, sent once it is durable (or failed).
#[derive(Default)]
pub(crate) struct Answers {
    by_relay: Vec<(Arc<Relay>, Vec<Answer>)>,
}

impl Answers {
    /// Answers `reply` now, or queues the answer for its relay.
    pub(crate) fn answer(
        &mut self,
        reply: Reply,
        relay: Option<Arc<Relay>>,
        answer: Result<Position, LogError>,
    ) {
        let Some(relay) = relay else {
            let _ = reply.send(answer);
            return;
        };
        match self
            .by_relay
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &relay))
        {
            Some((_, queued)) => queued.push((reply, answer)),
            None => self.by_relay.push((relay, vec![(reply, answer)])),
        }
    }

    /// Hands each relay its answers, with one wake-up each.
    pub(crate) fn deliver(self) {
        for (relay, queued) in self.by_relay {
            relay
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(queued);
            relay.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_appenders_on_a_relay_thread_and_elsewhere() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (direct, direct_rx) = oneshot::channel();
        let relayed: Vec<_> = (0..3).map(|_| oneshot::channel()).collect();
        runtime.block_on(async {
            install();
            let relay = current().expect("installed on this thread");
            let mut answers = Answers::default();
            answers.answer(direct, None, Ok(7));
            let mut receivers = Vec::new();
            for (position, (reply, receiver)) in relayed.into_iter().enumerate() {
                answers.answer(reply, Some(relay.clone()), Ok(position as u64));
                receivers.push(receiver);
            }
            answers.answer(oneshot::channel().0, Some(relay), Err(LogError::Failed));
            // From another thread, as the writer does.
            std::thread::spawn(move || answers.deliver())
                .join()
                .unwrap();
            for (position, receiver) in receivers.into_iter().enumerate() {
                assert_eq!(receiver.await.unwrap().unwrap(), position as u64);
            }
        });
        assert_eq!(direct_rx.blocking_recv().unwrap().unwrap(), 7);
        let other_thread = std::thread::spawn(current).join().unwrap();
        assert!(other_thread.is_none(), "a relay serves only its own thread");
    }
}
