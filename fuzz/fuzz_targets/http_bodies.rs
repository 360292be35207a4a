//! The request bodies of every API family, through the real router (in process, no
//! socket): the Fleet JSON body, the OAuth2 form body (token, introspection,
//! revocation), the Elasticsearch-compatible security JSON bodies (token API, API keys
//! with role descriptors, roles, users, passwords) and the Vault-compatible JSON bodies
//! (config, roles, login). The server runs on a real SQLite store in a temporary
//! directory (on /dev/shm when there is one); the admin endpoints are called with the
//! `elastic` superuser's Basic credential (ES) or the Vault admin token, so the bodies
//! are parsed, not refused at the door.
//!
//! The first input byte chooses the endpoint, the rest is the body. SPEC §6 and §7 are
//! the properties: no answer is a 5xx, and every error is JSON in its family's format.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetauth::clock::SystemClock;
use fleetauth::config::{Secret, Settings};
use fleetauth::http::router;
use fleetauth::startup::Services;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

const PASSWORD: &str = "fuzz-elastic-password";
const VAULT_ADMIN: &str = "fuzz-vault-admin-token-0123456789";

#[derive(Clone, Copy)]
enum Family {
    Fleet,
    OAuth,
    Elasticsearch,
    Vault,
}

struct Endpoint {
    method: Method,
    path: &'static str,
    family: Family,
}

const fn at(method: Method, path: &'static str, family: Family) -> Endpoint {
    Endpoint {
        method,
        path,
        family,
    }
}

static ENDPOINTS: [Endpoint; 14] = [
    at(Method::POST, "/api/fleet/authenticate", Family::Fleet),
    at(Method::POST, "/oauth/token", Family::OAuth),
    at(Method::POST, "/oauth/introspect", Family::OAuth),
    at(Method::POST, "/oauth/revoke", Family::OAuth),
    at(
        Method::POST,
        "/_security/oauth2/token",
        Family::Elasticsearch,
    ),
    at(
        Method::DELETE,
        "/_security/oauth2/token",
        Family::Elasticsearch,
    ),
    at(Method::POST, "/_security/api_key", Family::Elasticsearch),
    at(Method::DELETE, "/_security/api_key", Family::Elasticsearch),
    at(
        Method::PUT,
        "/_security/role/fuzz-role",
        Family::Elasticsearch,
    ),
    at(
        Method::PUT,
        "/_security/user/fuzz-user",
        Family::Elasticsearch,
    ),
    at(
        Method::POST,
        "/_security/user/fuzz-user/_password",
        Family::Elasticsearch,
    ),
    at(Method::POST, "/v1/auth/jwt/config", Family::Vault),
    at(Method::POST, "/v1/auth/jwt/role/fuzz", Family::Vault),
    at(Method::POST, "/v1/auth/jwt/login", Family::Vault),
];

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = match std::fs::metadata("/dev/shm") {
        Ok(m) if m.is_dir() => tempfile::tempdir_in("/dev/shm"),
        _ => tempfile::tempdir(),
    }
    .expect("temp dir");
    let mut settings = Settings::for_data_dir(dir.path());
    settings.bootstrap_password = Some(Secret::new(PASSWORD));
    settings.vault.admin_token = Some(Secret::new(VAULT_ADMIN));
    // Discovery URLs the fuzzer writes must not stall it.
    settings.vault.http_timeout = Duration::from_millis(200);
    let services = runtime
        .block_on(Services::start(&settings, Arc::new(SystemClock)))
        .expect("services start");
    let state = services.app_state(&settings);
    Server {
        runtime,
        router: router(state),
        _dir: dir,
    }
});

fn request(endpoint: &Endpoint, body: &[u8]) -> Request<Body> {
    let mut builder = Request::builder()
        .method(endpoint.method.clone())
        .uri(endpoint.path)
        .header(header::HOST, "127.0.0.1");
    builder = match endpoint.family {
        Family::Fleet => builder.header(header::CONTENT_TYPE, "application/json"),
        Family::OAuth => builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        Family::Elasticsearch => builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("elastic:{PASSWORD}"))),
            ),
        Family::Vault => builder
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-vault-token", VAULT_ADMIN),
    };
    builder.body(Body::from(body.to_vec())).expect("request")
}

/// The family's error format (SPEC §4).
fn check_error(family: Family, status: StatusCode, body: &Value) {
    let ok = match family {
        Family::Fleet => {
            body["statusCode"] == status.as_u16()
                && body["error"].is_string()
                && body["message"].is_string()
        }
        Family::OAuth => body["error"].is_string(),
        Family::Elasticsearch => {
            body["status"] == status.as_u16()
                && body["error"]["type"].is_string()
                && body["error"]["reason"].is_string()
        }
        Family::Vault => body["errors"].is_array(),
    };
    // The token API's DELETE answers 404 with its counts when nothing matched.
    let counts_404 = status == StatusCode::NOT_FOUND && body["invalidated_tokens"].is_number();
    assert!(
        ok || counts_404,
        "{status}: not in the family's format: {body}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let endpoint = &ENDPOINTS[usize::from(choice) % ENDPOINTS.len()];
    let server = &*SERVER;
    let (status, bytes) = server.runtime.block_on(async {
        let response = server
            .router
            .clone()
            .oneshot(request(endpoint, body))
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "{} {} answered {status}: {}",
        endpoint.method,
        endpoint.path,
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() {
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} {} answered {status} with a non-JSON body ({e}): {}",
                endpoint.method,
                endpoint.path,
                String::from_utf8_lossy(&bytes)
            )
        });
        check_error(endpoint.family, status, &value);
    }
});
