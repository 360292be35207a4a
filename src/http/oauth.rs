//! The OAuth2 API for standard clients: `POST /oauth/token` (RFC 6749 §3.2, RFC 8693),
//! `POST /oauth/introspect` (RFC 7662), `POST /oauth/revoke` (RFC 7009) and
//! `GET /.well-known/oauth-authorization-server` (RFC 8414).
//!
//! Requests are `application/x-www-form-urlencoded`; this module parses them strictly
//! (a wrong content type, a malformed escape, non-UTF-8 text or a repeated parameter is
//! `invalid_request`) and renders answers and RFC 6749 §5.2 errors as JSON
//! ([`OAuthError`]), always with `Cache-Control: no-store` and `Pragma: no-cache`. The
//! grants themselves, and every OAuth error code, are the grant layer's.
//!
//! Client authentication: `Authorization: Basic` (id and secret form-urlencoded first,
//! RFC 6749 §2.3.1), `Authorization: ApiKey` (Elasticsearch's header), or
//! `client_id`/`client_secret` in the body.
//!
//! Metadata URLs are absolute: they start with the `public_url` setting when it is set,
//! else with `http://` and the request's `Host` header (so a server behind a TLS proxy
//! should set `public_url`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::dpop::{add_nonce, DpopParts};
use super::error::OAuthError;
use super::token_json::JsonObject;
use super::{no_store, AppState, RemoteAddr};
use crate::credentials::{self, Presented};
use crate::grant::{
    ClientAuthMethod, ClientCredentials, GrantError, Params, TokenRequest, TokenResponse,
};

const FORM: &str = "application/x-www-form-urlencoded";

pub async fn token(
    State(state): State<AppState>,
    RemoteAddr(remote_addr): RemoteAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let mut request = parse_request(&headers, body)?;
    request.remote_addr = remote_addr;
    let dpop = DpopParts::read(&state, &method, &uri, &headers)?;
    let answer = state
        .grants
        .token_with_dpop(&request, &dpop.request())
        .await?;
    let mut response = token_answer(&answer);
    no_store(response.headers_mut());
    add_nonce(&state, response.headers_mut());
    Ok(response)
}

/// The token answer's body (RFC 6749 §5.1), members in `TokenResponse`'s order, the
/// absent ones left out (as its `Serialize` does), without an escape scan over the
/// tokens ([`JsonObject`]).
fn token_answer(answer: &TokenResponse) -> Response {
    let refresh_token = answer.refresh_token.as_deref();
    let mut body = JsonObject::with_capacity(
        answer.access_token.len() + refresh_token.map_or(0, str::len) + 160,
    );
    body.string("access_token", &answer.access_token);
    body.string("token_type", answer.token_type);
    body.number("expires_in", answer.expires_in);
    if let Some(refresh_token) = refresh_token {
        body.string("refresh_token", refresh_token);
    }
    if let Some(scope) = &answer.scope {
        body.string("scope", scope);
    }
    if let Some(issued_token_type) = answer.issued_token_type {
        body.string("issued_token_type", issued_token_type);
    }
    body.into_response()
}

pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let request = parse_request(&headers, body)?;
    let answer = state.grants.introspect(&request).await?;
    let mut response = Json(answer).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let request = parse_request(&headers, body)?;
    state.grants.revoke(&request).await?;
    // RFC 7009 §2.2: 200, whether or not there was anything to revoke.
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    Ok(response)
}

pub async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state, &headers);
    let grants = state.grants.metadata();
    let algorithms: Vec<&str> = grants
        .signing_algorithms
        .iter()
        .map(|a| a.as_str())
        .collect();
    Json(json!({
        "issuer": grants.issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": grants.grant_types,
        // RFC 8414 §2 requires this member; there is no authorization endpoint, so no
        // response type is supported.
        "response_types_supported": [],
        "scopes_supported": grants.scopes,
        "token_endpoint_auth_methods_supported": grants.client_auth_methods,
        "introspection_endpoint_auth_methods_supported": grants.client_auth_methods,
        "revocation_endpoint_auth_methods_supported": grants.client_auth_methods,
        // Not registered by RFC 8414: the JWS algorithms of our access tokens (RFC 9068).
        "access_token_signing_alg_values_supported": algorithms,
        // RFC 9449 §5.1.
        "dpop_signing_alg_values_supported": grants.dpop_algorithms,
    }))
    .into_response()
}

/// `public_url`, or `http://` + a well-formed `Host` header, or the listen address.
pub(super) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        });
    match host {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", state.settings.listen),
    }
}

fn parse_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<TokenRequest, OAuthError> {
    let body =
        body.map_err(|rejection| OAuthError::Body(rejection.status(), rejection.body_text()))?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
    if !is_form {
        return Err(GrantError::invalid_request(
            "content_type",
            format!("the body must be {FORM}"),
        )
        .into());
    }
    Ok(TokenRequest {
        params: Params::from_pairs(parse_form(&body)?)?,
        header_client: header_client(headers)?,
        remote_addr: None,
    })
}

/// Decodes a form body (RFC 6749 Appendix B): `name=value` pairs joined by `&`.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, GrantError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed_form())?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(name)?, form_decode(value)?))
        })
        .collect()
}

fn malformed_form() -> GrantError {
    GrantError::invalid_request(
        "malformed_body",
        format!("the body is not valid {FORM} text"),
    )
}

/// `+` is a space and `%XX` a byte; the bytes must be UTF-8. Malformed escapes are
/// refused rather than passed through.
fn form_decode(text: &str) -> Result<String, GrantError> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(malformed_form());
        }
    }
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| malformed_form())
}

/// Client credentials from the `Authorization` header, if any. A header that does not
/// authenticate a client is `invalid_client`.
fn header_client(headers: &HeaderMap) -> Result<Option<ClientCredentials>, GrantError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GrantError::invalid_request(
            "malformed_credentials",
            "more than one Authorization header",
        ));
    }
    let presented = credentials::from_authorization(value.as_bytes())
        .map_err(|e| GrantError::invalid_client(e.reason(), e.to_string()))?;
    let refused = || {
        GrantError::invalid_client(
            "malformed_credentials",
            "the client credentials are malformed",
        )
    };
    match presented {
        // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
        Presented::Basic { id, secret } => Ok(Some(ClientCredentials {
            id: form_decode(&id).map_err(|_| refused())?,
            secret: form_decode(&secret).map_err(|_| refused())?,
            method: ClientAuthMethod::Basic,
        })),
        Presented::ApiKey { id, secret } => Ok(Some(ClientCredentials {
            id,
            secret,
            method: ClientAuthMethod::ApiKey,
        })),
        Presented::Bearer(_) => Err(GrantError::invalid_client(
            "unsupported_scheme",
            "authenticate the client with HTTP Basic or ApiKey; tokens go in the form body",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_strictly() {
        let pairs = parse_form(b"grant_type=refresh_token&scope=a+b%20c&x").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("grant_type".into(), "refresh_token".into()),
                ("scope".into(), "a b c".into()),
                ("x".into(), String::new()),
            ]
        );
        for bad in [&b"a=%zz"[..], b"a=%4", b"a=%ff%fe", b"a=\xff"] {
            assert!(parse_form(bad).is_err(), "{bad:?}");
        }
    }
}
