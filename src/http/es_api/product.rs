//! Answering *as Elasticsearch* (SPEC §7, setting `elasticsearch_api.product_header`,
//! on by default): the official Elasticsearch clients refuse any successful answer that
//! does not carry `X-Elastic-Product: Elasticsearch`, and read `GET /` to learn the
//! server's version. So this family answers as Elasticsearch does
//! ([`as_elasticsearch`]): the header on every answer of `/_security/...` and `/`, and
//! at `/` the info document in Elasticsearch's shape ([`info`]), naming REST API
//! version 9 (the clients' vendor media types
//! `application/vnd.elasticsearch+json; compatible-with=8` or `=9` are accepted, and
//! answered in kind).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::http::error::EsApiError;
use crate::http::AppState;

/// The Elasticsearch version this family answers as (its REST API is version 9's,
/// for the part implemented here).
const ES_VERSION: &str = "9.1.0";
/// The REST API compatibility versions accepted in `compatible-with` (as Elasticsearch
/// 9 does: its own and the previous major).
const COMPATIBLE_WITH: [&str; 2] = ["8", "9"];
/// Elasticsearch's vendor media type.
const ES_MEDIA_TYPE: &str = "application/vnd.elasticsearch+json";

/// Whether a path belongs to the Elasticsearch-compatible family.
fn is_es_path(path: &str) -> bool {
    path == "/" || path == "/_security" || path.starts_with("/_security/")
}

/// The `compatible-with` version a media type asks for, if any:
/// `application/vnd.elasticsearch+json; compatible-with=8` → `Some("8")`.
fn compatible_with(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    text.split(',').find_map(|media_type| {
        let mut parts = media_type.split(';');
        let essence = parts.next()?.trim();
        if !essence
            .to_ascii_lowercase()
            .starts_with("application/vnd.elasticsearch+")
        {
            return None;
        }
        parts.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("compatible-with")
                .then(|| value.trim().trim_matches('"').to_string())
        })
    })
}

/// The middleware of the Elasticsearch-compatible family (on the whole router, acting
/// on this family's paths only, so that answers of the outer layers (413, 408) get it
/// too): checks the requested compatibility version, and, when
/// `elasticsearch_api.product_header` is on, marks the answer as Elasticsearch's and
/// answers a vendor `Accept` in kind. Called by the router's edge layer around the
/// rest of the request (`run`), so that one middleware instead of two runs on every
/// request.
pub async fn as_elasticsearch<F, Fut>(product_header: bool, request: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if !product_header || !is_es_path(request.uri().path()) {
        return run(request).await;
    }
    let mut accept_version = None;
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        for value in request.headers().get_all(&name) {
            if let Some(version) = compatible_with(value) {
                if !COMPATIBLE_WITH.contains(&version.as_str()) {
                    let shown: String = value.to_str().unwrap_or("").chars().take(100).collect();
                    let mut response = EsApiError::MediaType(format!(
                        "Invalid media-type value on headers [{name}]: compatible-with={} is not supported (only {}): {shown}",
                        version.chars().take(10).collect::<String>(),
                        COMPATIBLE_WITH.join(", ")
                    ))
                    .into_response();
                    mark_as_elasticsearch(&mut response, None);
                    return response;
                }
                if name == header::ACCEPT {
                    accept_version = Some(version);
                }
            }
        }
    }
    let mut response = run(request).await;
    mark_as_elasticsearch(&mut response, accept_version.as_deref());
    response
}

fn mark_as_elasticsearch(response: &mut Response, accept_version: Option<&str>) {
    let headers = response.headers_mut();
    headers.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if let (Some(version), true) = (accept_version, is_json) {
        if let Ok(value) =
            HeaderValue::from_str(&format!("{ES_MEDIA_TYPE};compatible-with={version}"))
        {
            headers.insert(header::CONTENT_TYPE, value);
        }
    }
}

/// `GET /` (and `HEAD /`, the clients' `ping`): Elasticsearch's info document, as the
/// official clients read it. No credential is needed: it tells only what the product
/// header already tells, and the deployment's public id. 404 when
/// `elasticsearch_api.product_header` is off.
pub async fn info(State(state): State<AppState>) -> Response {
    if !state.settings.es_product_header {
        return crate::http::not_found().await.into_response();
    }
    let tokens = &state.tokens;
    // Elasticsearch's cluster UUIDs are 16 bytes in URL-safe base64 (22 characters).
    let cluster_uuid = uuid::Uuid::parse_str(tokens.deployment_id())
        .map(|id| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
        })
        .unwrap_or_else(|_| tokens.deployment_id().to_string());
    Json(json!({
        "name": "fleetauth",
        "cluster_name": "fleetauth",
        "cluster_uuid": cluster_uuid,
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "fleetauth",
            "build_hash": concat!("fleetauth-", env!("CARGO_PKG_VERSION")),
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "10.2.2",
            "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0",
        },
        "tagline": "You Know, for Search",
    }))
    .into_response()
}
