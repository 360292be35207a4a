//! The store conformance suite (SPEC §5): the same cases against every backend.
//!
//! Each case is an async fn taking a [`Fixture`], one shared store that the case can
//! open several times (each `open()` is another instance of fleetauth on the same
//! store: another SQLite connection set on the same file, another client of the same
//! cluster). The `conformance!` macro runs every case against:
//!
//! - `sqlite`: the embedded store in a temporary data dir;
//! - `es_standin`: the Elasticsearch store against the in-process stand-in
//!   (`es_standin.rs`; not a real cluster);
//! - `real_elasticsearch`: a real Elasticsearch node (`FLEETAUTH_TEST_ES_URL`, e.g.
//!   `http://elastic:changeme@localhost:9200`, or the node `scripts/elasticsearch.sh`
//!   starts: see `real_es.rs`), each case under a fresh index prefix that is deleted
//!   afterwards. No node → these tests fail; they are never skipped.

use std::sync::Arc;

use fleetauth::clock::{ManualClock, UnixTime};
use fleetauth::config::{ElasticsearchSettings, Settings, StoreKind};
use fleetauth::startup::open_store;
use fleetauth::store::elasticsearch::mappings::Indices;
use fleetauth::store::{
    ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, RecordKind, RecordWrite, RetiredRefresh, RoleRecord,
    ServiceTokenRecord, SigningKeyRecord, Store, StoreError, StoredRecord, TokenFamilyRecord,
    TokenPairRecord, TokenStateRecord, TypedWrite, UserRecord,
};
use futures::future::join_all;
use serde_json::Value;

use crate::es_standin::EsStandIn;
use crate::helpers::{pair_from, race_winners, spawn_app, spawn_app_for, spawn_app_on};

/// One store shared by everything a case opens.
pub struct Fixture {
    pub settings: Settings,
    _dir: tempfile::TempDir,
    _standin: Option<EsStandIn>,
}

impl Fixture {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            settings: crate::helpers::test_settings(dir.path()),
            _dir: dir,
            _standin: None,
        }
    }

    pub async fn es_standin() -> Self {
        let standin = EsStandIn::start().await;
        let es = ElasticsearchSettings::for_url(&standin.url()).expect("stand-in settings");
        let mut fixture = Self::elasticsearch(es);
        fixture._standin = Some(standin);
        fixture
    }

    /// A fresh index prefix on the cluster at `url`.
    pub fn real_elasticsearch(url: &str) -> Self {
        let mut es =
            ElasticsearchSettings::for_url(url).expect("FLEETAUTH_TEST_ES_URL is a usable URL");
        es.index_prefix = format!("fleetauth-test-{}", uuid::Uuid::new_v4().simple());
        es.timeout = std::time::Duration::from_secs(30);
        Self::elasticsearch(es)
    }

    fn elasticsearch(es: ElasticsearchSettings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = crate::helpers::test_settings(dir.path());
        settings.store = StoreKind::Elasticsearch;
        settings.elasticsearch = Some(es);
        Self {
            settings,
            _dir: dir,
            _standin: None,
        }
    }

    /// Another instance on the shared store.
    pub async fn open(&self) -> Arc<dyn Store> {
        open_store(&self.settings).await.expect("the store opens").0
    }

    /// Deletes the indices of a real-cluster fixture (best effort).
    async fn delete_real_indices(&self, url: &str) {
        use elasticsearch::http::transport::Transport;
        use elasticsearch::indices::IndicesDeleteParts;
        let Some(es) = &self.settings.elasticsearch else {
            return;
        };
        let indices = Indices::new(&es.index_prefix);
        let names = indices.all();
        let Ok(transport) = Transport::single_node(url) else {
            return;
        };
        let client = elasticsearch::Elasticsearch::new(transport);
        let _ = client
            .indices()
            .delete(IndicesDeleteParts::Index(&names))
            .send()
            .await;
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Fixture::sqlite().await).await;
                }
            )*
        }

        mod es_standin {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Fixture::es_standin().await).await;
                }
            )*
        }

        /// Every case against a real Elasticsearch node (`crate::real_es::url`: never
        /// skipped), each under a fresh index prefix that is deleted afterwards.
        mod real_elasticsearch {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let url = crate::real_es::url();
                    let fixture = super::Fixture::real_elasticsearch(&url);
                    super::$case(&fixture).await;
                    fixture.delete_real_indices(&url).await;
                }
            )*
        }
    };
}

conformance!(
    meta_values_are_kept_for_the_life_of_the_store,
    agent_records_round_trip_and_are_seen_by_every_instance,
    update_agent_loses_no_concurrent_change,
    api_keys_round_trip_and_are_invalidated_once,
    invalidating_an_agents_keys_finds_keys_created_just_before,
    the_first_signing_key_race_has_one_winner,
    rotation_retires_the_signing_key_and_keeps_it_verifying,
    a_scheduled_rotation_has_one_winner_and_keeps_the_old_key_signing_until_its_time,
    odd_record_ids_are_distinct_records,
    agent_ids_list_every_agent_created_just_before,
    an_expired_signing_key_leaves_the_ring_at_once,
    two_servers_on_one_store_racing_refreshes_leave_one_usable_pair,
    api_keys_with_owners_are_listed_by_name_and_owner,
    api_keys_past_their_retention_are_purged,
    security_records_round_trip_and_are_deleted_by_a_change,
    security_records_are_listed_by_owner_including_ones_created_just_before,
    update_record_loses_no_concurrent_change,
    records_past_purge_after_are_purged,
    opaque_records_of_the_vault_auth_method_round_trip,
    enrolled_agent_records_round_trip_and_are_listed_by_policy,
);

