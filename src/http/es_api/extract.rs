//! The extractors of the Elasticsearch-compatible family, each rejecting with the
//! family's error ([`EsApiError`]): [`EsCall`] is a call of an API: its query string
//! ([`EsQuery`], refusing parameters the API does not accept, as Elasticsearch does),
//! checked first, then its caller through the one authentication chain; [`EsJsonCall`]
//! is a call with a JSON body, read into its shape (shapes.rs). Handlers take the path,
//! then the call.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use serde_json::{json, Value};

use super::shapes::EsBodyShape;
use crate::authentication::Principal;
use crate::es_api::{RequestBody, SecurityApi, SecurityError};
use crate::grant::GrantError;
use crate::http::error::EsApiError;
use crate::http::fleet::presented_header;
use crate::http::{read_body_first, AppState};

/// Parameters every endpoint accepts and ignores.
const GENERIC_PARAMS: &[&str] = &["pretty", "human", "error_trace", "refresh"];

/// A call of an API that accepts the query parameters `P`: the query, the caller
/// (through the authentication chain; Elasticsearch's 401 otherwise) and the service.
pub struct EsCall<P: AcceptedParams = NoParams> {
    pub query: EsQuery<P>,
    pub principal: Principal,
    pub security: Arc<SecurityApi>,
}

impl<P: AcceptedParams> FromRequestParts<AppState> for EsCall<P> {
    type Rejection = EsApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = EsQuery::<P>::from_request_parts(parts, state).await?;
        let presented = match presented_header(&parts.headers) {
            Ok(presented) => presented,
            Err(GrantError::InvalidRequest { description, .. }) => {
                return Err(SecurityError::unauthenticated(description).into())
            }
            Err(e) => return Err(SecurityError::unauthenticated(e.to_string()).into()),
        };
        let principal = state
            .security
            .authenticate(presented.as_ref(), parts.uri.path())
            .await?;
        Ok(Self {
            query,
            principal,
            security: state.security.clone(),
        })
    }
}

/// The query parameters an API accepts (besides [`GENERIC_PARAMS`]).
pub trait AcceptedParams {
    const NAMES: &'static [&'static str];
}

/// An API that takes no parameters of its own.
pub struct NoParams;

impl AcceptedParams for NoParams {
    const NAMES: &'static [&'static str] = &[];
}

/// The query string, decoded; a parameter `P` does not accept is Elasticsearch's
/// `illegal_argument_exception`.
pub struct EsQuery<P> {
    params: HashMap<String, String>,
    accepted: PhantomData<fn() -> P>,
}

impl<P> EsQuery<P> {
    pub fn get(&self, name: &str) -> Option<&String> {
        self.params.get(name)
    }

    /// A boolean parameter: absent or `false` is false, empty or `true` is true.
    pub fn flag(&self, name: &str) -> Result<bool, EsApiError> {
        match self.params.get(name).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("" | "true") => Ok(true),
            Some(other) => Err(SecurityError::illegal_argument(format!(
                "Failed to parse value [{other}] as only [true] or [false] are allowed."
            ))
            .into()),
        }
    }
}

impl<P: AcceptedParams, S: Send + Sync> FromRequestParts<S> for EsQuery<P> {
    type Rejection = EsApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params = HashMap::new();
        for pair in parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8()
                    .map(|t| t.into_owned())
                    .map_err(|_| {
                        SecurityError::illegal_argument("the query string is not valid UTF-8")
                    })
            };
            let (name, value) = (decode(name)?, decode(value)?);
            if !P::NAMES.contains(&name.as_str()) && !GENERIC_PARAMS.contains(&name.as_str()) {
                return Err(SecurityError::illegal_argument(format!(
                    "request [{}] contains unrecognized parameter: [{name}]",
                    parts.uri.path()
                ))
                .into());
            }
            params.insert(name, value);
        }
        Ok(Self {
            params,
            accepted: PhantomData,
        })
    }
}

/// A call of an API that takes a JSON body (an object; `{}` when empty;
/// `application/json`, `+json` or no content type) in the shape `B` (shapes.rs). The
/// body is read first, as any handler's body is, so a slow body meets the edge's read
/// timeout before anything else; a body that cannot be read or is no JSON object is
/// reported after the query and the caller; one that does not fit `B` is handed to the
/// service as its `parse_exception` ([`RequestBody`]), which reports it after its own
/// first checks.
pub struct EsJsonCall<B: EsBodyShape = Value, P: AcceptedParams = NoParams> {
    pub call: EsCall<P>,
    pub body: RequestBody<B::Request>,
}

impl<B: EsBodyShape, P: AcceptedParams> FromRequest<AppState> for EsJsonCall<B, P> {
    type Rejection = EsApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, bytes) = read_body_first(request).await;
        let call = EsCall::<P>::from_request_parts(&mut parts, state).await?;
        let bytes = bytes.map_err(|r| EsApiError::Body(r.status(), r.body_text()))?;
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let body = json_body(content_type, &bytes)?;
        let body = serde_json::from_value::<B>(body)
            .map(B::into_request)
            .map_err(|e| SecurityError::parse(format!("failed to parse [{}]: {e}", B::NAME)));
        Ok(Self {
            call,
            body: RequestBody::new(body),
        })
    }
}

fn json_body(content_type: Option<&HeaderValue>, body: &Bytes) -> Result<Value, EsApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    if let Some(content_type) = content_type {
        let text = content_type.to_str().unwrap_or("");
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(EsApiError::ContentType(text.chars().take(100).collect()));
        }
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| SecurityError::parse(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(SecurityError::parse("request body must be a JSON object").into());
    }
    Ok(value)
}
