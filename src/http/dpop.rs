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

/// A request's DPoP parts, borrowed from the request (see [`DpopParts::request`]). The
/// URL a proof must name is built only when there is a proof to check.
pub struct DpopParts<'a> {
    proof: Option<&'a str>,
    method: &'a str,
    url: String,
    dpop_scheme: bool,
}

impl<'a> DpopParts<'a> {
    /// Reads them; more than one `DPoP` header is an invalid proof (RFC 9449 §4.3).
    pub fn read(
        state: &AppState,
        method: &'a Method,
        uri: &Uri,
        headers: &'a HeaderMap,
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
                    .trim(),
            ),
        };
        let dpop_scheme = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| credentials::is_dpop_scheme(v.as_bytes()));
        // Only a proof is checked against the URL (`htu`).
        let url = match proof {
            Some(_) => format!("{}{}", super::oauth::base_url(state, headers), uri.path()),
            None => String::new(),
        };
        Ok(Self {
            proof,
            method: method.as_str(),
            url,
            dpop_scheme,
        })
    }

    pub fn request(&self) -> DpopRequest<'_> {
        DpopRequest {
            proof: self.proof,
            method: self.method,
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