/// The usual way to run two servers on one embedded store: the second started on the
/// first's data dir. Each serves what the other issued.
#[tokio::test]
async fn a_server_started_on_another_servers_data_dir_shares_its_store() {
    let one = spawn_app().await;
    let _keep_dir = one.dir_guard();
    let two = spawn_app_on(&one.data_dir(), one.clock.clone()).await;
    assert_eq!(two.settings.data_dir, one.settings.data_dir);
    let key = one.enroll("neighbour").await;

    let pair = two.pair_with_api_key(&key).await;

    assert_eq!(one.whoami_status(&pair.access_token).await, 200);
    let next = pair_from(one.refresh(&pair.refresh_token).await).await;
    assert_eq!(two.whoami_status(&next.access_token).await, 200);
    one.stop().await;
    two.stop().await;
}

// ---- records ----

const T0: UnixTime = 1_700_000_000;

fn token_pair(n: u32) -> TokenPairRecord {
    TokenPairRecord {
        jti: format!("jti-{n}"),
        refresh_hash: format!("{n:064x}"),
        access_expires_at: T0 + 1200,
        refresh_expires_at: T0 + 86_400,
    }
}

fn api_key(id: &str, agent_id: Option<&str>) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_string(),
        name: format!("key {id}"),
        agent_id: agent_id.map(str::to_string),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
        created_at: T0,
        expires_at: Some(T0 + 3600),
        invalidated_at: None,
        owner: None,
    }
}

fn owned_key(id: &str, name: &str, username: &str, realm: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        name: name.to_string(),
        expires_at: None,
        owner: Some(ApiKeyOwner {
            username: username.to_string(),
            realm: realm.to_string(),
            realm_type: "native".to_string(),
            role_descriptors: serde_json::json!({ "r": { "cluster": ["manage_own_api_key"], "indices": [{"names": ["x"], "privileges": ["read"]}] } }),
            limited_by: serde_json::json!([{ "role": { "cluster": ["all"] } }]),
            metadata: serde_json::json!({ "env": "test", "nested": { "n": 1 } }),
        }),
        ..api_key(id, None)
    }
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
        roles: vec!["superuser".into(), "viewer".into()],
        full_name: Some(format!("User {name}")),
        email: None,
        metadata: serde_json::json!({ "team": ["a", "b"], "deep": { "x": true } }),
        enabled: true,
        reserved: false,
        created_at: T0,
        updated_at: T0,
    }
}

fn family(id: &str, username: &str, refresh_expires_at: UnixTime) -> TokenFamilyRecord {
    let mut state = TokenStateRecord::enrolled(id, T0);
    state.pending = Some(TokenPairRecord {
        refresh_expires_at,
        access_expires_at: T0 + 10,
        ..token_pair(1)
    });
    TokenFamilyRecord {
        family_id: id.to_string(),
        username: username.to_string(),
        realm: "default_native".into(),
        realm_type: "native".into(),
        created_at: T0,
        state,
    }
}

fn signing_key(kid: &str, created_at: UnixTime) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_string(),
        algorithm: "EdDSA".to_string(),
        private_der: kid.bytes().chain([0, 1, 2, 255]).collect(),
        created_at,
        retired_at: None,
        verify_until: None,
    }
}

fn kids(keys: &[SigningKeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.kid.as_str()).collect()
}

// ---- cases ----

async fn meta_values_are_kept_for_the_life_of_the_store(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);

    assert_eq!(
        a.meta_get_or_insert("deployment_id", "first")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        b.meta_get_or_insert("deployment_id", "second")
            .await
            .unwrap(),
        "first"
    );

    let raced = join_all((0..8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .meta_get_or_insert("raced", &format!("value-{i}"))
                .await
                .unwrap()
        }
    }))
    .await;
    assert!(
        raced.iter().all(|v| v == &raced[0]),
        "one value wins the race: {raced:?}"
    );
    assert_eq!(
        a.meta_get_or_insert("raced", "late").await.unwrap(),
        raced[0]
    );
}

