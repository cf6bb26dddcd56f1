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

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::RuntimeMetrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::app::AppState;
use crate::body::TimedBody;
use crate::metrics::Metrics;
use crate::router::router;

/// What one client connection may hold of the server, and how long shutdown waits.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// How long a request's head (request line and headers) may take to arrive: from
    /// its first byte, or from the connection's opening for its first request.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, from its head's end; a late one is
    /// answered 408.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and how long an
    /// answer may wait for a client that reads none of it.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it, new ones wait in the listen queue.
    pub max_connections: usize,
    /// The largest request head (request line and headers) in bytes; a larger one is
    /// answered 431.
    pub max_header_bytes: usize,
    /// How long shutdown lets requests in flight finish before their connections close.
    pub shutdown_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8192,
            max_header_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(15),
        }
    }
}

/// A connection on its way from the acceptor to its serving thread.
struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// The HTTP server, started on its threads and not yet accepting.
pub struct HttpServer {
    listener: TcpListener,
    threads: Vec<HttpThread>,
    stop: watch::Sender<bool>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
}

/// One serving thread, seen from the acceptor.
struct HttpThread {
    connections: mpsc::UnboundedSender<Handed>,
    /// Its open connections, also shown in `/metrics`.
    open: Gauge,
    metrics: RuntimeMetrics,
    done: std::thread::JoinHandle<io::Result<()>>,
}

impl HttpServer {
    /// Starts `threads` serving threads (at least one) for `listener`'s connections.
    pub fn start(
        listener: TcpListener,
        state: AppState,
        threads: usize,
        limits: HttpLimits,
    ) -> io::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let metrics = state.metrics.clone();
        let threads = (0..threads.max(1))
            .map(|n| HttpThread::start(n, state.clone(), limits, stopped.clone()))
            .collect::<io::Result<_>>()?;
        Ok(HttpServer {
            listener,
            threads,
            stop,
            limits,
            metrics,
        })
    }

    /// Each serving thread's runtime, to tell how busy they are.
    pub fn runtime_metrics(&self) -> Vec<RuntimeMetrics> {
        self.threads.iter().map(|t| t.metrics.clone()).collect()
    }

    /// Accepts connections until `shutdown` resolves; then stops accepting, lets every
    /// thread finish its in-flight requests (for at most the limits' shutdown timeout),
    /// and returns once they all have.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let HttpServer {
            listener,
            threads,
            stop,
            limits,
            metrics,
        } = self;
        let slots = Arc::new(Semaphore::new(
            limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut cap_warned: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    warn_of_cap(&metrics, &mut cap_warned, limits.max_connections);
                    tokio::select! {
                        () = &mut shutdown => break,
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                    }
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => hand_over(&threads, stream, peer, slot),
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

/// Counts the cap's being reached, and says so in the log at most once a minute.
fn warn_of_cap(metrics: &Metrics, warned: &mut Option<Instant>, cap: usize) {
    metrics.connection_cap_reached();
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        tracing::warn!(
            max_connections = cap,
            "open connections reached --http-max-connections: new ones wait until others close"
        );
    }
}

impl HttpThread {
    fn start(
        n: usize,
        state: AppState,
        limits: HttpLimits,
        stopped: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let (connections, incoming) = mpsc::unbounded_channel();
        let open = state.metrics.http_connections(n as u32);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let metrics = runtime.metrics();
        let open_here = open.clone();
        let done = std::thread::Builder::new()
            .name(format!("spoor-http-{n}"))
            .spawn(move || {
                runtime.block_on(serve_handed(incoming, state, open_here, limits, stopped));
                // Past shutdown's deadline, connections still open close here, and
                // blocking work a handler started is not waited for.
                runtime.shutdown_background();
                Ok(())
            })?;
        Ok(HttpThread {
            connections,
            open,
            metrics,
            done,
        })
    }
}

/// Serves the connections handed to this thread until shutdown, then lets them finish
/// for at most the shutdown timeout.
async fn serve_handed(
    mut incoming: mpsc::UnboundedReceiver<Handed>,
    state: AppState,
    open: Gauge,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) {
    // The log may answer this thread's appends a group at a time, by one wake-up of this
    // runtime instead of one per request.
    state.log.attach_appending_thread();
    let metrics = state.metrics.clone();
    let app = router(state);
    let mut http = http1::Builder::new();
    // The watchdog of each connection keeps its time limits (hyper's header timeout
    // would also cut kept-alive connections that wait for their next request).
    http.header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
    let mut serving = JoinSet::new();
    let each_connection_stopped = stopped.clone();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            handed = incoming.recv() => match handed {
                Some(handed) => {
                    let connection = Connection {
                        app: app.clone(),
                        open: open.clone(),
                        limits,
                        metrics: metrics.clone(),
                    };
                    let stopped = each_connection_stopped.clone();
                    serving.spawn(connection.serve(handed, http.clone(), stopped));
                }
                None => break,
            },
            Some(_) = serving.join_next(), if !serving.is_empty() => {}
        }
    }
    drop(incoming);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while serving.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let cut = serving.len();
        for _ in 0..cut {
            metrics.connection_cut("shutdown_deadline");
        }
        tracing::warn!(
            connections = cut,
            timeout_secs = limits.shutdown_timeout.as_secs_f64(),
            "shutdown's deadline passed: closing connections whose requests did not finish"
        );
        serving.abort_all();
    }
}

