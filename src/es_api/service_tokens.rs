//! Service-account tokens (`/_security/service/{namespace}/{service}/credential...`).

use super::{SecurityApi, SecurityError};
use crate::authentication::Principal;
use crate::identity::service_accounts::CreatedServiceToken;
use crate::identity::{Action, ServiceAccount};

/// The tokens of a service account, by name (their values are never shown again).
pub struct ServiceCredentials {
    pub service_account: &'static str,
    pub token_names: Vec<String>,
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
        Ok(created)
    }

    /// `GET /_security/service/{namespace}/{service}/credential`.
    pub async fn service_credentials(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
    ) -> Result<ServiceCredentials, SecurityError> {
        Self::authorize(principal, Action::GetServiceCredentials)?;
        let account = Self::service_account(namespace, service)?;
        let names = self
            .identity
            .service_accounts
            .list(account.principal)
            .await?;
        Ok(ServiceCredentials {
            service_account: account.principal,
            token_names: names,
        })
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