async fn agent_records_round_trip_and_are_seen_by_every_instance(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    assert_eq!(a.agent("agent-1").await.unwrap(), None);
    let full = TokenStateRecord {
        agent_id: "agent-1".into(),
        active: true,
        current: Some(token_pair(1)),
        pending: Some(token_pair(2)),
        retired: vec![
            RetiredRefresh {
                refresh_hash: format!("{:064x}", 9),
                expires_at: T0 + 10,
            },
            RetiredRefresh {
                refresh_hash: format!("{:064x}", 8),
                expires_at: T0 + 5,
            },
        ],
        updated_at: T0,
    };

    let write = full.clone();
    let before = a
        .update_agent("agent-1", Box::new(move |_| Some(write.clone())))
        .await
        .unwrap();

    assert_eq!(before, None, "the change was given the absent record");
    assert_eq!(
        b.agent("agent-1").await.unwrap(),
        Some(full.clone()),
        "another instance reads it at once"
    );

    // A change that returns None writes nothing and reports what it saw.
    assert_eq!(
        b.update_agent("agent-1", Box::new(|_| None)).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(a.agent("agent-1").await.unwrap(), Some(full.clone()));

    let before = b
        .update_agent(
            "agent-1",
            Box::new(|r| {
                r.map(|r| TokenStateRecord {
                    active: false,
                    current: None,
                    pending: None,
                    ..r.clone()
                })
            }),
        )
        .await
        .unwrap();
    assert_eq!(before, Some(full.clone()));
    let after = a.agent("agent-1").await.unwrap().unwrap();
    assert_eq!(
        after,
        TokenStateRecord {
            active: false,
            current: None,
            pending: None,
            ..full
        }
    );

    // The smallest record round-trips too.
    let enrolled = TokenStateRecord::enrolled("agent-2", T0);
    let write = enrolled.clone();
    a.update_agent("agent-2", Box::new(move |_| Some(write.clone())))
        .await
        .unwrap();
    assert_eq!(b.agent("agent-2").await.unwrap(), Some(enrolled));
}

/// 50 increments through the change closure, from 5 instances at once: none is lost,
/// and each applied change was given a different state (no two winners).
async fn update_agent_loses_no_concurrent_change(fx: &Fixture) {
    const INSTANCES: usize = 5;
    const CHANGES: i64 = 50;
    let mut stores = Vec::new();
    for _ in 0..INSTANCES {
        stores.push(fx.open().await);
    }
    stores[0]
        .update_agent(
            "counter",
            Box::new(|_| Some(TokenStateRecord::enrolled("counter", 0))),
        )
        .await
        .unwrap();

    let tasks = (0..CHANGES).map(|i| {
        let store = stores[i as usize % INSTANCES].clone();
        tokio::spawn(async move {
            store
                .update_agent(
                    "counter",
                    Box::new(|r| {
                        r.map(|r| TokenStateRecord {
                            updated_at: r.updated_at + 1,
                            ..r.clone()
                        })
                    }),
                )
                .await
        })
    });
    let results = join_all(tasks).await;

    let mut seen: Vec<i64> = results
        .into_iter()
        .map(|joined| {
            joined
                .expect("task")
                .expect("every change is applied")
                .expect("the record exists")
                .updated_at
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..CHANGES).collect::<Vec<_>>(),
        "each change decided on a distinct state"
    );
    assert_eq!(
        stores[1]
            .agent("counter")
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        CHANGES
    );
}

async fn api_keys_round_trip_and_are_invalidated_once(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);

    a.insert_api_key(api_key("k1", Some("agent-1")))
        .await
        .unwrap();

    assert_eq!(
        b.api_key("k1").await.unwrap(),
        Some(api_key("k1", Some("agent-1")))
    );
    assert_eq!(a.api_key("missing").await.unwrap(), None);
    let duplicate = b.insert_api_key(api_key("k1", None)).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(
        a.api_key("k1").await.unwrap(),
        Some(api_key("k1", Some("agent-1"))),
        "not overwritten"
    );

    assert!(a.invalidate_api_key("k1", T0 + 1).await.unwrap());
    assert!(
        !b.invalidate_api_key("k1", T0 + 2).await.unwrap(),
        "already invalidated"
    );
    assert!(!b.invalidate_api_key("missing", T0 + 2).await.unwrap());
    assert_eq!(
        b.api_key("k1").await.unwrap().unwrap().invalidated_at,
        Some(T0 + 1)
    );

    let keyless = ApiKeyRecord {
        expires_at: None,
        ..api_key("k2", None)
    };
    a.insert_api_key(keyless.clone()).await.unwrap();
    assert_eq!(b.api_key("k2").await.unwrap(), Some(keyless));
}

/// Unenrolling invalidates every key of the agent, including one created by another
/// instance just before (a search that missed it would leave a live key).
async fn invalidating_an_agents_keys_finds_keys_created_just_before(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    for id in ["a1", "a2", "a3"] {
        a.insert_api_key(api_key(id, Some("agent-a")))
            .await
            .unwrap();
    }
    a.insert_api_key(api_key("other", Some("agent-b")))
        .await
        .unwrap();
    a.insert_api_key(api_key("none", None)).await.unwrap();
    assert!(a.invalidate_api_key("a3", T0 + 1).await.unwrap());

    assert_eq!(
        b.invalidate_agent_api_keys("agent-a", T0 + 5)
            .await
            .unwrap(),
        2
    );

    for id in ["a1", "a2"] {
        assert_eq!(
            a.api_key(id).await.unwrap().unwrap().invalidated_at,
            Some(T0 + 5),
            "{id}"
        );
    }
    assert_eq!(
        a.api_key("a3").await.unwrap().unwrap().invalidated_at,
        Some(T0 + 1),
        "kept its first invalidation"
    );
    assert_eq!(
        a.api_key("other").await.unwrap().unwrap().invalidated_at,
        None
    );
    assert_eq!(
        a.api_key("none").await.unwrap().unwrap().invalidated_at,
        None
    );
    assert_eq!(
        a.invalidate_agent_api_keys("agent-a", T0 + 6)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        a.invalidate_agent_api_keys("nobody", T0 + 6).await.unwrap(),
        0
    );

    // A key created right after is found by the next unenrollment.
    b.insert_api_key(api_key("a4", Some("agent-a")))
        .await
        .unwrap();
    assert_eq!(
        a.invalidate_agent_api_keys("agent-a", T0 + 7)
            .await
            .unwrap(),
        1
    );
}