/// What serving one connection needs.
struct Connection {
    app: Router,
    /// This thread's open connections.
    open: Gauge,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
}

impl Connection {
    /// Serves one connection until the client closes it, a limit cuts it, or shutdown
    /// lets its last request finish.
    async fn serve(self, handed: Handed, http: http1::Builder, stopped: watch::Receiver<bool>) {
        let Handed { stream, peer, slot } = handed;
        let _open = OpenConnection {
            open: self.open,
            _slot: slot,
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "a handed-over connection could not be served");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let app = self.app;
            let body_timeout = self.limits.body_timeout;
            hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
                let mut request = request.map(|body| TimedBody::new(body, body_timeout));
                // The peer's address reaches the handlers: rate limits are per client.
                request.extensions_mut().insert(ConnectInfo(peer));
                activity.request_started();
                let answered = AnswerSent(activity.clone());
                let call = app.clone().call(request);
                async move {
                    let response = call.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _answered: answered,
                    }))
                }
            })
        };
        let connection = http.serve_connection(io, service);
        if let Some(reason) = watch_over(connection, &activity, &self.limits, stopped).await {
            self.metrics.connection_cut(reason);
            tracing::debug!(reason, "closed a client connection on a limit");
        }
    }
}

/// Drives `connection` to its end, unless a time limit passes first (then returns the
/// limit's name and drops it); once `stopped`, it takes no new request.
async fn watch_over<S>(
    connection: http1::Connection<TokioIo<Watched>, S>,
    activity: &Activity,
    limits: &HttpLimits,
    mut stopped: watch::Receiver<bool>,
) -> Option<&'static str>
where
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: HttpBody + 'static,
    <S::ResBody as HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    let stop = stopped.wait_for(|stop| *stop);
    tokio::pin!(stop);
    let mut stopping = false;
    let timer = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(timer);
    let mut armed = None;
    // Every change of the connection's activity happens while it is polled here, so the
    // deadline is computed afresh after each poll.
    poll_fn(|cx| {
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            stopping = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            if let Err(error) = result {
                tracing::debug!(%error, "a client connection ended with an error");
            }
            return Poll::Ready(None);
        }
        let Some((at, limit)) = activity.deadline(limits) else {
            return Poll::Pending;
        };
        if armed != Some(at) {
            timer.as_mut().reset(activity.instant(at).into());
            armed = Some(at);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(limit)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// An unset time in [`Activity`].
const UNSET: u64 = u64::MAX;

/// What one connection is doing, as its time limits need it: times in milliseconds
/// since it opened. Only its own task touches it; atomics make it `Sync` for free.
struct Activity {
    opened: Instant,
    /// Requests whose answer is not yet sent.
    in_flight: AtomicU32,
    /// Requests begun on this connection.
    requests: AtomicU32,
    /// When the last answer was sent (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of the next request's head arrived.
    head_since: AtomicU64,
    /// Since when a write has waited for the client to read.
    send_waiting_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(UNSET),
            send_waiting_since: AtomicU64::new(UNSET),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn instant(&self, at: u64) -> Instant {
        self.opened + Duration::from_millis(at)
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.head_since.store(UNSET, Relaxed);
    }

    fn answer_sent(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(self.now(), Relaxed);
        }
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == UNSET {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    fn write_waits(&self, waits: bool) {
        let since = self.send_waiting_since.load(Relaxed);
        if waits && since == UNSET {
            self.send_waiting_since.store(self.now(), Relaxed);
        } else if !waits && since != UNSET {
            self.send_waiting_since.store(UNSET, Relaxed);
        }
    }

    /// When the connection is to be cut, and under which limit; `None` while a request
    /// is being answered (its body's timeout is the handler's).
    fn deadline(&self, limits: &HttpLimits) -> Option<(u64, &'static str)> {
        let millis = |d: Duration| d.as_millis() as u64;
        let send_waiting = self.send_waiting_since.load(Relaxed);
        if send_waiting != UNSET {
            return Some((send_waiting + millis(limits.idle_timeout), "send_timeout"));
        }
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Relaxed);
        if head != UNSET {
            return Some((head + millis(limits.header_timeout), "header_timeout"));
        }
        let idle = self.idle_since.load(Relaxed);
        Some(if self.requests.load(Relaxed) == 0 {
            (idle + millis(limits.header_timeout), "header_timeout")
        } else {
            (idle + millis(limits.idle_timeout), "idle_timeout")
        })
    }
}

/// Marks its request answered when dropped: once the answer's body is sent, or when
/// the request is abandoned.
struct AnswerSent(Arc<Activity>);

impl Drop for AnswerSent {
    fn drop(&mut self) {
        self.0.answer_sent();
    }
}

/// An answer's body, which marks the request answered once hyper is done with it.
struct Tracked {
    body: Body,
    _answered: AnswerSent,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Gives a new connection to the thread with the fewest open connections, or, should
/// that thread have stopped, to the next: a stopped thread has the fewest, and would
/// otherwise be given every new connection.
fn hand_over(
    threads: &[HttpThread],
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    // Registered with the serving thread's runtime there, not with this one's.
    let mut handed = match stream.into_std() {
        Ok(stream) => Handed { stream, peer, slot },
        Err(error) => {
            tracing::debug!(%error, "a new connection could not be handed over");
            return;
        }
    };
    for n in least_loaded_first(threads.iter().map(|t| t.open.get())) {
        let thread = &threads[n];
        thread.open.inc();
        match thread.connections.send(handed) {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                thread.open.dec();
                handed = back;
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

/// A connection's place among the open ones: counted in its thread's gauge (by the
/// acceptor) and holding one of the `--http-max-connections` slots, both given back
/// when it closes.
struct OpenConnection {
    open: Gauge,
    _slot: OwnedSemaphorePermit,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A client's connection, telling its [`Activity`] when bytes arrive and when a write
/// waits for the client to read.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn written<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.activity.write_waits(poll.is_pending());
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.written(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread as the acceptor sees it, whose connections arrive on the receiver returned.
    fn thread_seen_by_the_acceptor() -> (HttpThread, mpsc::UnboundedReceiver<Handed>) {
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
        let slots = Arc::new(Semaphore::new(2));
        for _ in 0..2 {
            let _client = TcpStream::connect(address).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            let slot = slots.clone().try_acquire_owned().unwrap();
            hand_over(&threads, stream, peer, slot);
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
