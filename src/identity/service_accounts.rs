//! Service accounts and their tokens. One account is built in, `elastic/fleet-server`
//! (as in Elasticsearch); its tokens are created through the service-account API and
//! presented as `Authorization: Bearer <value>`.
//!
//! The token value is Elasticsearch's format, byte for byte: standard base64 without
//! padding of the four bytes `00 01 00 01` followed by `namespace/service/name:secret`
//! (Elasticsearch's test vector: `elastic/fleet-server`, `token1`, `supersecret` gives
//! `AAEAAWVsYXN0aWMvZmxlZXQtc2VydmVyL3Rva2VuMTpzdXBlcnNlY3JldA`). The secret is 256
//! random bits (base64url); only its SHA-256 is stored.
//!
//! What `elastic/fleet-server` may do: the cluster privileges `monitor` and
//! `manage_own_api_key`, as in Elasticsearch (its index privileges on `.fleet-*` have
//! no meaning here): authenticate, and create, get and invalidate its own API keys.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::roles::{Resolved, RoleDescriptor};
use crate::clock::Clock;
use crate::secrets::{sha256_hex, SecretError, SecretKind, SecretVerifier, Stored};
use crate::store::{ServiceTokenRecord, Store, StoreError, TypedWrite};

/// The leading bytes of a service token: magic byte, token type, format version.
const PREFIX: [u8; 4] = [0, 1, 0, 1];

/// A built-in service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `namespace/service`.
    pub principal: &'static str,
    /// Its cluster privileges.
    pub cluster: &'static [&'static str],
}

pub const FLEET_SERVER: ServiceAccount = ServiceAccount {
    principal: "elastic/fleet-server",
    cluster: &["monitor", "manage_own_api_key"],
};

/// Every built-in service account.
pub const ACCOUNTS: &[ServiceAccount] = &[FLEET_SERVER];

impl ServiceAccount {
    pub fn find(principal: &str) -> Option<Self> {
        ACCOUNTS.iter().copied().find(|a| a.principal == principal)
    }

    /// Its privileges, as a role descriptor named after it.
    pub fn resolved(&self) -> Resolved {
        let descriptor = RoleDescriptor::parse(
            self.principal,
            &json!({ "cluster": self.cluster, "indices": [] }),
        )
        .expect("built-in descriptors are valid");
        Resolved::of(
            &[(self.principal.to_string(), descriptor)]
                .into_iter()
                .collect(),
        )
    }
}

/// A presented service token, parsed (not verified).
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// `namespace/service`.
    pub account: String,
    pub name: String,
    secret: String,
}

impl std::fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedToken({}/{}, [redacted])", self.account, self.name)
    }
}

/// Elasticsearch's rule for token names: 1 to 256 of `A-Z a-z 0-9 - _`, not starting
/// with `_`.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The bearer value of a service token.
pub fn encode(account: &str, name: &str, secret: &str) -> String {
    let mut bytes = PREFIX.to_vec();
    bytes.extend_from_slice(format!("{account}/{name}:{secret}").as_bytes());
    STANDARD_NO_PAD.encode(bytes)
}

