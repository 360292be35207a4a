//! The Vault-compatible JWT auth method (SPEC §4): workloads holding a JWT from another
//! issuer (a CI system, a cloud identity, an OIDC provider) log in with it, as with
//! Vault's auth method `jwt`.
//!
//! This module owns the auth method's state and rules, below the grant layer and above
//! the store: the config ([`config`]) and roles ([`role`]), typed and checked here and
//! kept in the store as small records; the keys that verify external JWTs ([`keys`]: PEM
//! keys, or an OIDC provider's JWKS with a bounded refresh); the verification of a JWT
//! for a role ([`verify`]); and the admin-token check ([`admin`]). A successful
//! [`JwtAuth::login`] yields an [`Admitted`] subject; the grant layer turns it into an
//! access token of this server (for `POST /v1/auth/jwt/login` and for the token-exchange
//! grant alike). HTTP statuses are the HTTP layer's.

pub mod admin;
pub mod config;
pub mod fields;
pub mod keys;
pub mod role;
pub mod verify;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{JwtSettings, VaultSettings};
use crate::store::{RecordKind, RecordWrite, Store, StoreError, StoredRecord};
use admin::AdminCheck;
use config::{ConfigDoc, JwtAuthConfig, KeySource};
use fields::Fields;
use keys::{KeySet, OidcKeys};
use role::{normalize_role_name, JwtRole, TtlLimits};

/// Store document kinds.
/// The id of the one config record.
const CONFIG_NAME: &str = "config";

/// Why the auth method refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Bad input, an unknown role, or a JWT that does not pass (Vault's 400s).
    #[error("{message}")]
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// A login could not choose its role (Vault's 400s); told apart from [`Self::Invalid`]
    /// because token exchange answers some of them differently (`invalid_target`).
    #[error("{message}")]
    NoRole { why: NoRole, message: String },
    /// Not the admin, or the caller's address is outside the role's `bound_cidrs`.
    #[error("permission denied")]
    PermissionDenied,
    /// The OIDC provider's keys could not be fetched and none are cached.
    #[error("the OIDC provider's keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VaultError {
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            reason,
            message: message.into(),
        }
    }

    pub fn no_role(why: NoRole, message: impl Into<String>) -> Self {
        Self::NoRole {
            why,
            message: message.into(),
        }
    }

    /// A short label for the authentication-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { reason, .. } => reason,
            Self::NoRole { why, .. } => why.reason(),
            Self::PermissionDenied => "permission_denied",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// Why a login has no role to check its JWT with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRole {
    /// The auth method has no config (nothing is set up).
    NotConfigured,
    /// No role was named and the config has no `default_role`.
    Missing,
    /// The named role is not a valid role name.
    InvalidName,
    /// No role of that name exists.
    Unknown,
}

impl NoRole {
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Missing => "missing_role",
            Self::InvalidName => "invalid_role_name",
            Self::Unknown => "unknown_role",
        }
    }
}

/// A login attempt: `POST /v1/auth/jwt/login`, or a token exchange of an external JWT.
#[derive(Clone, Copy)]
pub struct LoginAttempt<'a> {
    /// `None`: the config's `default_role`.
    pub role: Option<&'a str>,
    pub jwt: &'a str,
    /// The caller's address, for `bound_cidrs` (`None`: unknown, refused by a role that
    /// has `bound_cidrs`).
    pub remote_addr: Option<IpAddr>,
}

impl std::fmt::Debug for LoginAttempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("role", &self.role)
            .field("jwt", &"[redacted]")
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

/// A subject the auth method admitted, and what its token is to carry.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub role: String,
    /// The `user_claim` value: the `sub` of the token issued.
    pub subject: String,
    pub groups: Vec<String>,
    /// The token's policies (`default` unless the role says otherwise); its scope.
    pub policies: Vec<String>,
    /// `role` and the role's `claim_mappings`.
    pub metadata: BTreeMap<String, String>,
    /// From `ttl`/`max_ttl`/`period`, within `jwt.max_access_ttl`.
    pub lifetime: Duration,
    /// 0: unlimited.
    pub num_uses: u32,
}

impl Admitted {
    /// The policies as an OAuth2 scope (space-separated), `None` if there are none.
    pub fn scope(&self) -> Option<String> {
        (!self.policies.is_empty()).then(|| self.policies.join(" "))
    }
}

/// The config as loaded, with its keys (kept while the stored text is unchanged, so
/// cached JWKS survive between logins).
struct Loaded {
    text: String,
    doc: ConfigDoc,
    config: JwtAuthConfig,
    keys: KeySet,
}