async fn the_first_signing_key_race_has_one_winner(fx: &Fixture) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(fx.open().await);
    }

    let winners = join_all((0..12).map(|i| {
        let store = stores[i % stores.len()].clone();
        async move {
            store
                .insert_first_signing_key(signing_key(&format!("kid-{i}"), T0 + i as i64))
                .await
                .unwrap()
        }
    }))
    .await;

    assert!(
        winners.iter().all(|k| k == &winners[0]),
        "every instance signs with the same key"
    );
    let keys = stores[0].signing_keys(T0 + 100).await.unwrap();
    assert_eq!(
        keys,
        vec![winners[0].clone()],
        "exactly one key, stored as returned (private key included)"
    );
    assert_eq!(keys[0].retired_at, None);
    // Later starts keep it.
    assert_eq!(
        stores[3]
            .insert_first_signing_key(signing_key("late", T0 + 50))
            .await
            .unwrap(),
        winners[0]
    );
}

async fn rotation_retires_the_signing_key_and_keeps_it_verifying(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    assert_eq!(a.signing_keys(T0).await.unwrap(), vec![]);
    a.insert_first_signing_key(signing_key("k1", T0))
        .await
        .unwrap();

    b.rotate_signing_key(signing_key("k2", T0 + 10), T0 + 110)
        .await
        .unwrap();

    let keys = a.signing_keys(T0 + 10).await.unwrap();
    assert_eq!(kids(&keys), ["k2", "k1"], "newest first");
    assert_eq!(
        (keys[0].retired_at, keys[0].verify_until),
        (None, None),
        "k2 signs"
    );
    assert_eq!(
        (keys[1].retired_at, keys[1].verify_until),
        (Some(T0 + 10), Some(T0 + 110)),
        "k1 verifies"
    );
    assert_eq!(
        a.insert_first_signing_key(signing_key("k3", T0 + 20))
            .await
            .unwrap()
            .kid,
        "k2"
    );
    assert_eq!(kids(&b.signing_keys(T0 + 109).await.unwrap()), ["k2", "k1"]);
    assert_eq!(
        kids(&b.signing_keys(T0 + 110).await.unwrap()),
        ["k2"],
        "k1 has passed verify_until"
    );

    let before = a.signing_keys(T0 + 30).await.unwrap();
    let duplicate = a
        .rotate_signing_key(signing_key("k2", T0 + 30), T0 + 130)
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    let after = a.signing_keys(T0 + 30).await.unwrap();
    assert_eq!(after, before, "a refused rotation changes nothing");

    // Two instances rotating at once: afterwards exactly one key signs.
    let (x, y) = tokio::join!(
        a.rotate_signing_key(signing_key("k4", T0 + 40), T0 + 140),
        b.rotate_signing_key(signing_key("k5", T0 + 41), T0 + 141)
    );
    x.unwrap();
    y.unwrap();
    let keys = b.signing_keys(T0 + 41).await.unwrap();
    let signing: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(signing.len(), 1, "one signing key: {:?}", kids(&keys));
    assert!(keys.iter().any(|k| k.kid == "k2" && k.retired_at.is_some()));
}

async fn a_scheduled_rotation_has_one_winner_and_keeps_the_old_key_signing_until_its_time(
    fx: &Fixture,
) {
    let (a, b, c) = (fx.open().await, fx.open().await, fx.open().await);
    a.insert_first_signing_key(signing_key("k1", T0))
        .await
        .unwrap();

    // Three instances find the rotation due at once; each proposes its own next key.
    let (x, y, z) = tokio::join!(
        a.schedule_signing_key(signing_key("n-a", T0 + 100), "k1", T0 + 200),
        b.schedule_signing_key(signing_key("n-b", T0 + 100), "k1", T0 + 200),
        c.schedule_signing_key(signing_key("n-c", T0 + 100), "k1", T0 + 200),
    );
    let won = [x.unwrap(), y.unwrap(), z.unwrap()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "one winner: {won:?}");

    let keys = c.signing_keys(T0 + 50).await.unwrap();
    assert_eq!(keys.len(), 2, "{:?}", kids(&keys));
    let (next, old) = (&keys[0], &keys[1]);
    assert!(next.kid.starts_with("n-"));
    assert_eq!(
        (next.created_at, next.retired_at, next.verify_until),
        (T0 + 100, None, None),
        "the next key is stored, to sign from its created_at"
    );
    assert_eq!(
        (old.kid.as_str(), old.retired_at, old.verify_until),
        ("k1", Some(T0 + 100), Some(T0 + 200)),
        "the old key's retirement is scheduled at the next key's start"
    );

    // Once scheduled, the expected key is no longer the newest: nothing changes.
    assert!(!a
        .schedule_signing_key(signing_key("late", T0 + 100), "k1", T0 + 200)
        .await
        .unwrap());
    assert_eq!(b.signing_keys(T0 + 50).await.unwrap(), keys);
    // A rotation from the next key, once it is the newest, is accepted.
    assert!(b
        .schedule_signing_key(signing_key("k3", T0 + 300), &next.kid, T0 + 400)
        .await
        .unwrap());
    assert_eq!(
        kids(&a.signing_keys(T0 + 201).await.unwrap())[..2],
        ["k3", next.kid.as_str()],
        "k1 has passed its verify_until"
    );
    // An unknown expected key changes nothing either.
    assert!(!c
        .schedule_signing_key(signing_key("x", T0 + 500), "nope", T0 + 600)
        .await
        .unwrap());
}