/// Parses a bearer value as a service token; `None` if it is not one (it may be
/// another kind of token).
pub fn parse(value: &str) -> Option<ParsedToken> {
    if !value.starts_with("AAEAA") {
        return None;
    }
    let bytes = STANDARD_NO_PAD.decode(value.trim_end_matches('=')).ok()?;
    let rest = bytes.strip_prefix(&PREFIX)?;
    let text = std::str::from_utf8(rest).ok()?;
    let (qualified, secret) = text.split_once(':')?;
    let (account, name) = qualified.rsplit_once('/')?;
    let (namespace, service) = account.split_once('/')?;
    if namespace.is_empty() || service.is_empty() || !valid_token_name(name) || secret.is_empty() {
        return None;
    }
    Some(ParsedToken {
        account: account.to_string(),
        name: name.to_string(),
        secret: secret.to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceTokenError {
    #[error("service account [{0}] does not exist")]
    UnknownAccount(String),
    #[error("invalid service token name [{0}]: must be 1 to 256 of A-Z a-z 0-9 - _, not starting with _")]
    InvalidName(String),
    #[error("service token [{0}] already exists")]
    Exists(String),
    #[error("unknown service token")]
    UnknownToken,
    #[error("wrong service token secret")]
    WrongSecret,
    /// Not checked now (too many failures), or a failure on our side.
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceTokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownAccount(_) => "service_account_unknown",
            Self::InvalidName(_) => "service_token_invalid_name",
            Self::Exists(_) => "service_token_exists",
            Self::UnknownToken => "service_token_unknown",
            Self::WrongSecret => "service_token_wrong_secret",
            Self::Secret(SecretError::Throttled(_)) => "throttled",
            Self::Secret(SecretError::Hashing(_)) => "hashing_failed",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A token as handed out once at creation.
#[derive(Clone)]
pub struct CreatedServiceToken {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for CreatedServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedServiceToken({}, [redacted])", self.name)
    }
}

pub struct ServiceAccounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secrets: Arc<SecretVerifier>,
}

impl ServiceAccounts {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, secrets: Arc<SecretVerifier>) -> Self {
        Self {
            store,
            clock,
            secrets,
        }
    }

    fn account(principal: &str) -> Result<ServiceAccount, ServiceTokenError> {
        ServiceAccount::find(principal)
            .ok_or_else(|| ServiceTokenError::UnknownAccount(principal.to_string()))
    }

    /// Creates a token (named `token_<random>` when no name is given); the value exists
    /// only in the answer.
    pub async fn create(
        &self,
        principal: &str,
        name: Option<&str>,
        created_by: &str,
    ) -> Result<CreatedServiceToken, ServiceTokenError> {
        let account = Self::account(principal)?;
        let name = match name {
            Some(name) if valid_token_name(name) => name.to_string(),
            Some(name) => return Err(ServiceTokenError::InvalidName(name.to_string())),
            None => format!("token_{}", crate::secrets::random_secret(15)),
        };
        let secret = crate::secrets::random_secret(32);
        let record = ServiceTokenRecord {
            account: account.principal.to_string(),
            name: name.clone(),
            secret_hash: sha256_hex(&secret),
            created_at: self.clock.now(),
            created_by: created_by.to_string(),
        };
        let id = format!("{}/{name}", account.principal);
        let before = self
            .store
            .update_typed::<ServiceTokenRecord, _>(&id, move |current| match current {
                Some(_) => TypedWrite::Keep,
                None => TypedWrite::Put(record.clone()),
            })
            .await?;
        if before.is_some() {
            return Err(ServiceTokenError::Exists(id));
        }
        Ok(CreatedServiceToken {
            value: encode(account.principal, &name, &secret),
            name,
        })
    }

    /// The names of an account's tokens, in order.
    pub async fn list(&self, principal: &str) -> Result<Vec<String>, ServiceTokenError> {
        let account = Self::account(principal)?;
        Ok(self
            .store
            .typed_records::<ServiceTokenRecord>(Some(account.principal))
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// Deletes a token; `true` if it existed.
    pub async fn delete(&self, principal: &str, name: &str) -> Result<bool, ServiceTokenError> {
        let account = Self::account(principal)?;
        let before = self
            .store
            .update_typed::<ServiceTokenRecord, _>(
                &format!("{}/{name}", account.principal),
                |current| match current {
                    Some(_) => TypedWrite::Delete,
                    None => TypedWrite::Keep,
                },
            )
            .await?;
        Ok(before.is_some())
    }

    /// Verifies a presented token (its SHA-256, in constant time, through the one
    /// [`SecretVerifier`] and its failure limits); returns its account and record.
    pub async fn verify(
        &self,
        token: &ParsedToken,
    ) -> Result<(ServiceAccount, ServiceTokenRecord), ServiceTokenError> {
        let id = format!("{}/{}", token.account, token.name);
        let account = ServiceAccount::find(&token.account);
        let record = match account {
            Some(_) => self.store.typed_record::<ServiceTokenRecord>(&id).await?,
            None => None,
        };
        let stored = record.as_ref().map(|r| Stored::Sha256Hex(&r.secret_hash));
        let verified = self
            .secrets
            .verify(SecretKind::ServiceToken, &id, &token.secret, stored)
            .await?;
        match (account, record) {
            (Some(account), Some(record)) if verified => Ok((account, record)),
            (Some(_), Some(_)) => Err(ServiceTokenError::WrongSecret),
            _ => Err(ServiceTokenError::UnknownToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_elasticsearchs() {
        // Elasticsearch's own test vector (ServiceAccountTokenTests.testBearerString).
        let value = encode("elastic/fleet-server", "token1", "supersecret");
        assert_eq!(
            value,
            "AAEAAWVsYXN0aWMvZmxlZXQtc2VydmVyL3Rva2VuMTpzdXBlcnNlY3JldA"
        );
        let parsed = parse(&value).unwrap();
        assert_eq!(
            (
                parsed.account.as_str(),
                parsed.name.as_str(),
                parsed.secret.as_str()
            ),
            ("elastic/fleet-server", "token1", "supersecret")
        );
        assert!(!format!("{parsed:?}").contains("supersecret"));
    }

    #[test]
    fn other_values_are_not_service_tokens() {
        for bad in [
            "",
            "eyJhbGciOiJFZERTQSJ9.e30.sig",
            "fr1.abc.def.ghi",
            // A wrong magic byte (Elasticsearch's own negative vector).
            "AQEAAWVsYXN0aWMvZmxlZXQvdG9rZW4xOnN1cGVyc2VjcmV0",
            // No colon.
            &STANDARD_NO_PAD.encode(b"\x00\x01\x00\x01elastic/fleet-server/token1"),
            // A bad token name.
            &encode("elastic/fleet-server", "_hidden", "s"),
            &encode("elastic", "token1", "s"),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(valid_token_name("token-1_a"));
        assert!(!valid_token_name("token 1"));
    }
}
