//! An append whose duplicate-index claims are settled however its request ends.
//!
//! The request awaits the append in place; if the request is dropped first (its client
//! went away mid-write), the rest of the append moves to a task of its own, which settles
//! the claims when the write ends. Otherwise the claims would stay unsettled and every
//! retry of the body would wait for ever. Awaiting in place spares each request a task of
//! its own, which a spawn per append cost before (an allocation, a trip through the
//! scheduler and a wake-up of the request once the task ended).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use spoor_log::{AppendFuture, LogError, Position};

use crate::UnsettledAppend;
use crate::dedup::{DedupIndex, Keys};

pub(crate) struct SettlingAppend {
    /// `None` once settled.
    pending: Option<Pending>,
}

struct Pending {
    append: AppendFuture,
    keys: Vec<Keys>,
    dedup: Arc<DedupIndex>,
    /// Held until the claims are settled: an index snapshot taken meanwhile does not
    /// count this append's records as settled.
    _unsettled: UnsettledAppend,
}

impl Pending {
    fn settle(self, appended: &Result<Position, LogError>) {
        for keys in self.keys {
            self.dedup.settle(keys, appended.is_ok());
        }
    }

    async fn finish(mut self) {
        let appended = (&mut self.append).await;
        self.settle(&appended);
    }
}

impl SettlingAppend {
    /// `append` has begun writing the records claimed as `keys`; `unsettled` was taken
    /// before it began.
    pub(crate) fn new(
        append: AppendFuture,
        keys: Vec<Keys>,
        dedup: Arc<DedupIndex>,
        unsettled: UnsettledAppend,
    ) -> Self {
        SettlingAppend {
            pending: Some(Pending {
                append,
                keys,
                dedup,
                _unsettled: unsettled,
            }),
        }
    }
}

impl Future for SettlingAppend {
    type Output = Result<Position, LogError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(pending) = this.pending.as_mut() else {
            return Poll::Ready(Err(LogError::Failed));
        };
        let appended = std::task::ready!(pending.append.as_mut().poll(context));
        if let Some(pending) = this.pending.take() {
            pending.settle(&appended);
        }
        Poll::Ready(appended)
    }
}

impl Drop for SettlingAppend {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(pending.finish());
            }
            // Dropped outside any runtime: a thread of its own waits for the write.
            Err(_) => {
                let waiter = std::thread::Builder::new()
                    .name("spoor-settle".into())
                    .spawn(
                        move || match tokio::runtime::Builder::new_current_thread().build() {
                            Ok(runtime) => runtime.block_on(pending.finish()),
                            Err(error) => tracing::error!(
                                %error,
                                "an abandoned append's claims stay unsettled: no runtime to wait in"
                            ),
                        },
                    );
                if let Err(error) = waiter {
                    tracing::error!(
                        %error,
                        "an abandoned append's claims stay unsettled: no thread to wait in"
                    );
                }
            }
        }
    }
}
