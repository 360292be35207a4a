//! The `oauth` section: the OAuth2 token endpoint's policy.

use serde::{Deserialize, Serialize};

use super::SettingsError;
use crate::scope::valid_scope_token;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOAuth {
    pub client_credentials_refresh: bool,
    pub scopes: Vec<String>,
}

/// The OAuth2 token endpoint's policy (SPEC §4 "OAuth2").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthSettings {
    /// Also give non-agent clients a refresh token from `client_credentials` (RFC 6749
    /// §4.4.3 says they get none). Their token state is then kept like an agent's.
    pub client_credentials_refresh: bool,
    /// The scopes a client may request (RFC 6749 §3.3). Empty: any request that names
    /// a scope is refused with `invalid_scope`.
    pub scopes: Vec<String>,
}

impl RawOAuth {
    pub(super) fn validate(self) -> Result<OAuthSettings, SettingsError> {
        for scope in &self.scopes {
            if !valid_scope_token(scope) {
                return Err(SettingsError::new(
                    "oauth.scopes",
                    format!(
                        "{scope:?} is not a scope token (RFC 6749 §3.3: printable ASCII, no space, '\"' or '\\')"
                    ),
                ));
            }
        }
        Ok(OAuthSettings {
            client_credentials_refresh: self.client_credentials_refresh,
            scopes: self.scopes,
        })
    }
}
