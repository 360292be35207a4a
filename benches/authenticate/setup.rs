//! Filling a fresh data dir before the server starts, through the library (the same
//! calls as `fleetauth api-key create` and as the API-key grant), not over HTTP:
//!
//! 1. `ApiKeyService::create` for the first `api_keys` agents (one argon2id hash each,
//!    on the blocking pool, as many at once as there are cores);
//! 2. `agents::enroll` for all `agents` agents;
//! 3. one `TokenService::exchange(subject, Presented::ApiKey)` per agent: what the
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
//! look the client id up, it only carries it into the next pair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetauth::agents;
use fleetauth::clock::SystemClock;
use fleetauth::config::Settings;
use fleetauth::credentials::Presented as Credential;
use fleetauth::startup::Services;
use fleetauth::tokens::{Presented, Subject};
use futures::{StreamExt, TryStreamExt};

/// What the bench needs to talk to the server as its agents.
pub struct Enrolled {
    /// Per agent (by index), the refresh token of its first (pending) pair.
    pub refresh_tokens: Vec<String>,
    /// Per agent with a key (the first ones), `base64(id:key)`.
    pub api_keys: Vec<String>,
    /// How long each step took.
    pub timings: Vec<(&'static str, Duration)>,
}

pub fn agent_id(i: usize) -> String {
    format!("bench-agent-{i:05}")
}

/// How many store writes are in flight at once during setup (group commit folds them).
const WRITES_IN_FLIGHT: usize = 256;

pub async fn enroll(
    settings: &Settings,
    agents: usize,
    api_keys: usize,
    rotations: usize,
) -> Result<Enrolled, String> {
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
    futures::stream::iter(0..agents)
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
    let client_ids: Vec<String> = (0..agents)
        .map(|i| {
            keys.get(i)
                .map_or_else(|| format!("nokey{i:015}"), |k| k.id.clone())
        })
        .collect();
    let mut refresh_tokens: Vec<String> = futures::stream::iter(0..agents)
        .map(|i| {
            let tokens = services.tokens.clone();
            let (agent, client) = (agent_id(i), client_ids[i].clone());
            async move {
                let subject = Subject {
                    agent_id: &agent,
                    client_id: &client,
                    family: None,
                    bound_key: None,
                };
                tokens
                    .exchange(subject, Presented::ApiKey)
                    .await
                    .map(|pair| pair.refresh_token)
            }
        })
        .buffered(WRITES_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|e| format!("first pair: {e}"))?;
    timings.push(("issue each agent's first pair", started.elapsed()));

    let started = Instant::now();
    for _ in 0..rotations {
        refresh_tokens = futures::stream::iter(refresh_tokens)
            .map(|token| {
                let grants = services.grants.clone();
                async move {
                    grants
                        .exchange(&Credential::Bearer(token))
                        .await
                        .map(|pair| pair.refresh_token)
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

    Ok(Enrolled {
        refresh_tokens,
        api_keys: keys.into_iter().map(|k| k.encoded).collect(),
        timings,
    })
}
