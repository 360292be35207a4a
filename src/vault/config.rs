//! The auth method's config (`/v1/auth/jwt/config`): where the keys come from, the
//! bound issuer, the accepted algorithms and the default role. Parsed from a request
//! with Vault's field names and types, checked, and stored as one document in the
//! normalized form that `GET` shows.
//!
//! Exactly one key source: `jwt_validation_pubkeys` (PEM public keys) or
//! `oidc_discovery_url` (with an optional `oidc_discovery_ca_pem`). `jwt_supported_algs`
//! empty means every supported asymmetric algorithm, as Vault does for JWT roles.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fields::{self, Fields};
use super::keys::{self, PublicKey};
use super::role::normalize_role_name;
use super::VaultError;

/// Vault config parameters this server does not implement: accepted only empty.
const UNSUPPORTED: [&str; 10] = [
    "oidc_client_id",
    "oidc_client_secret",
    "oidc_response_mode",
    "oidc_response_types",
    "jwks_url",
    "jwks_ca_pem",
    "jwks_pairs",
    "provider_config",
    "namespace_in_state",
    "unsupported_critical_cert_extensions",
];

/// The stored (and shown) config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDoc {
    pub jwt_validation_pubkeys: Vec<String>,
    pub oidc_discovery_url: String,
    pub oidc_discovery_ca_pem: String,
    pub bound_issuer: String,
    pub jwt_supported_algs: Vec<String>,
    pub default_role: String,
}

/// Where the keys come from, checked.
pub enum KeySource {
    Pem(Vec<Arc<PublicKey>>),
    Discovery { url: String, ca_pem: Option<String> },
}

/// The config, checked and ready for logins.
pub struct JwtAuthConfig {
    pub keys: KeySource,
    pub bound_issuer: Option<String>,
    /// The algorithms a token may be signed with.
    pub algorithms: Vec<Algorithm>,
    pub default_role: Option<String>,
}

impl ConfigDoc {
    /// Reads a `POST /v1/auth/jwt/config` body (the whole config: unset fields are
    /// empty, as in Vault). Unknown parameters are returned, to be reported as
    /// warnings.
    pub fn from_request(body: &Fields) -> Result<(Self, Vec<String>), VaultError> {
        let mut doc = Self::default();
        let mut ignored = Vec::new();
        for (name, value) in body {
            match name.as_str() {
                "jwt_validation_pubkeys" => {
                    doc.jwt_validation_pubkeys = fields::text_list(name, value)?
                }
                "oidc_discovery_url" => doc.oidc_discovery_url = fields::string(name, value)?,
                "oidc_discovery_ca_pem" => doc.oidc_discovery_ca_pem = fields::string(name, value)?,
                "bound_issuer" => doc.bound_issuer = fields::string(name, value)?,
                "jwt_supported_algs" => doc.jwt_supported_algs = fields::string_list(name, value)?,
                "default_role" => doc.default_role = fields::string(name, value)?,
                other if UNSUPPORTED.contains(&other) => {
                    if !fields::is_empty(value) {
                        return Err(VaultError::invalid(
                            "unsupported_parameter",
                            format!("{other:?} is not supported by this server: configure jwt_validation_pubkeys or oidc_discovery_url"),
                        ));
                    }
                }
                other => ignored.push(other.to_string()),
            }
        }
        doc.oidc_discovery_url = doc.oidc_discovery_url.trim().to_string();
        if !doc.default_role.is_empty() {
            doc.default_role = normalize_role_name(&doc.default_role)?;
        }
        doc.check()?;
        Ok((doc, ignored))
    }

