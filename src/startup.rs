//! Assembling the server: open the store chosen in the settings, start the services
//! (keys, tokens, API keys, grants), build the router and bind the listener (port 0
//! allowed, so tests can run many servers at once).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api_keys::ApiKeyService;
use crate::authentication::{Authenticator, IdentityServices};
use crate::clock::Clock;
use crate::config::{Settings, StoreKind};
use crate::enrollment::EnrollmentService;
use crate::es_api::SecurityApi;
use crate::grant::{DpopPolicy, GrantService};
use crate::http::tls::{TlsError, TlsReloader};
use crate::http::{self, AppState};
use crate::identity::users::{Bootstrapped, UserError, ELASTIC};
use crate::identity::{RoleService, ServiceAccounts, UserService};
use crate::secrets::SecretVerifier;
use crate::store::elasticsearch::ElasticsearchStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::telemetry;
use crate::tokens::dpop::DpopVerifier;
use crate::tokens::{KeyDuty, TokenError, TokenService};
use crate::vault::JwtAuth;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error("cannot create the built-in user `elastic`: {0}")]
    Bootstrap(String),
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Makes aws-lc-rs the process's rustls crypto provider (idempotent). reqwest builds
/// its default TLS config from the process provider and panics without one; the OIDC
/// discovery client of `vault::keys` names its provider itself, but any other client
/// (`reqwest::Client::new()`) needs this. Called by [`Services::start`], so every
/// command and every in-process server has it.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Opens the configured store; the flag says whether it was created just now. This is
/// the one place that chooses a backend.
pub async fn open_store(settings: &Settings) -> Result<(Arc<dyn Store>, bool), StartError> {
    match (settings.store, &settings.elasticsearch) {
        (StoreKind::Embedded, _) => {
            let (store, created) = SqliteStore::open(&settings.data_dir)?;
            Ok((Arc::new(store), created))
        }
        (StoreKind::Elasticsearch, Some(es)) => {
            let (store, created) = ElasticsearchStore::open(es).await?;
            Ok((Arc::new(store), created))
        }
        (StoreKind::Elasticsearch, None) => Err(StartError::Settings(
            "store = \"elasticsearch\" needs the elasticsearch settings".into(),
        )),
    }
}

/// Where the configured store lives, for messages (no credentials).
pub fn store_location(settings: &Settings) -> String {
    match (settings.store, &settings.elasticsearch) {
        (StoreKind::Elasticsearch, Some(es)) if es.index_prefix.is_empty() => {
            format!("Elasticsearch at {}", es.url)
        }
        (StoreKind::Elasticsearch, Some(es)) => {
            format!(
                "Elasticsearch at {} (index prefix {:?})",
                es.url, es.index_prefix
            )
        }
        _ => settings.data_dir.display().to_string(),
    }
}

/// The environment variable with the password of `elastic` for a new store (SPEC §1).
pub const BOOTSTRAP_PASSWORD_ENV: &str = "FLEETAUTH_BOOTSTRAP_PASSWORD";

/// The services behind the HTTP API, shared by `serve` and the CLI commands.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub api_keys: Arc<ApiKeyService>,
    /// The one secret verifier behind API keys, passwords and service tokens.
    pub secrets: Arc<SecretVerifier>,
    pub grants: Arc<GrantService>,
    /// The Vault-compatible JWT auth method.
    pub jwt_auth: Arc<JwtAuth>,
    /// The authentication chain of every protected resource.
    pub authenticator: Arc<Authenticator>,
    /// Users, roles and service accounts.
    pub identity: IdentityServices,
    pub security_api: Arc<SecurityApi>,
    /// Enrollment tokens and `POST /api/fleet/agents/enroll`.
    pub enrollment: Arc<EnrollmentService>,
    /// True when this start created the store.
    pub created: bool,
}

