//! The HTTP server's threads: one single-threaded runtime per thread, each serving the
//! connections handed to it, and an acceptor that hands each new connection to the
//! thread with the fewest open.
//!
//! Why not one runtime whose workers share all connections: a tracker request waits for
//! its fsync, and the log writer's wake-up puts it back in the runtime's shared queue, so
//! its second half often runs on another worker than its first, with the request's
//! memory in the other core's cache and freed across threads. Kept on one thread, both
//! halves of a request run on the same core, with its memory in that core's cache and
//! freed on the thread that allocated it.
//! Connections, not requests, are what is balanced: a client with a handful of very busy
//! connections can load one thread more than another.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::{Listener, ListenerExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::RuntimeMetrics;
use tokio::sync::{mpsc, watch};

use crate::app::AppState;
use crate::router::router;

/// The HTTP server, started on its threads and not yet accepting.
pub struct HttpServer {
    listener: TcpListener,
    threads: Vec<HttpThread>,
    stop: watch::Sender<bool>,
}

/// One serving thread, seen from the acceptor.
struct HttpThread {
    connections: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Its open connections, also shown in `/metrics`.
    open: Gauge,
    metrics: RuntimeMetrics,
    done: std::thread::JoinHandle<io::Result<()>>,
}

impl HttpServer {
    /// Starts `threads` serving threads (at least one) for `listener`'s connections.
    pub fn start(listener: TcpListener, state: AppState, threads: usize) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let threads = (0..threads.max(1))
            .map(|n| HttpThread::start(n, state.clone(), local_addr, stopped.clone()))
            .collect::<io::Result<_>>()?;
        Ok(HttpServer {
            listener,
            threads,
            stop,
        })
    }

    /// Each serving thread's runtime, to tell how busy they are.
    pub fn runtime_metrics(&self) -> Vec<RuntimeMetrics> {
        self.threads.iter().map(|t| t.metrics.clone()).collect()
    }

    /// Accepts connections until `shutdown` resolves; then stops accepting, lets every
    /// thread finish its in-flight requests, and returns once they all have.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let HttpServer {
            listener,
            threads,
            stop,
        } = self;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => hand_over(&threads, stream, peer),
                    Err(error) => pause_after_accept_error(error).await,
                },
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let mut result = Ok(());
        for thread in threads {
            drop(thread.connections);
            let joined = tokio::task::spawn_blocking(move || thread.done.join())
                .await
                .map_err(io::Error::other)?;
            let served =
                joined.unwrap_or_else(|_| Err(io::Error::other("an HTTP thread panicked")));
            result = result.and(served);
        }
        result
    }
}

impl HttpThread {
    fn start(
        n: usize,
        state: AppState,
        local_addr: SocketAddr,
        mut stopped: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let (connections, incoming) = mpsc::unbounded_channel();
        let open = state.metrics.http_connections(n as u32);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let metrics = runtime.metrics();
        let listener = Handed {
            incoming,
            open: open.clone(),
            local_addr,
        };
        let done = std::thread::Builder::new()
            .name(format!("spoor-http-{n}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // This thread's appends are answered here a group at a time, by one
                    // wake-up from the log writer instead of one per request.
                    spoor_log::relay::install();
                    // The peer's address reaches the handlers: rate limits are per client.
                    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
                    // axum gives a listener's peer address to handlers only through
                    // `tap_io`: the tap itself does nothing.
                    axum::serve(listener.tap_io(|_| {}), service)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await
                })
            })?;
        Ok(HttpThread {
            connections,
            open,
            metrics,
            done,
        })
    }
}

/// Gives a new connection to the thread with the fewest open connections, or, should
/// that thread have stopped, to the next: a stopped thread has the fewest, and would
/// otherwise be given every new connection.
fn hand_over(threads: &[HttpThread], stream: TcpStream, peer: SocketAddr) {
    // Registered with the serving thread's runtime there, not with this one's.
    let mut connection = match stream.into_std() {
        Ok(stream) => (stream, peer),
        Err(error) => {
            tracing::debug!(%error, "a new connection could not be handed over");
            return;
        }
    };
    for n in least_loaded_first(threads.iter().map(|t| t.open.get())) {
        let thread = &threads[n];
        thread.open.inc();
        match thread.connections.send(connection) {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                thread.open.dec();
                connection = back;
            }
        }
    }
    tracing::error!("no HTTP thread is serving; a new connection is dropped");
}

/// Indices ordered by count, smallest first (the first of equals first).
fn least_loaded_first(counts: impl Iterator<Item = i64>) -> Vec<usize> {
    let mut order: Vec<(i64, usize)> = counts.enumerate().map(|(n, c)| (c, n)).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, n)| n).collect()
}

/// Errors that concern one connection (it was reset before it was accepted) are
/// ignored; others (out of file descriptors) are logged and accepting pauses a moment,
/// as it would only fail again at once.
async fn pause_after_accept_error(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The connections the acceptor hands one serving thread, as axum's listener.
struct Handed {
    incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    open: Gauge,
    local_addr: SocketAddr,
}

impl Listener for Handed {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.incoming.recv().await else {
                // The acceptor is gone: shutdown has begun and ends this thread's serving.
                return std::future::pending().await;
            };
            let counted = TcpStream::from_std(stream).map(|stream| Counted {
                stream,
                open: self.open.clone(),
            });
            match counted {
                Ok(counted) => return (counted, peer),
                Err(error) => {
                    self.open.dec();
                    tracing::debug!(%error, "a handed-over connection could not be served");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// A connection that counts itself out of its thread's open connections when it closes.
struct Counted {
    stream: TcpStream,
    open: Gauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread as the acceptor sees it, whose connections arrive on the receiver returned.
    fn thread_seen_by_the_acceptor() -> (
        HttpThread,
        mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    ) {
        let (connections, incoming) = mpsc::unbounded_channel();
        let thread = HttpThread {
            connections,
            open: Gauge::default(),
            metrics: tokio::runtime::Handle::current().metrics(),
            done: std::thread::spawn(|| Ok(())),
        };
        (thread, incoming)
    }

    #[tokio::test]
    async fn a_stopped_thread_is_passed_over_for_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stopped, gone) = thread_seen_by_the_acceptor();
        let (serving, mut incoming) = thread_seen_by_the_acceptor();
        drop(gone);
        serving.open.set(5);
        let threads = [stopped, serving];
        for _ in 0..2 {
            let _client = TcpStream::connect(address).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            hand_over(&threads, stream, peer);
            assert!(incoming.try_recv().is_ok(), "handed to the serving thread");
        }
        assert_eq!(threads[0].open.get(), 0);
        assert_eq!(threads[1].open.get(), 7);
    }

    #[test]
    fn a_new_connection_goes_to_the_thread_with_the_fewest() {
        assert_eq!(least_loaded_first([3, 1, 2].into_iter()), [1, 2, 0]);
        assert_eq!(least_loaded_first([2, 2].into_iter()), [0, 1]);
        assert!(least_loaded_first(std::iter::empty()).is_empty());
    }
}
