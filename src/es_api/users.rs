//! Native users (`/_security/user...`): create, read, delete, change a password.

use serde_json::{Map, Value};

use super::{RequestBody, SecurityApi, SecurityError};
use crate::authentication::Principal;
use crate::identity::users::PutUser;
use crate::identity::Action;
use crate::store::UserRecord;

/// `PUT|POST /_security/user/{username}`: the user's fields.
pub struct PutUserRequest {
    pub password: Option<String>,
    pub password_hash: Option<String>,
    pub roles: Option<Vec<String>>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
}

/// `POST|PUT /_security/user[/{username}]/_password`: the new password.
pub struct ChangePasswordRequest {
    pub password: Option<String>,
    pub password_hash: Option<String>,
}

impl SecurityApi {
    /// `PUT|POST /_security/user/{username}`: whether it was created.
    pub async fn put_user(
        &self,
        principal: &Principal,
        username: &str,
        request: RequestBody<PutUserRequest>,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::PutUser)?;
        let request = request.take()?;
        if request.password_hash.is_some() {
            return Err(SecurityError::illegal_argument(
                "[password_hash] is not supported; give a password",
            ));
        }
        let created = self
            .identity
            .users
            .put(PutUser {
                username: username.to_string(),
                password: request.password,
                roles: request.roles.unwrap_or_default(),
                full_name: request.full_name,
                email: request.email,
                metadata: Value::Object(request.metadata.unwrap_or_default()),
                enabled: request.enabled.unwrap_or(true),
            })
            .await?;
        tracing::info!(username, created, by = %principal.identity.username, "user saved");
        Ok(created)
    }

    /// `GET /_security/user[/{names}]`: the users by name (all when `names` is empty);
    /// `Err(NotFound)` when names were given and none exists.
    pub async fn get_users(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<Vec<UserRecord>, SecurityError> {
        Self::authorize(principal, Action::GetUser)?;
        let users = &self.identity.users;
        let found = if names.is_empty() {
            users.all().await?
        } else {
            let mut found = Vec::new();
            for name in names {
                if let Some(user) = users.get(name).await? {
                    found.push(user);
                }
            }
            found
        };
        if found.is_empty() && !names.is_empty() {
            return Err(SecurityError::not_found("no such user"));
        }
        Ok(found)
    }

    /// `DELETE /_security/user/{username}`: whether it existed. The user's tokens are
    /// revoked too, so that a new user of the same name never inherits them (its API
    /// keys stay, as in Elasticsearch).
    pub async fn delete_user(
        &self,
        principal: &Principal,
        username: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteUser)?;
        let found = self.identity.users.delete(username).await?;
        if found {
            for family in self.tokens.families_of(Some(username)).await? {
                self.tokens.revoke_family(&family.family_id).await?;
            }
            tracing::info!(username, by = %principal.identity.username, "user deleted");
        }
        Ok(found)
    }

    /// `POST|PUT /_security/user[/{username}]/_password`.
    pub async fn change_password(
        &self,
        principal: &Principal,
        username: Option<&str>,
        request: RequestBody<ChangePasswordRequest>,
    ) -> Result<(), SecurityError> {
        let identity = &principal.identity;
        let target = username.unwrap_or(&identity.username);
        let own = identity.is_user() && target == identity.username;
        Self::authorize(principal, Action::ChangePassword { other: !own })?;
        let request = request.take()?;
        if request.password_hash.is_some() {
            return Err(SecurityError::illegal_argument(
                "[password_hash] is not supported; give a password",
            ));
        }
        let password = request
            .password
            .ok_or_else(|| SecurityError::validation(&["password is missing".into()]))?;
        if !self
            .identity
            .users
            .change_password(target, &password)
            .await?
        {
            return Err(SecurityError::not_found(format!(
                "user [{target}] does not exist"
            )));
        }
        tracing::info!(username = target, by = %identity.username, "password changed");
        Ok(())
    }
}