async fn agent_ids_list_every_agent_created_just_before(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    assert_eq!(a.agent_ids().await.unwrap(), Vec::<String>::new());
    for id in ["b-agent", "a-agent", "c.agent"] {
        a.update_agent(
            id,
            Box::new({
                let id = id.to_string();
                move |_| Some(TokenStateRecord::enrolled(&id, T0))
            }),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        b.agent_ids().await.unwrap(),
        ["a-agent", "b-agent", "c.agent"],
        "every agent whose creation returned, by id"
    );
}

async fn an_expired_signing_key_leaves_the_ring_at_once(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    a.insert_first_signing_key(signing_key("k1", T0))
        .await
        .unwrap();
    a.rotate_signing_key(signing_key("k2", T0 + 10), T0 + 1000)
        .await
        .unwrap();
    assert!(b.expire_signing_key("k1", T0 + 20).await.unwrap());
    assert_eq!(kids(&a.signing_keys(T0 + 20).await.unwrap()), ["k2"]);
    assert!(
        !a.expire_signing_key("k1", T0 + 21).await.unwrap(),
        "already gone"
    );
    assert!(!a.expire_signing_key("nope", T0 + 21).await.unwrap());
    assert!(b.expire_signing_key("k2", T0 + 30).await.unwrap());
    assert_eq!(a.signing_keys(T0 + 30).await.unwrap(), vec![]);
}

async fn odd_record_ids_are_distinct_records(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    let ids = [
        ".",
        "..",
        "%2E",
        "%2E%2E",
        "a/b",
        "a?b=c",
        "ü-agent",
        "_underscore",
        &"x".repeat(128),
    ];
    for (i, id) in ids.iter().enumerate() {
        let record = TokenStateRecord {
            updated_at: i as i64,
            ..TokenStateRecord::enrolled(id, 0)
        };
        a.update_agent(id, Box::new(move |_| Some(record.clone())))
            .await
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let record = b
            .agent(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} was stored"));
        assert_eq!(
            (record.agent_id.as_str(), record.updated_at),
            (*id, i as i64)
        );
    }
    let too_long = "y".repeat(600);
    assert_eq!(a.agent(&too_long).await.unwrap(), None);
    assert_eq!(a.agent("").await.unwrap(), None);
    assert_eq!(a.api_key("..").await.unwrap(), None);
    assert!(!a.invalidate_api_key("..", T0).await.unwrap());
}

/// SPEC §3 across servers: two instances share the store; concurrent refreshes with one
/// refresh token, spread over both, leave exactly one usable pair and no 5xx.
async fn two_servers_on_one_store_racing_refreshes_leave_one_usable_pair(fx: &Fixture) {
    let clock = Arc::new(ManualClock::starting_now());
    let one = spawn_app_for(fx.settings.clone(), clock.clone()).await;
    let two = spawn_app_for(fx.settings.clone(), clock.clone()).await;
    let servers = [&one, &two];
    let key = one.enroll("shared-agent").await;
    let start = one.pair_with_api_key(&key).await;
    assert_eq!(
        two.whoami_status(&start.access_token).await,
        200,
        "the other server accepts and promotes it"
    );

    let responses = join_all((0..20).map(|i| servers[i % 2].refresh(&start.refresh_token))).await;

    let pairs = race_winners(responses).await;
    assert!(!pairs.is_empty());
    let mut usable = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        if servers[i % 2].whoami_status(&pair.access_token).await == 200 {
            usable.push(pair.clone());
        }
    }
    assert_eq!(usable.len(), 1, "exactly one returned pair is usable");
    for pair in pairs
        .iter()
        .filter(|p| p.access_token != usable[0].access_token)
    {
        for server in servers {
            let refused = server.refresh(&pair.refresh_token).await;
            assert_eq!(refused.status(), 401);
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["error"], "invalid_grant");
        }
    }
    assert_eq!(
        one.whoami_status(&usable[0].access_token).await,
        200,
        "no false alarm revoked the agent"
    );
    assert_eq!(two.refresh(&usable[0].refresh_token).await.status(), 200);
    one.stop().await;
    two.stop().await;
}

// ---- Elasticsearch-compatible security records ----

