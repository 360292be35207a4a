//! DPoP (RFC 9449) in the grant flows: which key new tokens are bound to, and whether a
//! bound token was presented with a proof of its key. The proof itself is checked by
//! [`DpopVerifier`]; the OAuth error codes (`invalid_dpop_proof`, `use_dpop_nonce`) are
//! decided here.
//!
//! Binding rules, the same at every token endpoint:
//! - a credential that is bound (a refresh token of a bound pair, a bound access token
//!   traded for a pair) is accepted only with a proof of its key, and the new tokens are
//!   bound to that key again: the binding holds for the whole token family;
//! - an unbound credential with a proof gets tokens bound to the proved key;
//! - with `dpop.require_for_agents`, an agent gets no unbound tokens.
//!
//! At protected resources a bound access token must come as `Authorization: DPoP` with
//! a proof of its key whose `ath` is the token's hash; `Authorization: DPoP` with an
//! unbound token is refused too (RFC 9449 §7.1).

use super::{GrantError, GrantService};
use crate::tokens::dpop::{DpopError, DpopVerifier, ProofTarget};
use crate::tokens::AccessClaims;

/// What the HTTP layer saw of DPoP in a request.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The one `DPoP` header's value, if present.
    pub proof: Option<&'a str>,
    pub method: &'a str,
    /// The request URL without query (the proof's `htu`).
    pub url: &'a str,
    /// The `Authorization` scheme was `DPoP` (not `Bearer`).
    pub dpop_scheme: bool,
}

impl DpopRequest<'static> {
    /// A request without DPoP (callers that do not read DPoP headers): bound tokens are
    /// refused, unbound ones issued.
    pub const NONE: Self = Self {
        proof: None,
        method: "",
        url: "",
        dpop_scheme: false,
    };
}

/// The key a request proved, with the agents' policy: decides what new tokens are
/// bound to.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    proved: Option<String>,
    require_for_agents: bool,
}

impl Binding {
    /// The key to bind new tokens to, given the key the presented credential is bound
    /// to (if any) and whether the subject is an agent.
    pub fn key_for(
        &self,
        credential: Option<&str>,
        agent: bool,
    ) -> Result<Option<String>, GrantError> {
        match (credential, self.proved.as_deref()) {
            (Some(bound), Some(proved)) if bound == proved => Ok(Some(bound.to_string())),
            (Some(_), Some(_)) => Err(wrong_key()),
            (Some(_), None) => Err(GrantError::invalid_dpop_proof(
                "dpop_proof_required",
                "the token is DPoP-bound: present a DPoP proof of its key",
            )),
            (None, proved) => {
                if agent && self.require_for_agents && proved.is_none() {
                    return Err(GrantError::invalid_dpop_proof(
                        "dpop_required_for_agents",
                        "agents must present a DPoP proof (dpop.require_for_agents)",
                    ));
                }
                Ok(proved.map(str::to_string))
            }
        }
    }
}

fn wrong_key() -> GrantError {
    GrantError::invalid_dpop_proof(
        "dpop_wrong_key",
        "the DPoP proof is signed by another key than the one the token is bound to",
    )
}

impl From<DpopError> for GrantError {
    fn from(e: DpopError) -> Self {
        GrantError::InvalidDpopProof {
            reason: e.reason(),
            description: e.to_string(),
        }
    }
}

impl GrantService {
    fn verifier(&self) -> Result<&DpopVerifier, GrantError> {
        self.dpop.as_deref().ok_or_else(|| {
            GrantError::invalid_dpop_proof("dpop_not_supported", "DPoP is not enabled here")
        })
    }

    /// Checks the request's proof, if any (with `ath` for `access_token`); returns the
    /// thumbprint of the key it proves.
    pub(crate) fn proved_key(
        &self,
        dpop: &DpopRequest<'_>,
        access_token: Option<&str>,
    ) -> Result<Option<String>, GrantError> {
        let Some(proof) = dpop.proof else {
            return Ok(None);
        };
        let verifier = self.verifier()?;
        let target = ProofTarget {
            method: dpop.method,
            url: dpop.url,
            access_token,
        };
        match verifier.verify(proof, &target) {
            Ok(jkt) => Ok(Some(jkt)),
            Err(DpopError::NonceRequired) => Err(GrantError::UseDpopNonce {
                nonce: verifier.nonce(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The binding of a token-endpoint request: its proof checked (no `ath`).
    pub(crate) fn binding(&self, dpop: &DpopRequest<'_>) -> Result<Binding, GrantError> {
        Ok(self.binding_of(self.proved_key(dpop, None)?))
    }

    /// The binding of an already proved key (or none).
    pub(crate) fn binding_of(&self, proved: Option<String>) -> Binding {
        Binding {
            proved,
            require_for_agents: self
                .dpop
                .as_ref()
                .is_some_and(|v| v.settings().require_for_agents),
        }
    }

    /// A protected resource's check of a verified access token presented with `dpop`:
    /// before the token counts as used.
    pub(crate) fn check_presentation(
        &self,
        claims: &AccessClaims,
        token: &str,
        dpop: &DpopRequest<'_>,
    ) -> Result<(), GrantError> {
        match claims.bound_key() {
            None if dpop.dpop_scheme => Err(GrantError::invalid_grant(
                "dpop_scheme_unbound_token",
                "the access token is not DPoP-bound: present it as Bearer",
            )),
            None => Ok(()),
            Some(_) if !dpop.dpop_scheme => Err(GrantError::invalid_grant(
                "dpop_bound_token_as_bearer",
                "the access token is DPoP-bound: present it as Authorization: DPoP with a proof",
            )),
            Some(bound) => match self.proved_key(dpop, Some(token))? {
                Some(proved) if proved == bound => Ok(()),
                Some(_) => Err(wrong_key()),
                None => Err(GrantError::invalid_dpop_proof(
                    "dpop_proof_required",
                    "the token is DPoP-bound: present a DPoP proof of its key",
                )),
            },
        }
    }

    /// The nonce for `DPoP-Nonce` on successful answers, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop
            .as_ref()
            .filter(|v| v.nonces_required())
            .map(|v| v.nonce())
    }
}