/// The auth method: config, roles, login.
pub struct JwtAuth {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: VaultSettings,
    limits: TtlLimits,
    admin: AdminCheck,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl JwtAuth {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: VaultSettings,
        jwt: &JwtSettings,
    ) -> Self {
        Self {
            store,
            clock,
            admin: AdminCheck::new(settings.admin_token.clone()),
            settings,
            limits: TtlLimits {
                default_ttl: jwt.access_ttl,
                max_ttl: jwt.max_access_ttl,
            },
            loaded: Mutex::new(None),
        }
    }

    /// The admin check of the config and role APIs (the admin token; see [`admin`]).
    pub fn authorize_admin(&self, presented: Option<&str>) -> Result<(), VaultError> {
        self.admin.authorize(presented)
    }

    fn cached(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember(&self, loaded: Arc<Loaded>) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded);
    }

    /// Builds the keys of a checked config (no I/O).
    fn key_set(&self, config: &JwtAuthConfig) -> Result<KeySet, VaultError> {
        Ok(match &config.keys {
            KeySource::Pem(keys) => KeySet::Pem(keys.clone()),
            KeySource::Discovery { url, ca_pem } => {
                let client = keys::http_client(ca_pem.as_deref(), self.settings.http_timeout)
                    .map_err(|why| VaultError::invalid("invalid_config", why))?;
                KeySet::Oidc(Arc::new(OidcKeys::new(client, url, &self.settings)))
            }
        })
    }

    /// The JSON text of one of this auth method's stored records.
    async fn stored(&self, kind: RecordKind, id: &str) -> Result<Option<String>, StoreError> {
        let record = self.store.record(kind, id).await?;
        Ok(record.map(|record| record.body.to_string()))
    }

    /// Stores (creates or replaces) one of this auth method's records; returns the text
    /// as [`stored`](Self::stored) will read it back.
    async fn store_json(
        &self,
        kind: RecordKind,
        id: &str,
        text: &str,
    ) -> Result<String, StoreError> {
        let body: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let canonical = body.to_string();
        let record = StoredRecord {
            id: id.to_string(),
            owner: None,
            purge_after: None,
            body,
        };
        self.store
            .update_record(
                kind,
                id,
                Box::new(move |_| RecordWrite::Put(record.clone())),
            )
            .await?;
        Ok(canonical)
    }

    /// The stored config, parsed (and its keys) if it changed since last time.
    async fn load(&self) -> Result<Option<Arc<Loaded>>, VaultError> {
        let Some(text) = self.stored(RecordKind::JwtAuthConfig, CONFIG_NAME).await? else {
            return Ok(None);
        };
        if let Some(cached) = self.cached().filter(|c| c.text == text) {
            return Ok(Some(cached));
        }
        let doc: ConfigDoc = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("vault jwt config: {e}")))?;
        let config = doc.check()?;
        let keys = self.key_set(&config)?;
        let loaded = Arc::new(Loaded {
            text,
            doc,
            config,
            keys,
        });
        self.remember(loaded.clone());
        Ok(Some(loaded))
    }

    /// `POST /v1/auth/jwt/config`: checks the body (and, for discovery, that the
    /// provider answers with a usable JWKS), then stores it. Returns warnings.
    pub async fn write_config(&self, body: &Fields) -> Result<Vec<String>, VaultError> {
        let (doc, ignored) = ConfigDoc::from_request(body)?;
        let config = doc.check()?;
        let keys = self.key_set(&config)?;
        if let KeySet::Oidc(remote) = &keys {
            match remote.refresh_now(self.clock.now()).await {
                Ok(0) => {
                    return Err(VaultError::invalid(
                        "invalid_config",
                        "error checking oidc discovery URL: the provider's JWKS has no usable signing key",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(VaultError::invalid(
                        "invalid_config",
                        format!("error checking oidc discovery URL: {e}"),
                    ))
                }
            }
        }
        let text = serde_json::to_string(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let text = self
            .store_json(RecordKind::JwtAuthConfig, CONFIG_NAME, &text)
            .await?;
        // The keys just fetched serve the next logins.
        self.remember(Arc::new(Loaded {
            text,
            doc,
            config,
            keys,
        }));
        tracing::info!("vault jwt auth config written");
        Ok(ignored_warning(ignored))
    }

    /// `GET /v1/auth/jwt/config`: `None` when not configured.
    pub async fn read_config(&self) -> Result<Option<serde_json::Value>, VaultError> {
        Ok(self.load().await?.map(|loaded| loaded.doc.read_data()))
    }

    async fn role(&self, name: &str) -> Result<Option<JwtRole>, VaultError> {
        let Some(text) = self.stored(RecordKind::JwtAuthRole, name).await? else {
            return Ok(None);
        };
        let role = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("vault jwt role {name}: {e}")))?;
        Ok(Some(role))
    }

    /// `POST /v1/auth/jwt/role/:name`: creates the role, or changes the fields the body
    /// names. Returns warnings.
    pub async fn write_role(&self, name: &str, body: &Fields) -> Result<Vec<String>, VaultError> {
        let name = normalize_role_name(name)?;
        let existing = self.role(&name).await?;
        let (role, warnings) = JwtRole::apply(existing, body, self.limits)?;
        let text = serde_json::to_string(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store_json(RecordKind::JwtAuthRole, &name, &text)
            .await?;
        tracing::info!(role = %name, "vault jwt role written");
        Ok(warnings)
    }

    /// `GET /v1/auth/jwt/role/:name`: `None` when there is no such role.
    pub async fn read_role(&self, name: &str) -> Result<Option<serde_json::Value>, VaultError> {
        let name = normalize_role_name(name)?;
        Ok(self.role(&name).await?.map(|role| role.read_data()))
    }

    /// `DELETE /v1/auth/jwt/role/:name` (deleting a missing role is not an error, as in
    /// Vault). Tokens already issued through the role stay valid until they expire.
    pub async fn delete_role(&self, name: &str) -> Result<(), VaultError> {
        let name = normalize_role_name(name)?;
        let deleted = self
            .store
            .update_record(
                RecordKind::JwtAuthRole,
                &name,
                Box::new(|current| match current {
                    Some(_) => RecordWrite::Delete,
                    None => RecordWrite::Keep,
                }),
            )
            .await?;
        if deleted.is_some() {
            tracing::info!(role = %name, "vault jwt role deleted");
        }
        Ok(())
    }

    /// `LIST /v1/auth/jwt/role`.
    pub async fn list_roles(&self) -> Result<Vec<String>, VaultError> {
        let roles = self.store.records(RecordKind::JwtAuthRole, None).await?;
        Ok(roles.into_iter().map(|record| record.id).collect())
    }

    /// Checks a login attempt, in Vault's order: the config, the role, the JWT's
    /// presence, the caller's address (`bound_cidrs`: permission denied), then the JWT
    /// itself and the role's bindings.
    pub async fn login(&self, attempt: LoginAttempt<'_>) -> Result<Admitted, VaultError> {
        let loaded = self.load().await?.ok_or_else(|| {
            VaultError::no_role(NoRole::NotConfigured, "could not load configuration")
        })?;
        let role_name = match attempt.role.filter(|r| !r.is_empty()) {
            Some(name) => normalize_role_name(name)?,
            None => loaded
                .config
                .default_role
                .clone()
                .ok_or_else(|| VaultError::no_role(NoRole::Missing, "missing role"))?,
        };
        let role = self.role(&role_name).await?.ok_or_else(|| {
            VaultError::no_role(
                NoRole::Unknown,
                format!("role {role_name:?} could not be found"),
            )
        })?;
        if role.role_type == "oidc" {
            // As Vault: an OIDC role is for the browser login flow only.
            return Err(VaultError::invalid(
                "oidc_role",
                "role with oidc role_type is not allowed",
            ));
        }
        if attempt.jwt.is_empty() {
            return Err(VaultError::invalid("missing_token", "missing token"));
        }
        let networks = role.bound_networks();
        if !networks.is_empty() {
            let allowed = attempt
                .remote_addr
                .is_some_and(|ip| networks.iter().any(|net| net.contains(&ip.to_canonical())));
            if !allowed {
                tracing::debug!(role = %role_name, "login refused: caller outside bound_cidrs");
                return Err(VaultError::PermissionDenied);
            }
        }
        let now = self.clock.now();
        let claims =
            verify::verify_signature(attempt.jwt, &loaded.config, &loaded.keys, now).await?;
        verify::check_times(&claims, &role, now)?;
        verify::check_bindings(&claims, &loaded.config, &role)?;
        verify::check_bound_claims(&claims, &role)?;
        let identity = verify::identity(&claims, &role)?;
        let mut metadata = identity.metadata;
        metadata.insert("role".into(), role_name.clone());
        Ok(Admitted {
            lifetime: role.lifetime(self.limits),
            num_uses: role.token_num_uses,
            policies: role.policies(),
            role: role_name,
            subject: identity.user,
            groups: identity.groups,
            metadata,
        })
    }
}

fn ignored_warning(mut ignored: Vec<String>) -> Vec<String> {
    if ignored.is_empty() {
        return Vec::new();
    }
    ignored.sort();
    vec![format!(
        "Endpoint ignored these unrecognized parameters: [{}]",
        ignored.join(" ")
    )]
}
