//! HTTP frontends (axum), one module per API family, and the shared router with its
//! tower layers (the edge: head limits, family-format layer errors and keep-alive
//! safety; body size limit, timeout, panic guard, tracing). Handlers parse requests,
//! call the grant layer and render; they never touch a store backend. The server
//! around the router (accept loop, connection limits, TLS) is [`server`] and [`tls`].

pub mod dpop;
pub mod error;
pub mod es_api;
pub mod fleet;
pub mod fleet_admin;
pub mod fleet_enroll;
pub mod fleet_tokens;
pub mod layers;
pub mod oauth;
pub mod ops;
pub mod server;
pub mod tls;
mod token_json;
pub mod vault;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::{self, RequestBodyLimitLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::authentication::Authenticator;
use crate::config::Settings;
use crate::enrollment::EnrollmentService;
use crate::es_api::SecurityApi;
use crate::grant::GrantService;
use crate::tokens::TokenService;
use crate::vault::JwtAuth;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub grants: Arc<GrantService>,
    /// The token service: the clock, signing keys (JWKS), store readiness, bulk
    /// revocation.
    pub tokens: Arc<TokenService>,
    /// The authentication chain of every protected resource.
    pub authenticator: Arc<Authenticator>,
    /// The Vault-compatible JWT auth method's config and roles.
    pub vault: Arc<JwtAuth>,
    pub security: Arc<SecurityApi>,
    pub enrollment: Arc<EnrollmentService>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
}

/// The caller's address (the TCP peer; `X-Forwarded-For` is not trusted), when the
/// server was started with connection info (`startup` does).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub Option<IpAddr>);

impl RemoteAddr {
    /// The caller's address from a request's extensions.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        Self(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip().to_canonical()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// A request's head, and its body read whole (under the request's extensions, so
/// that the body size limit applies). Extractors that check the caller read the body
/// this way first, as every handler with a body does, so that a slow body meets the
/// edge's read timeout before anything else.
pub(crate) async fn read_body_first(
    request: axum::extract::Request,
) -> (Parts, Result<Bytes, BytesRejection>) {
    let (parts, body) = request.into_parts();
    let mut body_request = axum::extract::Request::new(body);
    *body_request.extensions_mut() = parts.extensions.clone();
    (parts, Bytes::from_request(body_request, &()).await)
}

/// Marks a response as carrying tokens: never to be cached (RFC 6749 §5.1).
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 404 in the Fleet format, for a path that exists only under some settings.
pub(crate) async fn not_found() -> axum::response::Response {
    error::ApiFamily::Other.layer_error(StatusCode::NOT_FOUND, "GET", "/")
}

pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let routes = Router::new()
        .route("/api/fleet/authenticate", post(fleet::authenticate))
        .route("/api/fleet/whoami", get(fleet::whoami))
        .route("/api/fleet/agents/enroll", post(fleet_enroll::enroll))
        .route(
            "/api/fleet/enrollment_api_keys",
            post(fleet_enroll::create_token).get(fleet_enroll::list_tokens),
        )
        .route(
            "/api/fleet/enrollment_api_keys/{id}",
            get(fleet_enroll::get_token).delete(fleet_enroll::revoke_token),
        )
        .route("/api/fleet/tokens/revoke", post(fleet_tokens::revoke))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/revoke", post(oauth::revoke))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/_security/_authenticate", get(es_api::authenticate))
        .route(
            "/_security/oauth2/token",
            post(es_api::create_token).delete(es_api::invalidate_token),
        )
        .route(
            "/_security/api_key",
            post(es_api::create_api_key)
                .put(es_api::create_api_key)
                .get(es_api::get_api_keys)
                .delete(es_api::invalidate_api_keys),
        )
        .route(
            "/_security/service/{namespace}/{service}/credential/token/{name}",
            post(es_api::create_service_token)
                .put(es_api::create_service_token)
                .delete(es_api::delete_service_token),
        )
        .route(
            "/_security/service/{namespace}/{service}/credential/token",
            post(es_api::create_service_token_named_by_server),
        )
        .route(
            "/_security/service/{namespace}/{service}/credential",
            get(es_api::service_credentials),
        )
        .route("/_security/user", get(es_api::get_all_users))
        .route(
            "/_security/user/_password",
            post(es_api::change_own_password).put(es_api::change_own_password),
        )
        .route(
            "/_security/user/{username}",
            put(es_api::put_user)
                .post(es_api::put_user)
                .get(es_api::get_user)
                .delete(es_api::delete_user),
        )
        .route(
            "/_security/user/{username}/_password",
            post(es_api::change_password).put(es_api::change_password),
        )
        .route("/_security/role", get(es_api::get_all_roles))
        .route(
            "/_security/role/{name}",
            put(es_api::put_role)
                .post(es_api::put_role)
                .get(es_api::get_role)
                .delete(es_api::delete_role),
        )
        .route("/_security/{*rest}", any(es_api::no_handler))
        .route("/", get(es_api::info))
        .route("/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(vault::routes())
        .fallback(layers::no_route)
        .with_state(state);
    // The tower layers wrap the whole router once, as one stack of concrete types,
    // rather than through `Router::layer`, which wraps every route in each layer and
    // boxes each layer's service (cloned per request) and future. The order is the
    // same (outermost first): trace; the edge, inside which the Elasticsearch family's
    // answers are marked (so that the edge's own answers, 414 and 431, are marked too);
    // the panic guard; the timeout; the body limit.
    let layered = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            layers::EdgeSettings {
                limits: Arc::new(settings.connections.clone()),
                es_product_header: settings.es_product_header,
            },
            layers::edge,
        ))
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        // The timeout's own answer needs a body type with a default (axum's).
        .map_response(|response: Response<limit::ResponseBody<Body>>| response.into_response())
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .service(routes);
    Router::new().fallback_service(layered)
}
