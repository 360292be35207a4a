//! Native users, among them the built-in superuser `elastic`, whose password is set
//! when the store is first created (SPEC §1): from `FLEETAUTH_BOOTSTRAP_PASSWORD` (or
//! the `bootstrap_password` the embedding code passes), else a random one that the
//! caller prints once. Passwords are kept only as argon2id hashes, checked by the one
//! [`SecretVerifier`].

use std::sync::Arc;

use serde_json::{json, Value};

use super::{roles, Realm};
use crate::clock::Clock;
use crate::secrets::{SecretError, SecretKind, SecretVerifier, Stored};
use crate::store::{Store, StoreError, TypedWrite, UserRecord};

/// The built-in superuser.
pub const ELASTIC: &str = "elastic";
/// Elasticsearch's shortest password.
pub const MIN_PASSWORD_LEN: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unknown user")]
    Unknown,
    #[error("wrong password")]
    WrongPassword,
    #[error("the user is disabled")]
    Disabled,
    /// A request Elasticsearch would refuse in validation.
    #[error("{0}")]
    Invalid(String),
    /// A change of a built-in user other than its password.
    #[error("user [{0}] is reserved and only the password can be changed")]
    Reserved(String),
    /// Not checked now (busy, too many failures), or hashing failed on our side.
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UserError {
    /// A short label for the authentication-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unknown => "user_unknown",
            Self::WrongPassword => "user_wrong_password",
            Self::Disabled => "user_disabled",
            Self::Invalid(_) | Self::Reserved(_) => "user_invalid",
            Self::Secret(SecretError::Throttled(_)) => "throttled",
            Self::Secret(SecretError::Hashing(_)) => "hashing_failed",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// What [`UserService::bootstrap`] did.
#[derive(PartialEq, Eq)]
pub enum Bootstrapped {
    /// `elastic` existed (or another instance created it just now): nothing to show.
    Existed,
    /// Created with the given password.
    Given,
    /// Created with this generated password, to be shown once.
    Generated(String),
}

impl std::fmt::Debug for Bootstrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Existed => "Existed",
            Self::Given => "Given",
            Self::Generated(_) => "Generated([redacted])",
        })
    }
}

/// A user created or replaced through the user API (the password is required to
/// create one, optional to update one).
pub struct PutUser {
    pub username: String,
    pub password: Option<String>,
    pub roles: Vec<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub metadata: Value,
    pub enabled: bool,
}

impl std::fmt::Debug for PutUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutUser")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("roles", &self.roles)
            .finish()
    }
}

/// Elasticsearch's rules for usernames (printable ASCII, 1 to 507 characters, no
/// leading or trailing whitespace, not starting with `_`), plus no `:`, which HTTP
/// Basic cannot carry in a username.
pub fn check_username(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 507
        && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
        && name.trim() == name
        && !name.starts_with('_');
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(
            "Validation Failed: 1: usernames must be 1 to 507 printable ASCII characters, without ':', leading or trailing whitespace, and must not begin with an underscore;".into(),
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(UserError::Invalid(format!(
            "Validation Failed: 1: passwords must be at least [{MIN_PASSWORD_LEN}] characters long;"
        )));
    }
    Ok(())
}

/// The realm a user is reported in.
pub fn realm_of(user: &UserRecord) -> Realm {
    if user.reserved {
        Realm::reserved()
    } else {
        Realm::native()
    }
}

pub struct UserService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secrets: Arc<SecretVerifier>,
}

