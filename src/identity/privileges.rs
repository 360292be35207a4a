//! The cluster privileges of the Elasticsearch-compatible security APIs, and which
//! privilege each API needs. A minimal but real subset of Elasticsearch's model:
//!
//! | privilege                | grants                                                    |
//! |--------------------------|-----------------------------------------------------------|
//! | `all`                    | everything                                                |
//! | `manage_security`        | every security API (users, roles, any API key, tokens, service tokens) |
//! | `manage_api_key`         | create API keys; get and invalidate anyone's              |
//! | `manage_own_api_key`     | create API keys; get and invalidate one's own             |
//! | `manage_token`           | create and invalidate tokens (`/_security/oauth2/token`)  |
//! | `manage_service_account` | create, list and delete service-account tokens            |
//! | `read_security`          | read users, roles, API keys and service-account tokens    |
//! | `monitor`                | nothing here (kept for role descriptors written for Elasticsearch) |
//!
//! A set of privileges is a set of *capabilities* (bits); named privileges are unions
//! of capabilities, so "what an API key may do" is a plain intersection of its own
//! descriptors' set and its creator's.

use std::fmt;

/// A set of capabilities.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Privileges(u32);

const OWN_API_KEY: u32 = 1 << 0;
const ANY_API_KEY: u32 = 1 << 1;
const TOKEN: u32 = 1 << 2;
const SERVICE_ACCOUNT: u32 = 1 << 3;
const READ_SECURITY: u32 = 1 << 4;
const WRITE_SECURITY: u32 = 1 << 5;
const MONITOR: u32 = 1 << 6;
const EVERYTHING: u32 = (1 << 7) - 1;

/// The named cluster privileges understood here, with what they grant. Ordered from
/// the narrowest to the widest, as Elasticsearch lists them in its errors.
const NAMED: &[(&str, u32)] = &[
    ("monitor", MONITOR),
    ("manage_own_api_key", OWN_API_KEY),
    ("manage_token", TOKEN),
    ("manage_service_account", SERVICE_ACCOUNT),
    ("read_security", READ_SECURITY),
    ("manage_api_key", OWN_API_KEY | ANY_API_KEY),
    (
        "manage_security",
        OWN_API_KEY | ANY_API_KEY | TOKEN | SERVICE_ACCOUNT | READ_SECURITY | WRITE_SECURITY,
    ),
    ("all", EVERYTHING),
];

impl Privileges {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(EVERYTHING);

    /// A named cluster privilege; `None` if it is not one of [`Self::names`].
    pub fn named(name: &str) -> Option<Self> {
        NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bits)| Self(*bits))
    }

    /// Every privilege name understood.
    pub fn names() -> impl Iterator<Item = &'static str> {
        NAMED.iter().map(|(name, _)| *name)
    }

    /// The union of named privileges; the first unknown name is the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        names.into_iter().try_fold(Self::NONE, |acc, name| {
            Self::named(name)
                .map(|p| acc.union(p))
                .ok_or_else(|| name.to_string())
        })
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether these privileges allow `action`.
    pub fn allow(self, action: Action) -> bool {
        let needed = action.needs();
        needed == 0 || self.0 & needed != 0
    }
}

impl fmt::Debug for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The narrowest names that together say it.
        let names: Vec<&str> = NAMED
            .iter()
            .filter(|(_, bits)| self.0 & bits == *bits)
            .map(|(n, _)| *n)
            .collect();
        write!(f, "Privileges({})", names.join(","))
    }
}

/// The actions of the security APIs (Elasticsearch's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Authenticate,
    CreateToken,
    InvalidateToken,
    CreateApiKey,
    /// Get API keys; `any`: not only the caller's own.
    GetApiKey {
        any: bool,
    },
    /// Invalidate API keys; `any`: not only the caller's own.
    InvalidateApiKey {
        any: bool,
    },
    CreateServiceToken,
    DeleteServiceToken,
    GetServiceCredentials,
    PutUser,
    GetUser,
    DeleteUser,
    /// Change a password; `other`: another user's.
    ChangePassword {
        other: bool,
    },
    PutRole,
    GetRole,
    DeleteRole,
    /// Read or write the Vault-compatible JWT auth method's config and roles.
    ConfigureJwtAuth,
    /// Create, list and revoke Fleet enrollment tokens.
    ManageEnrollmentTokens,
    /// Revoke tokens in bulk (by agent, client, signing key or issue time).
    RevokeTokens,
}