impl Services {
    /// What the HTTP handlers reach: these services and the settings.
    pub fn app_state(&self, settings: &Settings) -> AppState {
        AppState {
            grants: self.grants.clone(),
            tokens: self.tokens.clone(),
            authenticator: self.authenticator.clone(),
            vault: self.jwt_auth.clone(),
            security: self.security_api.clone(),
            enrollment: self.enrollment.clone(),
            settings: Arc::new(settings.clone()),
            metrics: telemetry::metrics_handle(),
        }
    }

    /// Opens the store and starts every service. Whichever process finds the store
    /// without the built-in user `elastic` (a new store: `serve` or a CLI command)
    /// creates it, with `settings.bootstrap_password`, else `FLEETAUTH_BOOTSTRAP_PASSWORD`,
    /// else a random password that it prints once, to stderr.
    pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        Self::start_as(settings, clock, KeyDuty::Server).await
    }

    /// [`start`](Self::start) for an admin command beside a server: the key ring is
    /// left as it is whatever this process's `jwt.algorithm` (see [`KeyDuty::Admin`]).
    pub async fn for_admin(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        Self::start_as(settings, clock, KeyDuty::Admin).await
    }

    async fn start_as(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        duty: KeyDuty,
    ) -> Result<Self, StartError> {
        install_crypto_provider();
        let (store, created) = open_store(settings).await?;
        let tokens =
            TokenService::start_as(store.clone(), clock.clone(), settings.jwt_settings(), duty)
                .await?;
        // One verifier for every kind of secret: one argon2 budget, one cache, one set
        // of failure limits.
        let secrets = Arc::new(
            SecretVerifier::new(&settings.credential_checks, settings.api_key_cache_size)
                .map_err(|e| StartError::Bootstrap(e.to_string()))?,
        );
        let api_keys = Arc::new(
            ApiKeyService::new(store.clone(), clock.clone(), secrets.clone())
                .with_last_used_interval(settings.api_key_last_used_interval),
        );
        let jwt_auth = Arc::new(JwtAuth::new(
            store.clone(),
            clock.clone(),
            settings.vault.clone(),
            &settings.jwt,
        ));
        let users = Arc::new(UserService::new(
            store.clone(),
            clock.clone(),
            secrets.clone(),
        ));
        bootstrap_elastic(&users, settings).await?;
        let identity = IdentityServices {
            users,
            roles: Arc::new(RoleService::new(store.clone(), clock.clone())),
            service_accounts: Arc::new(ServiceAccounts::new(
                store.clone(),
                clock.clone(),
                secrets.clone(),
            )),
        };
        let dpop = DpopPolicy::new(Arc::new(DpopVerifier::new(
            settings.dpop.clone(),
            clock.clone(),
            dpop_nonce_key(store.as_ref()).await?,
        )));
        let grants = Arc::new(
            GrantService::new(tokens.clone(), api_keys.clone())
                .with_oauth(settings.oauth.clone())
                .with_jwt_auth(jwt_auth.clone())
                .with_dpop(dpop.clone()),
        );
        let authenticator = Arc::new(
            Authenticator::new(
                tokens.clone(),
                api_keys.clone(),
                identity.clone(),
                settings.oauth.clone(),
            )
            .with_dpop(dpop),
        );
        let enrollment = Arc::new(EnrollmentService::new(
            store.clone(),
            api_keys.clone(),
            grants.clone(),
            clock.clone(),
            settings.enrollment,
        ));
        let security_api = Arc::new(SecurityApi::new(
            authenticator.clone(),
            identity.clone(),
            grants.clone(),
            tokens.clone(),
            api_keys.clone(),
            settings.api_key_retention,
        ));
        Ok(Self {
            store,
            tokens,
            api_keys,
            secrets,
            grants,
            authenticator,
            jwt_auth,
            identity,
            security_api,
            enrollment,
            created,
        })
    }
}

/// The meta key of the HMAC key of DPoP server nonces (shared by every instance).
const DPOP_NONCE_KEY: &str = "dpop_nonce_key";