impl UserService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, secrets: Arc<SecretVerifier>) -> Self {
        Self {
            store,
            clock,
            secrets,
        }
    }

    /// Creates `elastic` if it does not exist (a new store): with `password`, or with
    /// a generated one, which is returned so that the caller shows it once. A password
    /// given here must satisfy [`check_password`].
    pub async fn bootstrap(&self, password: Option<&str>) -> Result<Bootstrapped, UserError> {
        if self
            .store
            .typed_record::<UserRecord>(ELASTIC)
            .await?
            .is_some()
        {
            return Ok(Bootstrapped::Existed);
        }
        let (password, generated) = match password {
            Some(p) => {
                check_password(p)?;
                (p.to_string(), false)
            }
            None => (crate::secrets::random_secret(24), true),
        };
        let now = self.clock.now();
        let record = UserRecord {
            username: ELASTIC.into(),
            password_hash: self.secrets.hash(&password).await?,
            roles: vec![roles::SUPERUSER.into()],
            full_name: None,
            email: None,
            metadata: json!({ "_reserved": true }),
            enabled: true,
            reserved: true,
            created_at: now,
            updated_at: now,
        };
        let before = self
            .store
            .update_typed::<UserRecord, _>(ELASTIC, move |current| match current {
                Some(_) => TypedWrite::Keep,
                None => TypedWrite::Put(record.clone()),
            })
            .await?;
        Ok(match (before.is_none(), generated) {
            (false, _) => Bootstrapped::Existed,
            (true, true) => Bootstrapped::Generated(password),
            (true, false) => Bootstrapped::Given,
        })
    }

    pub async fn get(&self, username: &str) -> Result<Option<UserRecord>, UserError> {
        Ok(self.store.typed_record::<UserRecord>(username).await?)
    }

    pub async fn all(&self) -> Result<Vec<UserRecord>, UserError> {
        Ok(self.store.typed_records::<UserRecord>(None).await?)
    }

    /// Checks a username and password; the user must be enabled.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<UserRecord, UserError> {
        let user = self.get(username).await?;
        let stored = user.as_ref().map(|u| Stored::Argon2(&u.password_hash));
        let verified = self
            .secrets
            .verify(SecretKind::Password, username, password, stored)
            .await?;
        let Some(user) = user else {
            return Err(UserError::Unknown);
        };
        if !verified {
            return Err(UserError::WrongPassword);
        }
        if !user.enabled {
            return Err(UserError::Disabled);
        }
        Ok(user)
    }

    /// Creates or updates a user; `true` when created. A new user needs a password; an
    /// update without one keeps the old one. The built-in users cannot be changed here.
    pub async fn put(&self, put: PutUser) -> Result<bool, UserError> {
        check_username(&put.username)?;
        if put.username == ELASTIC {
            return Err(UserError::Reserved(put.username));
        }
        let new_hash = match &put.password {
            Some(p) => {
                check_password(p)?;
                Some(self.secrets.hash(p).await?)
            }
            None => None,
        };
        let now = self.clock.now();
        let username = put.username.clone();
        let has_password = new_hash.is_some();
        let before = self
            .store
            .update_typed::<UserRecord, _>(&username, move |current| {
                let password_hash = match (&new_hash, current) {
                    (Some(h), _) => h.clone(),
                    (None, Some(c)) => c.password_hash.clone(),
                    (None, None) => return TypedWrite::Keep,
                };
                TypedWrite::Put(UserRecord {
                    username: put.username.clone(),
                    password_hash,
                    roles: put.roles.clone(),
                    full_name: put.full_name.clone(),
                    email: put.email.clone(),
                    metadata: put.metadata.clone(),
                    enabled: put.enabled,
                    reserved: false,
                    created_at: current.map_or(now, |c| c.created_at),
                    updated_at: now,
                })
            })
            .await?;
        if before.is_none() && !has_password {
            return Err(UserError::Invalid(
                "Validation Failed: 1: password must be specified unless you are updating an existing user;".into(),
            ));
        }
        self.secrets.forget(SecretKind::Password, &username);
        Ok(before.is_none())
    }

    /// Deletes a user; `true` if it existed. The built-in users cannot be deleted.
    pub async fn delete(&self, username: &str) -> Result<bool, UserError> {
        if username == ELASTIC {
            return Err(UserError::Reserved(username.to_string()));
        }
        let before = self
            .store
            .update_typed::<UserRecord, _>(username, |current| match current {
                Some(_) => TypedWrite::Delete,
                None => TypedWrite::Keep,
            })
            .await?;
        self.secrets.forget(SecretKind::Password, username);
        Ok(before.is_some())
    }

    /// Sets a user's password (the built-in users' too); `false` if there is no such
    /// user.
    pub async fn change_password(&self, username: &str, password: &str) -> Result<bool, UserError> {
        check_password(password)?;
        let hash = self.secrets.hash(password).await?;
        let now = self.clock.now();
        let before = self
            .store
            .update_typed::<UserRecord, _>(username, move |current| match current {
                Some(user) => TypedWrite::Put(UserRecord {
                    password_hash: hash.clone(),
                    updated_at: now,
                    ..user.clone()
                }),
                None => TypedWrite::Keep,
            })
            .await?;
        self.secrets.forget(SecretKind::Password, username);
        Ok(before.is_some())
    }
}