async fn api_keys_with_owners_are_listed_by_name_and_owner(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    a.insert_api_key(owned_key("k1", "deploy", "alice", "default_native"))
        .await
        .unwrap();
    b.insert_api_key(owned_key("k2", "deploy", "bob", "default_native"))
        .await
        .unwrap();
    a.insert_api_key(owned_key("k3", "ci", "alice", "default_native"))
        .await
        .unwrap();
    b.insert_api_key(owned_key("k4", "ci", "alice", "other_realm"))
        .await
        .unwrap();
    a.insert_api_key(api_key("cli", Some("agent-1")))
        .await
        .unwrap();
    let ids = |keys: Vec<ApiKeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    let filter = |name: Option<&str>, username: Option<&str>, realm: Option<&str>| ApiKeyFilter {
        name: name.map(str::to_string),
        username: username.map(str::to_string),
        realm: realm.map(str::to_string),
    };

    assert_eq!(
        b.api_key("k1").await.unwrap(),
        Some(owned_key("k1", "deploy", "alice", "default_native")),
        "the owner round-trips"
    );
    assert_eq!(
        ids(b.api_keys_where(&ApiKeyFilter::default()).await.unwrap()),
        ["cli", "k1", "k2", "k3", "k4"]
    );
    assert_eq!(
        ids(a
            .api_keys_where(&filter(Some("deploy"), None, None))
            .await
            .unwrap()),
        ["k1", "k2"]
    );
    assert_eq!(
        ids(b
            .api_keys_where(&filter(None, Some("alice"), None))
            .await
            .unwrap()),
        ["k1", "k3", "k4"]
    );
    assert_eq!(
        ids(a
            .api_keys_where(&filter(Some("ci"), Some("alice"), Some("default_native")))
            .await
            .unwrap()),
        ["k3"]
    );
    assert!(a
        .api_keys_where(&filter(Some("nope"), None, None))
        .await
        .unwrap()
        .is_empty());

    // A listing shows each key as it is now, not as the search index last saw it.
    assert!(b.invalidate_api_key("k1", T0 + 9).await.unwrap());
    let listed = a
        .api_keys_where(&filter(Some("deploy"), Some("alice"), None))
        .await
        .unwrap();
    assert_eq!(listed[0].invalidated_at, Some(T0 + 9));
}