/// The HMAC key of DPoP server nonces: created once per store, so that every instance
/// issues and accepts the same nonces.
async fn dpop_nonce_key(store: &dyn Store) -> Result<[u8; 32], StartError> {
    let mut fresh = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
    let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    let stored = store.meta_get_or_insert(DPOP_NONCE_KEY, &hex).await?;
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = stored
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("meta {DPOP_NONCE_KEY}")))?;
    }
    Ok(key)
}

/// Creates `elastic` in a store that has no such user, and says so on stderr (the
/// generated password, once; a given password is never printed).
async fn bootstrap_elastic(users: &UserService, settings: &Settings) -> Result<(), StartError> {
    let from_env = std::env::var(BOOTSTRAP_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty());
    let (password, source) = match (&settings.bootstrap_password, &from_env) {
        (Some(p), _) => (Some(p.expose()), "the bootstrap_password setting"),
        (None, Some(p)) => (Some(p.as_str()), BOOTSTRAP_PASSWORD_ENV),
        (None, None) => (None, ""),
    };
    match users.bootstrap(password).await {
        Ok(Bootstrapped::Generated(generated)) => {
            eprintln!(
                "fleetauth: created the built-in superuser `{ELASTIC}` with a generated password, shown only this once: {generated}\n\
                 fleetauth: (set {BOOTSTRAP_PASSWORD_ENV} when creating a store to choose it; change it with POST /_security/user/{ELASTIC}/_password)"
            );
            Ok(())
        }
        Ok(Bootstrapped::Given) => {
            eprintln!(
                "fleetauth: created the built-in superuser `{ELASTIC}` with the password from {source}"
            );
            Ok(())
        }
        Ok(Bootstrapped::Existed) => Ok(()),
        Err(UserError::Invalid(reason)) => Err(StartError::Bootstrap(format!(
            "the password from {source} is not acceptable: {reason}"
        ))),
        Err(e) => Err(StartError::Bootstrap(e.to_string())),
    }
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    services: Services,
    purge_interval: std::time::Duration,
    connections: crate::config::ConnectionSettings,
    /// `Some`: the server speaks TLS.
    tls: Option<Arc<TlsReloader>>,
}

/// The one start-up warning of a plain-HTTP server that others can reach (SPEC §7).
pub fn plain_http_warning(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "fleetauth: WARNING: serving plain HTTP on {listen}, which is not a loopback address: \
             credentials and tokens cross the network in clear. Set tls.cert and tls.key \
             (FLEETAUTH_TLS__CERT, FLEETAUTH_TLS__KEY; `fleetauth tls self-signed` makes a first pair)."
        )
    })
}

/// Raises this process's soft limit of open files to its hard limit, so that the
/// connection cap rather than `EMFILE` bounds the connections (as Go's runtime does).
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::debug!("cannot raise the open-file limit");
            }
        }
    }
}

impl Application {
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let services = Services::start(&settings, clock).await?;
        if services.created {
            eprintln!(
                "fleetauth: created a new store in {}. Enroll an agent with: fleetauth api-key create --agent-id <ID>",
                store_location(&settings)
            );
        }
        let router = http::router(services.app_state(&settings));
        let tls = settings
            .tls
            .as_ref()
            .map(TlsReloader::load)
            .transpose()?
            .map(Arc::new);
        if tls.is_none() {
            if let Some(warning) = plain_http_warning(settings.listen) {
                eprintln!("{warning}");
            }
        }
        raise_open_file_limit();
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
        Ok(Self {
            listener,
            router,
            addr,
            services,
            purge_interval: settings.api_key_purge_interval,
            connections: settings.connections.clone(),
            tls,
        })
    }

    /// `https` when the server speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until `shutdown` resolves; in-flight requests are finished first.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let refresher = self.services.tokens.spawn_key_refresher();
        let purger = self.services.tokens.spawn_purger();
        let remover = self
            .services
            .security_api
            .spawn_remover(self.purge_interval);
        let reloader = self.tls.clone().map(TlsReloader::spawn_reloader);
        let result = http::server::serve(
            self.listener,
            self.router,
            self.connections,
            self.tls,
            shutdown,
        )
        .await;
        refresher.abort();
        purger.abort();
        remover.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        result
    }
}
