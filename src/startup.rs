//! Assembling the server: open the store chosen in the settings, start the services
//! (keys, tokens, API keys, grants), build the router and bind the listener (port 0
//! allowed, so tests can run many servers at once).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::api_keys::ApiKeyService;
use crate::clock::Clock;
use crate::config::{Settings, StoreKind};
use crate::grant::GrantService;
use crate::http::{self, AppState};
use crate::store::elasticsearch::ElasticsearchStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::telemetry;
use crate::tokens::{TokenError, TokenService};
use crate::vault::JwtAuth;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error("{0}")]
    Settings(String),
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

/// The services behind the HTTP API, shared by `serve` and the CLI commands.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub api_keys: Arc<ApiKeyService>,
    pub grants: Arc<GrantService>,
    /// The Vault-compatible JWT auth method.
    pub jwt_auth: Arc<JwtAuth>,
    /// True when this start created the store.
    pub created: bool,
}

impl Services {
    pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        install_crypto_provider();
        let (store, created) = open_store(settings).await?;
        let tokens =
            TokenService::start(store.clone(), clock.clone(), settings.jwt.clone()).await?;
        let api_keys = Arc::new(ApiKeyService::new(
            store.clone(),
            clock.clone(),
            settings.api_key_cache_size,
        )?);
        let jwt_auth = Arc::new(JwtAuth::new(
            store.clone(),
            clock,
            settings.vault.clone(),
            &settings.jwt,
        ));
        let grants = Arc::new(
            GrantService::new(tokens.clone(), api_keys.clone())
                .with_oauth(settings.oauth.clone())
                .with_jwt_auth(jwt_auth.clone()),
        );
        Ok(Self {
            store,
            tokens,
            api_keys,
            grants,
            jwt_auth,
            created,
        })
    }
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    services: Services,
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
        let state = AppState {
            grants: services.grants.clone(),
            vault: services.jwt_auth.clone(),
            settings: Arc::new(settings.clone()),
            metrics: telemetry::metrics_handle(),
        };
        let router = http::router(state);
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
        })
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
        // Small token responses should leave at once, not wait for Nagle's algorithm.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        // With connection info: the Vault JWT auth method checks callers' addresses.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
        refresher.abort();
        purger.abort();
        result
    }
}
