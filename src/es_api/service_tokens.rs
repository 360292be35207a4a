//! Service-account tokens (`/_security/service/{namespace}/{service}/credential...`).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{SecurityApi, SecurityError};
use crate::authentication::Principal;
use crate::identity::{Action, ServiceAccount};

/// A service token as created (its value shown this once).
#[derive(Serialize)]
pub struct CreatedServiceToken {
    pub created: bool,
    pub token: ServiceTokenValue,
}

#[derive(Serialize)]
pub struct ServiceTokenValue {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for CreatedServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedServiceToken({}, [redacted])", self.token.name)
    }
}

impl SecurityApi {
    fn service_account(namespace: &str, service: &str) -> Result<ServiceAccount, SecurityError> {
        let principal = format!("{namespace}/{service}");
        ServiceAccount::find(&principal).ok_or_else(|| {
            SecurityError::illegal_argument(format!("service account [{principal}] does not exist"))
        })
    }

    /// `POST|PUT /_security/service/{namespace}/{service}/credential/token[/{name}]`.
    pub async fn create_service_token(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
        name: Option<&str>,
    ) -> Result<CreatedServiceToken, SecurityError> {
        Self::authorize(principal, Action::CreateServiceToken)?;
        let account = Self::service_account(namespace, service)?;
        let created = self
            .identity
            .service_accounts
            .create(account.principal, name, &principal.identity.username)
            .await?;
        tracing::info!(account = account.principal, name = %created.name, "service token created");
        Ok(CreatedServiceToken {
            created: true,
            token: ServiceTokenValue {
                name: created.name,
                value: created.value,
            },
        })
    }

    /// `GET /_security/service/{namespace}/{service}/credential`.
    pub async fn service_credentials(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
    ) -> Result<Value, SecurityError> {
        Self::authorize(principal, Action::GetServiceCredentials)?;
        let account = Self::service_account(namespace, service)?;
        let names = self
            .identity
            .service_accounts
            .list(account.principal)
            .await?;
        let tokens: Map<String, Value> = names.iter().map(|n| (n.clone(), json!({}))).collect();
        Ok(json!({
            "service_account": account.principal,
            "count": names.len(),
            "tokens": tokens,
            "nodes_credentials": {
                "_nodes": { "total": 1, "successful": 1, "failed": 0 },
                "file_tokens": {}
            }
        }))
    }

    /// `DELETE /_security/service/{namespace}/{service}/credential/token/{name}`:
    /// whether it was found.
    pub async fn delete_service_token(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
        name: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteServiceToken)?;
        let account = Self::service_account(namespace, service)?;
        let found = self
            .identity
            .service_accounts
            .delete(account.principal, name)
            .await?;
        if found {
            tracing::info!(account = account.principal, name, "service token deleted");
        }
        Ok(found)
    }
}