impl Action {
    /// Elasticsearch's name of the action (as its errors say it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Authenticate => "cluster:admin/xpack/security/user/authenticate",
            Self::CreateToken => "cluster:admin/xpack/security/token/create",
            Self::InvalidateToken => "cluster:admin/xpack/security/token/invalidate",
            Self::CreateApiKey => "cluster:admin/xpack/security/api_key/create",
            Self::GetApiKey { .. } => "cluster:admin/xpack/security/api_key/get",
            Self::InvalidateApiKey { .. } => "cluster:admin/xpack/security/api_key/invalidate",
            Self::CreateServiceToken => "cluster:admin/xpack/security/service_account/token/create",
            Self::DeleteServiceToken => "cluster:admin/xpack/security/service_account/token/delete",
            Self::GetServiceCredentials => {
                "cluster:admin/xpack/security/service_account/credential/get"
            }
            Self::PutUser => "cluster:admin/xpack/security/user/put",
            Self::GetUser => "cluster:admin/xpack/security/user/get",
            Self::DeleteUser => "cluster:admin/xpack/security/user/delete",
            Self::ChangePassword { .. } => "cluster:admin/xpack/security/user/change_password",
            Self::PutRole => "cluster:admin/xpack/security/role/put",
            Self::GetRole => "cluster:admin/xpack/security/role/get",
            Self::DeleteRole => "cluster:admin/xpack/security/role/delete",
            Self::ConfigureJwtAuth => "cluster:admin/fleetauth/auth/jwt/configure",
            Self::ManageEnrollmentTokens => "cluster:admin/fleetauth/fleet/enrollment_api_keys",
            Self::RevokeTokens => "cluster:admin/fleetauth/token/revoke",
        }
    }

    /// The capabilities of which any one allows the action (0: no privilege needed).
    fn needs(self) -> u32 {
        match self {
            Self::Authenticate | Self::ChangePassword { other: false } => 0,
            Self::CreateToken | Self::InvalidateToken | Self::RevokeTokens => TOKEN,
            Self::CreateApiKey
            | Self::GetApiKey { any: false }
            | Self::InvalidateApiKey { any: false } => OWN_API_KEY,
            Self::GetApiKey { any: true } => ANY_API_KEY | READ_SECURITY,
            Self::InvalidateApiKey { any: true } => ANY_API_KEY,
            Self::CreateServiceToken | Self::DeleteServiceToken => SERVICE_ACCOUNT,
            Self::GetServiceCredentials => SERVICE_ACCOUNT | READ_SECURITY,
            Self::GetUser | Self::GetRole => READ_SECURITY,
            Self::PutUser
            | Self::DeleteUser
            | Self::PutRole
            | Self::DeleteRole
            | Self::ConfigureJwtAuth
            | Self::ManageEnrollmentTokens
            | Self::ChangePassword { other: true } => WRITE_SECURITY,
        }
    }

    /// The named privileges that grant the action, narrowest first.
    pub fn granted_by(self) -> Vec<&'static str> {
        let needed = self.needs();
        NAMED
            .iter()
            .filter(|(_, bits)| needed == 0 || bits & needed != 0)
            .map(|(name, _)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Privileges {
        Privileges::from_names(names.iter().copied()).unwrap()
    }

    #[test]
    fn wider_privileges_include_narrower_ones() {
        assert!(named(&["all"]).allow(Action::PutUser));
        assert!(named(&["manage_security"]).allow(Action::InvalidateApiKey { any: true }));
        assert!(named(&["manage_api_key"]).allow(Action::CreateApiKey));
        assert!(!named(&["manage_api_key"]).allow(Action::PutUser));
        assert!(!named(&["manage_own_api_key"]).allow(Action::GetApiKey { any: true }));
        assert!(named(&["read_security"]).allow(Action::GetApiKey { any: true }));
        assert!(!named(&["read_security"]).allow(Action::InvalidateApiKey { any: true }));
        assert!(Privileges::NONE.allow(Action::Authenticate));
        assert!(Privileges::NONE.allow(Action::ChangePassword { other: false }));
        assert!(!Privileges::NONE.allow(Action::CreateToken));
    }

    #[test]
    fn an_intersection_never_exceeds_either_side() {
        let asked = named(&["all"]);
        let creator = named(&["manage_own_api_key", "monitor"]);
        let effective = asked.intersect(creator);
        assert_eq!(effective, creator);
        assert!(!effective.allow(Action::PutUser));
        assert!(effective.allow(Action::CreateApiKey));
        assert_eq!(
            named(&["manage_token"]).intersect(named(&["manage_own_api_key"])),
            Privileges::NONE
        );
    }

    #[test]
    fn unknown_names_are_reported() {
        assert_eq!(
            Privileges::from_names(["monitor", "manage_everything"]),
            Err("manage_everything".to_string())
        );
        assert_eq!(Action::PutUser.granted_by(), vec!["manage_security", "all"]);
    }
}