    /// Checks and parses the stored form.
    pub fn check(&self) -> Result<JwtAuthConfig, VaultError> {
        let keys =
            match (
                self.jwt_validation_pubkeys.is_empty(),
                self.oidc_discovery_url.is_empty(),
            ) {
                (false, true) => {
                    if !self.oidc_discovery_ca_pem.trim().is_empty() {
                        return Err(VaultError::invalid(
                            "invalid_config",
                            "oidc_discovery_ca_pem is only used with oidc_discovery_url",
                        ));
                    }
                    let keys = self
                        .jwt_validation_pubkeys
                        .iter()
                        .enumerate()
                        .map(|(i, pem)| {
                            PublicKey::from_pem(pem).map(Arc::new).map_err(|why| {
                                VaultError::invalid(
                                    "invalid_config",
                                    format!("error parsing public key {}: {why}", i + 1),
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    KeySource::Pem(keys)
                }
                (true, false) => {
                    check_discovery_url(&self.oidc_discovery_url)?;
                    let ca_pem = Some(self.oidc_discovery_ca_pem.clone())
                        .filter(|pem| !pem.trim().is_empty());
                    KeySource::Discovery {
                        url: self.oidc_discovery_url.trim_end_matches('/').to_string(),
                        ca_pem,
                    }
                }
                _ => return Err(VaultError::invalid(
                    "invalid_config",
                    "exactly one of 'jwt_validation_pubkeys' or 'oidc_discovery_url' must be set",
                )),
            };
        let algorithms = if self.jwt_supported_algs.is_empty() {
            keys::SUPPORTED_ALGORITHMS.to_vec()
        } else {
            self.jwt_supported_algs
                .iter()
                .map(|name| {
                    keys::supported_algorithm(name).ok_or_else(|| {
                        VaultError::invalid(
                            "invalid_config",
                            format!(
                                "invalid jwt_supported_algs: unsupported signing algorithm {name:?} (supported: {})",
                                keys::SUPPORTED_ALGORITHMS.map(keys::algorithm_name).join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(JwtAuthConfig {
            keys,
            bound_issuer: Some(self.bound_issuer.clone()).filter(|s| !s.is_empty()),
            algorithms,
            default_role: Some(self.default_role.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// `GET /v1/auth/jwt/config`'s `data`.
    pub fn read_data(&self) -> Value {
        json!({
            "jwt_validation_pubkeys": self.jwt_validation_pubkeys,
            "oidc_discovery_url": self.oidc_discovery_url,
            "oidc_discovery_ca_pem": self.oidc_discovery_ca_pem,
            "bound_issuer": self.bound_issuer,
            "jwt_supported_algs": self.jwt_supported_algs,
            "default_role": self.default_role,
            "jwks_url": "",
            "jwks_ca_pem": "",
            "oidc_client_id": "",
            "oidc_response_mode": "",
            "oidc_response_types": [],
            "provider_config": {},
        })
    }
}

/// An absolute http(s) URL without query or fragment.
fn check_discovery_url(value: &str) -> Result<(), VaultError> {
    let bad = |why: &str| {
        VaultError::invalid(
            "invalid_config",
            format!("invalid oidc_discovery_url {value:?}: {why}"),
        )
    };
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http or https URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad("must not have a query, a fragment or credentials"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Fields {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn exactly_one_key_source() {
        let neither = ConfigDoc::from_request(&body(json!({"bound_issuer": "x"})));
        assert!(neither.unwrap_err().to_string().contains("exactly one"));
        let both = ConfigDoc::from_request(&body(json!({
            "oidc_discovery_url": "https://idp.example",
            "jwt_validation_pubkeys": ["-----BEGIN PUBLIC KEY-----"],
        })));
        assert!(both.unwrap_err().to_string().contains("exactly one"));
        let (doc, ignored) = ConfigDoc::from_request(&body(json!({
            "oidc_discovery_url": "https://idp.example/",
            "bound_issuer": "https://idp.example/",
            "something": 1,
        })))
        .unwrap();
        assert_eq!(ignored, vec!["something"]);
        let config = doc.check().unwrap();
        assert!(
            matches!(config.keys, KeySource::Discovery { ref url, .. } if url == "https://idp.example")
        );
        assert_eq!(config.algorithms.len(), keys::SUPPORTED_ALGORITHMS.len());
    }

    #[test]
    fn symmetric_and_unknown_algorithms_and_bad_urls_are_refused() {
        for algs in [json!(["HS256"]), json!("RS256,none"), json!(["ES512"])] {
            let err = ConfigDoc::from_request(&body(json!({
                "oidc_discovery_url": "https://idp.example",
                "jwt_supported_algs": algs,
            })))
            .unwrap_err();
            assert!(err.to_string().contains("jwt_supported_algs"), "{err}");
        }
        for url in ["ftp://idp.example", "not a url", "https://idp.example/?a=b"] {
            assert!(ConfigDoc::from_request(&body(json!({ "oidc_discovery_url": url }))).is_err());
        }
        let err = ConfigDoc::from_request(&body(json!({
            "oidc_discovery_url": "https://idp.example",
            "jwks_url": "https://idp.example/keys",
        })))
        .unwrap_err();
        assert!(err.to_string().contains("jwks_url"));
    }
}