async fn api_keys_past_their_retention_are_purged(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    let key =
        |id: &str, expires_at: Option<UnixTime>, invalidated_at: Option<UnixTime>| ApiKeyRecord {
            expires_at,
            invalidated_at,
            ..api_key(id, None)
        };
    a.insert_api_key(key("invalidated-long-ago", None, Some(T0 + 1)))
        .await
        .unwrap();
    a.insert_api_key(key("expired-long-ago", Some(T0 + 2), None))
        .await
        .unwrap();
    a.insert_api_key(key("both", Some(T0 + 3), Some(T0 + 1)))
        .await
        .unwrap();
    a.insert_api_key(key("expired-recently", Some(T0 + 50), None))
        .await
        .unwrap();
    a.insert_api_key(key("invalidated-recently", None, Some(T0 + 50)))
        .await
        .unwrap();
    a.insert_api_key(key("never-expires", None, None))
        .await
        .unwrap();
    a.insert_api_key(key("expires-later", Some(T0 + 1000), None))
        .await
        .unwrap();

    assert_eq!(b.purge_api_keys(T0 + 10).await.unwrap(), 3);

    for gone in ["invalidated-long-ago", "expired-long-ago", "both"] {
        assert_eq!(a.api_key(gone).await.unwrap(), None, "{gone}");
    }
    for kept in [
        "expired-recently",
        "invalidated-recently",
        "never-expires",
        "expires-later",
    ] {
        assert!(a.api_key(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(
        a.purge_api_keys(T0 + 10).await.unwrap(),
        0,
        "nothing left to purge"
    );
    assert_eq!(a.purge_api_keys(T0 + 60).await.unwrap(), 2);
    assert!(a.api_key("expires-later").await.unwrap().is_some());
    assert!(
        a.api_key("never-expires").await.unwrap().is_some(),
        "a key without expiration is kept while valid"
    );
}

async fn security_records_round_trip_and_are_deleted_by_a_change(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    assert_eq!(a.typed_record::<UserRecord>("alice").await.unwrap(), None);

    let written = user("alice");
    let before = a
        .update_typed::<UserRecord, _>("alice", move |_| TypedWrite::Put(written.clone()))
        .await
        .unwrap();
    assert_eq!(before, None);
    assert_eq!(
        b.typed_record::<UserRecord>("alice").await.unwrap(),
        Some(user("alice"))
    );
    let stored = b.record(RecordKind::User, "alice").await.unwrap().unwrap();
    assert_eq!(
        (stored.id.as_str(), stored.owner.as_deref()),
        ("alice", None)
    );

    // The same id in another kind is another record.
    let role = RoleRecord {
        name: "alice".into(),
        cluster: vec!["manage_own_api_key".into()],
        indices: serde_json::json!([{ "names": ["logs-*"], "privileges": ["read"], "field_security": { "grant": ["*"] } }]),
        applications: serde_json::json!([]),
        run_as: vec!["bob".into()],
        metadata: serde_json::json!({ "version": 1 }),
        description: Some("a role".into()),
        updated_at: T0,
    };
    let written = role.clone();
    b.update_typed::<RoleRecord, _>("alice", move |_| TypedWrite::Put(written.clone()))
        .await
        .unwrap();
    assert_eq!(
        a.typed_record::<RoleRecord>("alice").await.unwrap(),
        Some(role.clone())
    );
    assert_eq!(
        a.typed_record::<UserRecord>("alice").await.unwrap(),
        Some(user("alice"))
    );

    // A change that keeps writes nothing; one that deletes removes only its record.
    let kept = a
        .update_typed::<UserRecord, _>("alice", |_| TypedWrite::Keep)
        .await
        .unwrap();
    assert_eq!(kept, Some(user("alice")));
    let deleted = b
        .update_typed::<UserRecord, _>("alice", |current| match current {
            Some(_) => TypedWrite::Delete,
            None => TypedWrite::Keep,
        })
        .await
        .unwrap();
    assert_eq!(deleted, Some(user("alice")));
    assert_eq!(a.typed_record::<UserRecord>("alice").await.unwrap(), None);
    assert_eq!(
        a.typed_record::<RoleRecord>("alice").await.unwrap(),
        Some(role)
    );
    let again = a
        .update_typed::<UserRecord, _>("alice", |_| TypedWrite::Delete)
        .await
        .unwrap();
    assert_eq!(again, None, "deleting an absent record is harmless");

    // Odd ids, and a service token (id ns/svc/name, owner ns/svc).
    for name in ["..", "a%2Fb", "ü"] {
        let token = ServiceTokenRecord {
            account: "elastic/fleet-server".into(),
            name: name.to_string(),
            secret_hash: format!("{:064x}", 7),
            created_at: T0,
            created_by: "elastic".into(),
        };
        let id = format!("elastic/fleet-server/{name}");
        let written = token.clone();
        a.update_typed::<ServiceTokenRecord, _>(&id, move |_| TypedWrite::Put(written.clone()))
            .await
            .unwrap();
        assert_eq!(
            b.typed_record::<ServiceTokenRecord>(&id).await.unwrap(),
            Some(token)
        );
    }
    assert_eq!(
        a.typed_record::<ServiceTokenRecord>("..").await.unwrap(),
        None
    );
}

/// Listing by owner finds every record whose creation has returned, on any instance
/// (invalidating a user's tokens must not miss a family created just before).
async fn security_records_are_listed_by_owner_including_ones_created_just_before(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    for (id, owner) in [
        ("f3", "alice"),
        ("f1", "alice"),
        ("f2", "bob"),
        ("f4", "alice"),
    ] {
        let record = family(id, owner, T0 + 100);
        let store = if id == "f4" { &b } else { &a };
        store
            .update_typed::<TokenFamilyRecord, _>(id, move |_| TypedWrite::Put(record.clone()))
            .await
            .unwrap();
    }
    let ids = |records: Vec<TokenFamilyRecord>| {
        records.into_iter().map(|r| r.family_id).collect::<Vec<_>>()
    };

    assert_eq!(
        ids(a
            .typed_records::<TokenFamilyRecord>(Some("alice"))
            .await
            .unwrap()),
        ["f1", "f3", "f4"]
    );
    assert_eq!(
        ids(b
            .typed_records::<TokenFamilyRecord>(Some("bob"))
            .await
            .unwrap()),
        ["f2"]
    );
    assert_eq!(
        ids(b.typed_records::<TokenFamilyRecord>(None).await.unwrap()),
        ["f1", "f2", "f3", "f4"]
    );
    assert!(a
        .typed_records::<TokenFamilyRecord>(Some("carol"))
        .await
        .unwrap()
        .is_empty());
    assert!(
        a.typed_records::<UserRecord>(None)
            .await
            .unwrap()
            .is_empty(),
        "kinds are apart"
    );

    // A listing shows each record as it is now: changed and deleted ones too.
    b.update_typed::<TokenFamilyRecord, _>("f1", |current| match current {
        Some(f) => TypedWrite::Put(TokenFamilyRecord {
            state: TokenStateRecord {
                pending: None,
                ..f.state.clone()
            },
            ..f.clone()
        }),
        None => TypedWrite::Keep,
    })
    .await
    .unwrap();
    b.update_typed::<TokenFamilyRecord, _>("f3", |_| TypedWrite::Delete)
        .await
        .unwrap();
    let listed = a
        .typed_records::<TokenFamilyRecord>(Some("alice"))
        .await
        .unwrap();
    assert_eq!(ids(listed.clone()), ["f1", "f4"]);
    assert_eq!(listed[0].state.pending, None);
}

/// 40 changes of one record from 4 instances at once: none lost, each saw a distinct
/// state (the compare-and-set of SPEC §3, for security records).
async fn update_record_loses_no_concurrent_change(fx: &Fixture) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(fx.open().await);
    }
    let start = family("counted", "alice", T0 + 100);
    stores[0]
        .update_typed::<TokenFamilyRecord, _>("counted", move |_| TypedWrite::Put(start.clone()))
        .await
        .unwrap();

    let tasks = (0..40).map(|i| {
        let store = stores[i % stores.len()].clone();
        tokio::spawn(async move {
            store
                .update_typed::<TokenFamilyRecord, _>("counted", |current| match current {
                    Some(f) => TypedWrite::Put(TokenFamilyRecord {
                        created_at: f.created_at + 1,
                        ..f.clone()
                    }),
                    None => TypedWrite::Keep,
                })
                .await
        })
    });
    let mut seen: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| {
            r.expect("task")
                .expect("applied")
                .expect("exists")
                .created_at
                - T0
        })
        .collect();
    seen.sort_unstable();

    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    let after = stores[3]
        .typed_record::<TokenFamilyRecord>("counted")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.created_at, T0 + 40);
}

