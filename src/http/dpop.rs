//! What each DPoP-aware handler reads of a request (RFC 9449): the one `DPoP` header,
//! the method and URL a proof must name (`htm`, `htu`: `public_url`, else `http://` +
//! `Host`, plus the path), and whether `Authorization` uses the `DPoP` scheme; and the
//! `DPoP-Nonce` header of answers.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::AppState;
use crate::credentials;
use crate::grant::{DpopRequest, GrantError};

/// `DPoP-Nonce` (RFC 9449 §8.1).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// A request's DPoP parts, owned (see [`DpopParts::request`]).
pub struct DpopParts {
    proof: Option<String>,
    method: String,
    url: String,
    dpop_scheme: bool,
}

impl DpopParts {
    /// Reads them; more than one `DPoP` header is an invalid proof (RFC 9449 §4.3).
    pub fn read(
        state: &AppState,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Self, GrantError> {
        let mut values = headers.get_all("dpop").iter();
        let proof = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(GrantError::invalid_dpop_proof(
                    "dpop_malformed",
                    "more than one DPoP header",
                ))
            }
            (Some(value), None) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        GrantError::invalid_dpop_proof(
                            "dpop_malformed",
                            "the DPoP header is not a JWT",
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
        };
        let dpop_scheme = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| credentials::is_dpop_scheme(v.as_bytes()));
        Ok(Self {
            proof,
            method: method.as_str().to_string(),
            url: format!("{}{}", super::oauth::base_url(state, headers), uri.path()),
            dpop_scheme,
        })
    }

    pub fn request(&self) -> DpopRequest<'_> {
        DpopRequest {
            proof: self.proof.as_deref(),
            method: &self.method,
            url: &self.url,
            dpop_scheme: self.dpop_scheme,
        }
    }
}

/// Adds a fresh `DPoP-Nonce` to an answer when nonces are required.
pub fn add_nonce(state: &AppState, headers: &mut HeaderMap) {
    if let Some(nonce) = state.grants.dpop_nonce() {
        if let Ok(value) = HeaderValue::from_str(&nonce) {
            headers.insert(DPOP_NONCE, value);
        }
    }
}
