//! The accept loop and each connection's life (the `[connections]` settings): plain
//! TCP or TLS ([`super::tls`]), HTTP/1.1 or HTTP/2 (by ALPN over TLS, by the client's
//! preface over plain TCP), served by hyper with the axum router.
//!
//! What bounds a connection:
//! - at most `max_connections` are served at once; the accept loop stops accepting
//!   while that many are open, so further clients wait in the kernel's listen backlog
//!   (and are refused by the kernel when it is full) until one closes;
//! - from accept, the TLS handshake and the first request head must complete within
//!   `header_read_timeout`; a later request head must complete within
//!   `header_read_timeout` of its first byte (so a slowloris client is closed);
//! - with no request in progress, `idle_timeout` of silence closes the connection (an
//!   idle keep-alive connection), and so does a response write blocked that long (a
//!   client that does not read);
//! - while a request is in progress its handler is bounded by `request_timeout` (the
//!   router's timeout layer, which answers 408).
//!
//! A connection that exceeds a timeout is closed without an answer: its request (if
//! any) is incomplete, so there is nothing to answer and no API family to answer in.
//! `accept` errors other than per-connection ones (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) pause the loop with a growing back-off (50 ms up to 1 s), so the server
//! neither spins nor stops; they are logged at most once per back-off.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::tls::TlsReloader;
use crate::config::ConnectionSettings;

/// The client certificate a caller presented in the TLS handshake (verified against
/// `tls.client_ca`), in each request's extensions; absent without mTLS.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<CertificateDer<'static>>);

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections
/// finish (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionSettings,
    tls: Option<Arc<TlsReloader>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(http_builder(&limits));
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and friends: wait for connections to close instead of spinning.
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                crate::telemetry::metrics::accept_paused();
                tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            tls: tls.clone(),
            remote,
        };
        let watcher = graceful.watcher();
        crate::telemetry::metrics::connection_opened();
        tracing::trace!(%remote, "connection accepted");
        tokio::spawn(async move {
            connection.serve(tcp, watcher).await;
            tracing::trace!(%remote, "connection closed");
            crate::telemetry::metrics::connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open at shutdown; closing them");
        }
    }
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn http_builder(limits: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Request heads are bounded by our own layer (`max_header_bytes`, answered 431 in
    // the API family's format); hyper's own limits sit above it, for heads too large to
    // parse at all.
    let hard_head_limit = (limits.max_header_bytes + limits.max_uri_bytes) * 4;
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our connection deadlines replace hyper's (which would close idle keep-alive
        // connections after the header timeout).
        .header_read_timeout(None)
        .max_buf_size(hard_head_limit.max(64 * 1024))
        .max_headers(super::layers::MAX_HEADER_COUNT * 4);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(hard_head_limit as u32)
        .max_concurrent_streams(256);
    builder
}

/// One accepted connection, before its handshake.
struct Connection {
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<ConnectionSettings>,
    tls: Option<Arc<TlsReloader>>,
    remote: SocketAddr,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let clock = Arc::new(Mutex::new(ConnectionClock::new(Instant::now())));
        match &self.tls {
            None => self.serve_http(tcp, clock, None, watcher).await,
            Some(tls) => {
                let handshake = tls.acceptor().accept(tcp);
                let stream = match tokio::time::timeout(self.limits.header_read_timeout, handshake)
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(remote = %self.remote, "TLS handshake timed out");
                        return;
                    }
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| ClientCertificate(Arc::new(leaf.clone().into_owned())));
                self.serve_http(stream, clock, certificate, watcher).await
            }
        }
    }

    async fn serve_http<I>(
        self,
        io: I,
        clock: Arc<Mutex<ConnectionClock>>,
        certificate: Option<ClientCertificate>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = DeadlineIo {
            inner: io,
            clock: clock.clone(),
            limits: self.limits.clone(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            write_blocked_since: None,
        };
        let remote = self.remote;
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            let in_flight = InFlight::start(clock.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(in_flight);
                response
            }
        });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(%remote, error = %e, "connection closed with an error");
        }
    }
}

/// When a connection's next read must happen by: the state shared by its IO (which
/// enforces it) and its service (which says when requests start and end).
#[derive(Debug)]
struct ConnectionClock {
    in_flight: usize,
    /// When the connection became idle (accepted, or its last response was produced).
    idle_since: Instant,
    /// Whether any byte has arrived since then (the start of a request head).
    head_started_at: Option<Instant>,
    /// A fresh connection must send its first head within the header timeout, not the
    /// (longer) idle timeout.
    fresh: bool,
    /// The task of a read left pending without a deadline (hyper reads ahead while a
    /// request is handled, and polls again only when woken).
    reader: Option<std::task::Waker>,
}

impl ConnectionClock {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            idle_since: now,
            head_started_at: None,
            fresh: true,
            reader: None,
        }
    }

    /// The deadline for the next read, `None` while a request is being handled.
    fn read_deadline(&self, limits: &ConnectionSettings) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_started_at {
            Some(started) => started + limits.header_read_timeout,
            None if self.fresh => self.idle_since + limits.header_read_timeout,
            None => self.idle_since + limits.idle_timeout,
        })
    }
}

/// A request being handled on a connection (dropped when its response is produced).
struct InFlight(Arc<Mutex<ConnectionClock>>);

impl InFlight {
    fn start(clock: Arc<Mutex<ConnectionClock>>) -> Self {
        {
            let mut state = lock(&clock);
            state.in_flight += 1;
            state.head_started_at = None;
            state.fresh = false;
        }
        Self(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_started_at = None;
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

fn lock(clock: &Mutex<ConnectionClock>) -> std::sync::MutexGuard<'_, ConnectionClock> {
    clock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The connection's stream with its deadlines: a read past the read deadline, or a
/// write blocked for `idle_timeout`, fails with `TimedOut` and hyper closes the
/// connection.
struct DeadlineIo<I> {
    inner: I,
    clock: Arc<Mutex<ConnectionClock>>,
    limits: Arc<ConnectionSettings>,
    sleep: Pin<Box<Sleep>>,
    write_blocked_since: Option<Instant>,
}

impl<I> DeadlineIo<I> {
    /// `Ready(Err)` when `deadline` has passed; otherwise arms the timer to wake the
    /// task at `deadline`.
    fn check(&mut self, deadline: Instant, cx: &mut Context<'_>, what: &str) -> Poll<io::Error> {
        if Instant::now() >= deadline {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what.to_string()));
        }
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what.to_string()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for DeadlineIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut state = lock(&this.clock);
                    if state.in_flight == 0 && state.head_started_at.is_none() {
                        state.head_started_at = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = {
                    let mut state = lock(&this.clock);
                    let deadline = state.read_deadline(&this.limits);
                    if deadline.is_none() {
                        // Woken when the request ends, to arm the idle deadline.
                        state.reader = Some(cx.waker().clone());
                    }
                    deadline
                };
                match deadline {
                    None => Poll::Pending,
                    Some(deadline) => {
                        match this.check(deadline, cx, "request head or idle timeout") {
                            Poll::Ready(e) => Poll::Ready(Err(e)),
                            Poll::Pending => Poll::Pending,
                        }
                    }
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> DeadlineIo<I> {
    fn on_write<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.write_blocked_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let since = *self.write_blocked_since.get_or_insert_with(Instant::now);
                let deadline = since + self.limits.idle_timeout;
                match self.check(deadline, cx, "write blocked") {
                    Poll::Ready(e) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
