//! Filling a fresh data dir before the server starts, through the library (the same
//! calls as `fleetauth api-key create` and as the API-key grant), not over HTTP:
//!
//! 1. `ApiKeyService::create` for the first `api_keys` agents (one argon2id hash each,
//!    on the blocking pool, as many at once as there are cores);
//! 2. `agents::enroll` for all `agents` agents;
//! 3. one `TokenService::exchange(subject, TradedIn::ApiKey)` per agent: what the
//!    server does for `Authorization: ApiKey` once the key has verified. It stores the
//!    agent's first pair as pending and returns it; the bench keeps its refresh token.
//!    This skips only the argon2 *verification* of that first exchange (10,000 of them
//!    would take minutes on 2 cores); the stored state is what an HTTP exchange makes.
//! 4. `rotations` rounds of `GrantService::exchange(Bearer <refresh token>)` per agent
//!    (the refresh grant, as the HTTP handler calls it), keeping each new token. With
//!    the default `MAX_RETIRED + 1` rounds every agent record carries the full list of
//!    retired refresh hashes it has in a long-running deployment, so the measured
//!    writes have their steady-state size rather than growing during the run.
//!
//! Agents without an API key of their own (index >= `api_keys`) get a pair whose
//! `client_id` is a made-up id of a real key id's length: the refresh grant does not
//! look the client id up, it only carries it into the next pair. They are split in
//! three groups of (nearly) equal size, so that no scenario invalidates another's
//! credentials: `jwt` (their last access token is used once in-process, which promotes
//! it to current, as an agent's first request with it would), `refresh` and `chain`.
//!
//! 5. Scale: agents beyond `measured` (index >= `measured`) are *filler*: written with
//!    one `Store::update_agent` each (the library's store API, group-committed), with
//!    the state the steps above leave (active, a current pair, `MAX_RETIRED` retired
//!    refresh hashes), without signing or hashing anything. The scenarios use only the
//!    first `measured` agents, so a run with 1,000,000 agents sends the same traffic as
//!    one with 10,000, against a store 100 times larger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetauth::agents;
use fleetauth::clock::SystemClock;
use fleetauth::config::Settings;
use fleetauth::credentials::Presented as Credential;
use fleetauth::startup::Services;
use fleetauth::store::{RetiredRefresh, TokenPairRecord, TokenStateRecord};
use fleetauth::tokens::rotation::MAX_RETIRED;
use fleetauth::tokens::{IssuedPair, Subject, TradedIn};
use futures::{StreamExt, TryStreamExt};

