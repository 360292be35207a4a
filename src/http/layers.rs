//! The outermost router layer, [`edge`]: what the HTTP layers answer themselves, in
//! the API family's format (SPEC §6, §7), and keep-alive that never loses an answer.
//!
//! - A request target over `connections.max_uri_bytes` gets 414, request headers over
//!   `connections.max_header_bytes` (or more than [`MAX_HEADER_COUNT`] of them) get
//!   431, before any handler runs.
//! - The answers of the inner tower layers and of axum itself (405 of a known path,
//!   408 of the timeout layer, 413 of the body limit, 500 of the panic guard) carry no
//!   JSON body; they are rendered again in the family's format
//!   ([`ApiFamily::layer_error`]), keeping their headers (`Allow`, ...).
//! - Every request is served with its caller's address known to the secret verifier
//!   (`crate::secrets::with_caller_address`), for the per-address failure limits.
//! - A request whose body was not read to its end by the time its answer is ready gets
//!   `Connection: close` on HTTP/1.x: hyper would otherwise close the connection after
//!   the answer (it drains only what has already arrived), silently losing a request the
//!   client sent next on it. Unknown paths ([`no_route`]) read and discard the body
//!   first, so their connection stays usable.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::error::ApiFamily;
use super::RemoteAddr;
use crate::config::ConnectionSettings;

/// More request headers than this get 431 (hyper's own limit is set well above it).
pub const MAX_HEADER_COUNT: usize = 100;

/// The bytes a header line takes: name, `": "`, value, CRLF.
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// What the edge layer is configured with.
#[derive(Clone)]
pub struct EdgeSettings {
    pub limits: Arc<ConnectionSettings>,
    /// `elasticsearch_api.product_header`: the Elasticsearch family's answers are
    /// marked as Elasticsearch's ([`super::es_api::as_elasticsearch`]), the edge's own
    /// included.
    pub es_product_header: bool,
}

/// See the module documentation; within [`super::es_api::as_elasticsearch`].
pub async fn edge(State(settings): State<EdgeSettings>, request: Request, next: Next) -> Response {
    let limits = settings.limits;
    super::es_api::as_elasticsearch(settings.es_product_header, request, |request| {
        limited(limits, request, next)
    })
    .await
}

/// The edge's own work (module documentation).
async fn limited(limits: Arc<ConnectionSettings>, request: Request, next: Next) -> Response {
    let family = ApiFamily::of(request.uri().path());
    let method = request.method().clone();
    // A clone of the `Uri` shares its bytes (a reference count, no copy of the path).
    let uri = request.uri().clone();
    let path = uri.path();
    let version = request.version();
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let refused = if target_len > limits.max_uri_bytes {
        Some(StatusCode::URI_TOO_LONG)
    } else if header_bytes(&request) > limits.max_header_bytes
        || request.headers().len() > MAX_HEADER_COUNT
    {
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    } else {
        None
    };
    let (request, body_read) = track_body(request);
    let mut response = match refused {
        Some(status) => family.layer_error(status, method.as_str(), path),
        None => {
            // The caller's address, known to the secret verifier for the whole request
            // (the per-address failure limits, see `crate::secrets::caller`).
            let RemoteAddr(caller) = RemoteAddr::of(request.extensions());
            let response = crate::secrets::with_caller_address(caller, next.run(request)).await;
            if decided_by_the_layers(&response) {
                let (parts, _) = response.into_parts();
                let mut rendered = family.layer_error(parts.status, method.as_str(), path);
                for (name, value) in &parts.headers {
                    if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                        rendered.headers_mut().insert(name.clone(), value.clone());
                    }
                }
                rendered
            } else {
                response
            }
        }
    };
    if !body_read.done() && version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An error answer without a JSON body: made by axum or a tower layer, not a handler
/// (every handler's error is JSON in its family's format).
fn decided_by_the_layers(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.as_bytes().starts_with(b"text/plain"),
    }
}

/// Wraps the body so that [`edge`] can tell whether it was read to its end. A body
/// that is already at its end (a request without one) has nothing left to read and is
/// passed on as it is.
fn track_body(request: Request) -> (Request, BodyRead) {
    if request.body().is_end_stream() {
        return (request, BodyRead::Empty);
    }
    let (parts, body) = request.into_parts();
    let read = Arc::new(AtomicBool::new(false));
    let body = Body::new(TrackedBody {
        inner: body,
        read: read.clone(),
    });
    (Request::from_parts(parts, body), BodyRead::Tracked(read))
}

/// Whether a request's body has been read to its end, as [`track_body`] follows it.
enum BodyRead {
    /// There was no body to read.
    Empty,
    /// Set by [`TrackedBody`] when the body reaches its end.
    Tracked(Arc<AtomicBool>),
}

impl BodyRead {
    fn done(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Tracked(read) => read.load(Ordering::Acquire),
        }
    }
}

struct TrackedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.read.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.read.store(true, Ordering::Release)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The fallback of every path no route serves: reads and discards the body (bounded by
/// the body limit and the request timeout), then answers 404 in the family's format.
pub async fn no_route(method: Method, uri: Uri, body: Body) -> Response {
    let _ = axum::body::to_bytes(body, usize::MAX).await;
    ApiFamily::of(uri.path()).layer_error(StatusCode::NOT_FOUND, method.as_str(), uri.path())
}
