//! Roles (`/_security/role...`): create, read, delete role descriptors.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{SecurityApi, SecurityError};
use crate::authentication::Principal;
use crate::identity::roles::{check_role_name, RoleDescriptor};
use crate::identity::Action;

impl SecurityApi {
    /// `PUT|POST /_security/role/{name}`: whether it was created. The body is a role
    /// descriptor, parsed by the role model's own grammar ([`RoleDescriptor::parse`],
    /// which also reads API keys' `role_descriptors`) once the name is checked.
    pub async fn put_role(
        &self,
        principal: &Principal,
        name: &str,
        body: Value,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::PutRole)?;
        check_role_name(name)?;
        let descriptor = RoleDescriptor::parse(name, &body)?;
        let created = self.identity.roles.put(name, descriptor).await?;
        tracing::info!(role = name, created, by = %principal.identity.username, "role saved");
        Ok(created)
    }

    /// `GET /_security/role[/{names}]`.
    pub async fn get_roles(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<BTreeMap<String, RoleDescriptor>, SecurityError> {
        Self::authorize(principal, Action::GetRole)?;
        let roles = &self.identity.roles;
        let mut out = BTreeMap::new();
        if names.is_empty() {
            out.extend(roles.all().await?);
        } else {
            for name in names {
                if let Some(d) = roles.get(name).await? {
                    out.insert(name.clone(), d);
                }
            }
            if out.is_empty() {
                return Err(SecurityError::not_found("no such role"));
            }
        }
        Ok(out)
    }

    /// `DELETE /_security/role/{name}`: whether it existed.
    pub async fn delete_role(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteRole)?;
        let found = self.identity.roles.delete(name).await?;
        if found {
            tracing::info!(role = name, by = %principal.identity.username, "role deleted");
        }
        Ok(found)
    }
}
