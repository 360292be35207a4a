//! The Vault-style half of who may read and write the auth method's config and roles:
//! whoever presents the configured `vault.admin_token` (as `X-Vault-Token`, or
//! `Authorization: Bearer`); with no admin token configured, nobody through this half.
//! The other half, any principal with `manage_security` (the `elastic` superuser), is
//! checked by `http::vault::require_admin` through the authentication chain.

use subtle::ConstantTimeEq;

use super::VaultError;
use crate::config::Secret;

/// The admin-token check.
#[derive(Debug, Clone)]
pub struct AdminCheck {
    token: Option<Secret>,
}

impl AdminCheck {
    pub fn new(token: Option<Secret>) -> Self {
        Self { token }
    }

    /// Allows the presented token if it is the admin token (compared in constant time);
    /// anything else, including no token, is Vault's "permission denied".
    pub fn authorize(&self, presented: Option<&str>) -> Result<(), VaultError> {
        match (&self.token, presented) {
            (Some(expected), Some(presented))
                if bool::from(expected.expose().as_bytes().ct_eq(presented.as_bytes())) =>
            {
                Ok(())
            }
            _ => Err(VaultError::PermissionDenied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_is_admin() {
        let check = AdminCheck::new(Some(Secret::new("0123456789abcdef")));
        assert!(check.authorize(Some("0123456789abcdef")).is_ok());
        assert!(check.authorize(Some("0123456789abcdeg")).is_err());
        assert!(check.authorize(Some("")).is_err());
        assert!(check.authorize(None).is_err());
        let nobody = AdminCheck::new(None);
        assert!(nobody.authorize(Some("0123456789abcdef")).is_err());
    }
}