async fn records_past_purge_after_are_purged(fx: &Fixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    for (id, refresh_expires_at) in [("old-1", T0 + 20), ("old-2", T0 + 30), ("young", T0 + 500)] {
        let record = family(id, "alice", refresh_expires_at);
        a.update_typed::<TokenFamilyRecord, _>(id, move |_| TypedWrite::Put(record.clone()))
            .await
            .unwrap();
    }
    let written = user("old-1");
    a.update_typed::<UserRecord, _>("old-1", move |_| TypedWrite::Put(written.clone()))
        .await
        .unwrap();
    // Refreshed since: its purge_after moved on, which the search index may not know yet.
    b.update_typed::<TokenFamilyRecord, _>("old-2", |current| match current {
        Some(f) => TypedWrite::Put(family(&f.family_id, "alice", T0 + 900)),
        None => TypedWrite::Keep,
    })
    .await
    .unwrap();

    assert_eq!(
        b.purge_records(RecordKind::TokenFamily, T0 + 100)
            .await
            .unwrap(),
        1
    );

    assert_eq!(
        a.typed_record::<TokenFamilyRecord>("old-1").await.unwrap(),
        None
    );
    assert!(a
        .typed_record::<TokenFamilyRecord>("old-2")
        .await
        .unwrap()
        .is_some());
    assert!(a
        .typed_record::<TokenFamilyRecord>("young")
        .await
        .unwrap()
        .is_some());
    assert!(
        a.typed_record::<UserRecord>("old-1")
            .await
            .unwrap()
            .is_some(),
        "users have no purge_after"
    );
    assert_eq!(
        a.purge_records(RecordKind::User, T0 + 100_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        a.purge_records(RecordKind::TokenFamily, T0 + 100_000)
            .await
            .unwrap(),
        2
    );
}

/// The Vault JWT auth method's records are opaque JSON to the store (parsed above it):
/// any shape round-trips, is listed, changed atomically and removed, per kind.
async fn opaque_records_of_the_vault_auth_method_round_trip(fx: &Fixture) {
    let store = fx.open().await;
    let role = |id: &str, body: Value| StoredRecord {
        id: id.to_string(),
        owner: None,
        purge_after: None,
        body,
    };
    let body = serde_json::json!({
        "bound_audiences": ["fleet"],
        "user_claim": "sub",
        "nested": { "any": ["shape", 1, true, null] }
    });
    for (id, body) in [
        ("ci", body.clone()),
        ("deploy", serde_json::json!({"x": 1})),
    ] {
        let record = role(id, body);
        store
            .update_record(
                RecordKind::JwtAuthRole,
                id,
                Box::new(move |_| RecordWrite::Put(record.clone())),
            )
            .await
            .unwrap();
    }

    let again = fx.open().await;
    let read = again
        .record(RecordKind::JwtAuthRole, "ci")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.body, body);
    assert!(again
        .record(RecordKind::JwtAuthConfig, "ci")
        .await
        .unwrap()
        .is_none());
    let ids: Vec<String> = again
        .records(RecordKind::JwtAuthRole, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["ci", "deploy"]);

    let before = again
        .update_record(
            RecordKind::JwtAuthRole,
            "deploy",
            Box::new(|current| match current {
                Some(_) => RecordWrite::Delete,
                None => RecordWrite::Keep,
            }),
        )
        .await
        .unwrap();
    assert!(before.is_some());
    assert!(store
        .record(RecordKind::JwtAuthRole, "deploy")
        .await
        .unwrap()
        .is_none());
}

/// What an agent enrolled with (`src/enrollment/`) is an opaque record to the store:
/// written, read back by another instance, listed by its owner (the policy) and
/// replaced atomically.
async fn enrolled_agent_records_round_trip_and_are_listed_by_policy(fx: &Fixture) {
    use fleetauth::enrollment::EnrolledAgentRecord;
    use fleetauth::store::TypedWrite;
    let store = fx.open().await;
    let record = |id: &str, policy: &str| EnrolledAgentRecord {
        agent_id: id.to_string(),
        policy_id: policy.to_string(),
        agent_type: "PERMANENT".into(),
        enrollment_token_id: "tok-1".into(),
        enrolled_at: T0,
        local_metadata: serde_json::json!({ "host": { "hostname": "h" } }),
        user_provided_metadata: serde_json::json!({}),
        tags: vec!["linux".into()],
        replace_token_hash: None,
        auth: "jwt".into(),
    };
    for (id, policy) in [("a-1", "p1"), ("a-2", "p2"), ("a-3", "p1")] {
        let next = record(id, policy);
        let before = store
            .update_typed::<EnrolledAgentRecord, _>(id, move |_| TypedWrite::Put(next.clone()))
            .await
            .unwrap();
        assert!(before.is_none());
    }
    let again = fx.open().await;
    let read = again
        .typed_record::<EnrolledAgentRecord>("a-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, record("a-1", "p1"));
    let of_p1: Vec<String> = again
        .typed_records::<EnrolledAgentRecord>(Some("p1"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.agent_id)
        .collect();
    assert_eq!(of_p1, vec!["a-1", "a-3"]);
    // Replaced only when the change says so, given the record as it is.
    let before = again
        .update_typed::<EnrolledAgentRecord, _>("a-1", |current| match current {
            Some(r) if r.policy_id == "p1" => TypedWrite::Put(EnrolledAgentRecord {
                auth: "api_key".into(),
                ..r.clone()
            }),
            _ => TypedWrite::Keep,
        })
        .await
        .unwrap();
    assert_eq!(before.unwrap().auth, "jwt");
    let read = store
        .typed_record::<EnrolledAgentRecord>("a-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.auth, "api_key");
}