/// What the bench needs to talk to the server as its agents.
pub struct Enrolled {
    /// The `jwt` group: each agent's access token, current (promoted) in the store.
    pub access_tokens: Vec<String>,
    /// The `refresh` group: each agent's latest refresh token (of its pending pair).
    pub refresh_tokens: Vec<String>,
    /// The `chain` group, likewise.
    pub chain_tokens: Vec<String>,
    /// Per agent with a key (the first ones), `base64(id:key)`.
    pub api_keys: Vec<String>,
    /// How long each step took.
    pub timings: Vec<(&'static str, Duration)>,
}

pub fn agent_id(i: usize) -> String {
    format!("bench-agent-{i:07}")
}

/// How many store writes are in flight at once during setup (group commit folds them).
const WRITES_IN_FLIGHT: usize = 256;

pub async fn enroll(
    settings: &Settings,
    agents: usize,
    measured: usize,
    api_keys: usize,
    rotations: usize,
) -> Result<Enrolled, String> {
    let measured = measured.min(agents);
    let services = Services::start(settings, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut timings = Vec::new();

    let started = Instant::now();
    let keys: Vec<_> = futures::stream::iter(0..api_keys)
        .map(|i| {
            let api_keys = services.api_keys.clone();
            async move {
                api_keys
                    .create(&format!("bench-{i}"), Some(&agent_id(i)), None)
                    .await
            }
        })
        .buffered(cores)
        .try_collect()
        .await
        .map_err(|e| format!("api key: {e}"))?;
    timings.push(("create API keys (argon2id hash each)", started.elapsed()));

    let started = Instant::now();
    let now = services.tokens.now();
    futures::stream::iter(0..measured)
        .map(|i| {
            let store = services.store.clone();
            async move { agents::enroll(store.as_ref(), &agent_id(i), now).await }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<()>()
        .await
        .map_err(|e| format!("enroll: {e}"))?;
    timings.push(("enroll agents", started.elapsed()));

    let started = Instant::now();
    let client_ids: Vec<String> = (0..measured)
        .map(|i| {
            keys.get(i)
                .map_or_else(|| format!("nokey{i:015}"), |k| k.id.clone())
        })
        .collect();
    let mut pairs: Vec<IssuedPair> = futures::stream::iter(0..measured)
        .map(|i| {
            let tokens = services.tokens.clone();
            let (agent, client) = (agent_id(i), client_ids[i].clone());
            async move {
                let subject = Subject {
                    sub: &agent,
                    client_id: &client,
                    family: None,
                    bound_key: None,
                };
                tokens.exchange(subject, TradedIn::ApiKey).await
            }
        })
        .buffered(WRITES_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|e| format!("first pair: {e}"))?;
    timings.push(("issue each agent's first pair", started.elapsed()));

    let started = Instant::now();
    for _ in 0..rotations {
        pairs = futures::stream::iter(pairs)
            .map(|pair| {
                let grants = services.grants.clone();
                async move {
                    grants
                        .exchange(&Credential::Bearer(pair.refresh_token))
                        .await
                }
            })
            .buffered(WRITES_IN_FLIGHT)
            .try_collect()
            .await
            .map_err(|e| format!("pre-rotation: {e}"))?;
    }
    timings.push((
        "rotate each agent's pair (in-process refresh grant)",
        started.elapsed(),
    ));

    // The groups of agents without a key of their own.
    let mut rest = pairs.split_off(api_keys.min(pairs.len()));
    let third = rest.len().div_ceil(3);
    let chain = rest.split_off((2 * third).min(rest.len()));
    let refresh = rest.split_off(third.min(rest.len()));
    let jwt = rest;

    let started = Instant::now();
    let access_tokens: Vec<String> = futures::stream::iter(jwt)
        .map(|pair| {
            let tokens = services.tokens.clone();
            async move {
                let claims = tokens.verify_access(&pair.access_token).await?;
                tokens.confirm_access(&claims).await?;
                Ok::<_, fleetauth::tokens::TokenError>(pair.access_token)
            }
        })
        .buffered(WRITES_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|e| format!("promote: {e}"))?;
    timings.push((
        "promote the jwt group's pairs (in-process first use)",
        started.elapsed(),
    ));

    let started = Instant::now();
    let store = services.store.clone();
    futures::stream::iter(measured..agents)
        .map(|i| {
            let store = store.clone();
            async move {
                let id = agent_id(i);
                let record = filler(&id, now);
                store
                    .update_agent(&id, Box::new(move |_| Some(record.clone())))
                    .await
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("filler agents: {e}"))?;
    if agents > measured {
        timings.push((
            "write the filler agents (Store::update_agent)",
            started.elapsed(),
        ));
    }

    Ok(Enrolled {
        access_tokens,
        refresh_tokens: refresh.into_iter().map(|p| p.refresh_token).collect(),
        chain_tokens: chain.into_iter().map(|p| p.refresh_token).collect(),
        api_keys: keys.into_iter().map(|k| k.encoded).collect(),
        timings,
    })
}

/// A filler agent's record: what a long-running agent's looks like (a current pair,
/// a full list of retired refresh hashes), with made-up but well-formed values.
fn filler(agent_id: &str, now: fleetauth::clock::UnixTime) -> TokenStateRecord {
    let hash = |n: usize| format!("{:064x}", (n as u128) << 64 | agent_id.len() as u128);
    TokenStateRecord {
        agent_id: agent_id.to_string(),
        active: true,
        current: Some(TokenPairRecord {
            jti: uuid::Uuid::new_v4().to_string(),
            refresh_hash: hash(MAX_RETIRED + 1),
            access_expires_at: now + 1200,
            refresh_expires_at: now + 86_400,
        }),
        pending: None,
        retired: (0..MAX_RETIRED)
            .map(|n| RetiredRefresh {
                refresh_hash: hash(n),
                expires_at: now + 86_400,
            })
            .collect(),
        updated_at: now,
    }
}
