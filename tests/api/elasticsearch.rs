//! What only the Elasticsearch store has, tested against the stand-in (`es_standin.rs`,
//! not a real cluster): index creation and ownership, the documents' shape, the
//! compare-and-set retry and its bound, search paging, faults (cluster down or hung →
//! "unavailable" and 503, then recovery), the CLI on Elasticsearch, and the requests
//! per issuance that docs/benchmarks.md reports.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleetauth::clock::ManualClock;
use fleetauth::config::{ElasticsearchSettings, Settings, StoreKind};
use fleetauth::store::elasticsearch::mappings::Indices;
use fleetauth::store::elasticsearch::{ElasticsearchStore, MAX_CAS_ATTEMPTS};
use fleetauth::store::{ApiKeyRecord, Store, StoreError, TokenStateRecord};
use futures::future::join_all;
use serde_json::{json, Value};

use crate::common::requests::get_status;
use crate::es_standin::{Counts, EsStandIn};
use crate::helpers::{metric_value, pair_from, spawn_app_for, TestApp};

fn es_settings(standin: &EsStandIn) -> ElasticsearchSettings {
    ElasticsearchSettings::for_url(&standin.url()).expect("stand-in settings")
}

fn app_settings(es: ElasticsearchSettings, dir: &tempfile::TempDir) -> Settings {
    let mut settings = crate::helpers::test_settings(dir.path());
    settings.store = StoreKind::Elasticsearch;
    settings.elasticsearch = Some(es);
    settings
}

/// Waits for `future`, failing the test if it takes longer than a generous bound: the
/// point is "no hang", not speed.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("answered, not hung")
}

fn is_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Unavailable(_)))
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    get_status(&app.client, app.url(path)).await
}

// ---- indices ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indices_are_created_once_with_strict_mappings_even_when_instances_race() {
    let standin = EsStandIn::start().await;
    let es = es_settings(&standin);

    let opened = join_all((0..4).map(|_| ElasticsearchStore::open(&es))).await;

    let created: Vec<bool> = opened
        .into_iter()
        .map(|r| r.expect("every instance starts").1)
        .collect();
    assert_eq!(
        created.iter().filter(|c| **c).count(),
        1,
        "one instance created the store: {created:?}"
    );
    let indices = Indices::new("");
    assert_eq!(
        indices.agents, ".fleet-agents",
        "SPEC §5 index name with the default prefix"
    );
    for name in [
        &indices.agents,
        &indices.api_keys,
        &indices.signing_keys,
        &indices.meta,
    ] {
        assert!(
            standin.counts().of_index("index_create", name) >= 1,
            "{name} was created"
        );
    }
    let response: Value = reqwest::get(format!("{}/.fleet-agents/_mapping", standin.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mappings = &response[".fleet-agents"]["mappings"];
    assert_eq!(mappings["dynamic"], "strict");
    assert_eq!(mappings["_meta"]["managed_by"], "fleetauth");
    assert_eq!(
        mappings["properties"]["pending"]["properties"]["refresh_hash"]["type"],
        "keyword"
    );
    let index: Value = reqwest::get(format!("{}/.fleet-agents", standin.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index[".fleet-agents"]["settings"]["index"]["hidden"], true);
}

/// An index made by an older fleetauth (schema version 1: API keys without owners) gets
/// the new fields at start-up, keeping its documents.
#[tokio::test]
async fn an_index_of_an_older_schema_version_gets_the_new_fields() {
    let standin = EsStandIn::start().await;
    standin.create_foreign_index(
        ".fleetauth-api-keys",
        json!({
            "dynamic": "strict",
            "_meta": { "managed_by": "fleetauth", "schema_version": 1 },
            "properties": {
                "id": { "type": "keyword" }, "name": { "type": "keyword" },
                "agent_id": { "type": "keyword" },
                "hash": { "type": "keyword", "index": false, "doc_values": false },
                "created_at": { "type": "long" }, "expires_at": { "type": "long" },
                "invalidated_at": { "type": "long" }
            }
        }),
    );

    let (store, _) = ElasticsearchStore::open(&es_settings(&standin))
        .await
        .expect("the store opens");

    let response: Value = reqwest::get(format!("{}/.fleetauth-api-keys/_mapping", standin.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mappings = &response[".fleetauth-api-keys"]["mappings"];
    assert_eq!(mappings["_meta"]["schema_version"], 2);
    assert_eq!(mappings["dynamic"], "strict");
    assert_eq!(
        mappings["properties"]["owner"]["properties"]["username"]["type"],
        "keyword"
    );
    assert_eq!(
        mappings["properties"]["hash"]["index"], false,
        "old fields kept"
    );
    let key = ApiKeyRecord {
        id: "k".into(),
        name: "n".into(),
        agent_id: None,
        hash: "h".into(),
        created_at: 1,
        expires_at: None,
        invalidated_at: None,
        owner: Some(fleetauth::store::ApiKeyOwner {
            username: "alice".into(),
            realm: "default_native".into(),
            realm_type: "native".into(),
            role_descriptors: json!({}),
            limited_by: json!([]),
            metadata: json!({}),
        }),
    };
    store
        .insert_api_key(key.clone())
        .await
        .expect("an owned key fits");
    assert_eq!(store.api_key("k").await.unwrap(), Some(key));
}

#[tokio::test]
async fn an_existing_index_that_fleetauth_did_not_create_is_refused() {
    let standin = EsStandIn::start().await;
    // E.g. a real Fleet Server's `.fleet-agents`.
    standin.create_foreign_index(
        ".fleet-agents",
        json!({ "dynamic": false, "properties": {} }),
    );
    let mut es = es_settings(&standin);

    let refused = ElasticsearchStore::open(&es).await;

    match refused {
        Err(StoreError::Corrupt(message)) => {
            assert!(
                message.contains(".fleet-agents") && message.contains("index_prefix"),
                "{message}"
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    es.index_prefix = "fleetauth".into();
    let (store, created) = ElasticsearchStore::open(&es)
        .await
        .expect("another prefix works");
    assert!(created);
    assert_eq!(store.indices().agents, "fleetauth.fleet-agents");
}

// ---- documents ----

#[tokio::test]
async fn an_agent_document_holds_jwt_ids_and_refresh_hashes_never_tokens() {
    let standin = EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_for(
        app_settings(es_settings(&standin), &dir),
        Arc::new(ManualClock::starting_now()),
    )
    .await;
    let key = app.enroll("doc-agent").await;
    let first = app.pair_with_api_key(&key).await;
    app.whoami_status(&first.access_token).await;
    let second = pair_from(app.refresh(&first.refresh_token).await).await;
    app.whoami_status(&second.access_token).await;
    let third = pair_from(app.refresh(&second.refresh_token).await).await;

    let doc = standin
        .source(".fleet-agents", "doc-agent")
        .expect("the agent's document");

    let text = doc.to_string();
    for pair in [&first, &second, &third] {
        assert!(
            !text.contains(&pair.refresh_token) && !text.contains(&pair.access_token),
            "no token in clear"
        );
    }
    let hex64 = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(hex64(&doc["current"]["refresh_hash"]) && hex64(&doc["pending"]["refresh_hash"]));
    assert!(doc["current"]["jti"].is_string() && doc["pending"]["jti"].is_string());
    assert!(
        hex64(&doc["retired"][0]["refresh_hash"]),
        "the retired first pair: {doc}"
    );
    let key_doc = standin
        .source(".fleetauth-api-keys", &key.id)
        .expect("the key's document");
    assert!(key_doc["hash"].as_str().unwrap().starts_with("$argon2id$"));
    assert!(!key_doc.to_string().contains(&key.api_key));
    let ring = standin
        .source(".fleetauth-signing-keys", "ring")
        .expect("the key ring");
    assert_eq!(ring["keys"].as_array().unwrap().len(), 1);
}

// ---- compare-and-set ----

/// Two instances read the same version (the stand-in holds both GETs until both have
/// read); one write wins, the other gets a 409, reads again and decides again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_compare_and_set_decides_again_on_the_newer_record() {
    let standin = EsStandIn::start().await;
    let es = es_settings(&standin);
    let (a, _) = ElasticsearchStore::open(&es).await.unwrap();
    let (b, _) = ElasticsearchStore::open(&es).await.unwrap();
    a.update_agent(
        "cas",
        Box::new(|_| Some(TokenStateRecord::enrolled("cas", 0))),
    )
    .await
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let increment = |calls: Arc<AtomicUsize>| -> fleetauth::store::AgentChange {
        Box::new(move |r| {
            calls.fetch_add(1, Ordering::SeqCst);
            r.map(|r| TokenStateRecord {
                updated_at: r.updated_at + 1,
                ..r.clone()
            })
        })
    };
    standin.hold_doc_gets(2);
    standin.reset_counts();

    let (x, y) = tokio::join!(
        a.update_agent("cas", increment(calls.clone())),
        b.update_agent("cas", increment(calls.clone()))
    );

    let mut before = [
        x.unwrap().unwrap().updated_at,
        y.unwrap().unwrap().updated_at,
    ];
    before.sort_unstable();
    assert_eq!(
        before,
        [0, 1],
        "the loser decided again on the winner's record"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one change was called twice"
    );
    assert_eq!(
        standin.counts().of("doc_write"),
        3,
        "two writes, one of them refused with 409"
    );
    assert_eq!(
        a.agent("cas").await.unwrap().unwrap().updated_at,
        2,
        "no update lost"
    );
}

/// When every attempt loses (scripted: a real cluster cannot be made to lose 64 times
/// in a row on purpose), the store gives up after the bound and reports "contended";
/// the record is left as the other writer left it.
#[tokio::test]
async fn a_compare_and_set_that_always_loses_gives_up_as_contended() {
    let standin = EsStandIn::start().await;
    let (store, _) = ElasticsearchStore::open(&es_settings(&standin))
        .await
        .unwrap();
    store
        .update_agent(
            "contended",
            Box::new(|_| Some(TokenStateRecord::enrolled("contended", 7))),
        )
        .await
        .unwrap();
    standin.interfere_with(".fleet-agents", "contended");
    standin.reset_counts();

    let result = bounded(store.update_agent(
        "contended",
        Box::new(|r| {
            r.map(|r| TokenStateRecord {
                active: false,
                ..r.clone()
            })
        }),
    ))
    .await;

    assert!(
        matches!(result, Err(StoreError::Contended(_))),
        "{result:?}"
    );
    assert_eq!(
        standin.counts().of("doc_write"),
        u64::from(MAX_CAS_ATTEMPTS),
        "bounded attempts"
    );
    assert_eq!(
        standin.source(".fleet-agents", "contended").unwrap()["active"],
        true,
        "nothing written"
    );
}

/// A refresh (and an API-key exchange) whose every compare-and-set is overtaken lost a
/// race with other uses of the same credential: `invalid_grant`, never a 5xx, nothing
/// written; once the interference stops the pair works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_compare_and_set_retries_answer_invalid_grant_never_a_5xx() {
    let standin = EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_for(
        app_settings(es_settings(&standin), &dir),
        Arc::new(ManualClock::starting_now()),
    )
    .await;
    let key = app.enroll("contended-agent").await;
    let pair = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
    standin.interfere_with(".fleet-agents", "contended-agent");

    let refresh = bounded(app.refresh(&pair.refresh_token)).await;
    let exchange = bounded(app.authenticate(&format!("ApiKey {}", key.encoded))).await;

    for (flow, response) in [("refresh", refresh), ("api key exchange", exchange)] {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_grant")),
            "{flow}: {body}"
        );
    }
    let token = bounded(app.post_form(
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &pair.refresh_token),
        ],
    ))
    .await;
    assert!(
        token.status().is_client_error(),
        "/oauth/token: {}",
        token.status()
    );
    assert_eq!(
        token.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        standin.source(".fleet-agents", "contended-agent").unwrap()["pending"],
        Value::Null,
        "no pair was stored"
    );
}

// ---- search ----

/// A search answered 200 from part of the index (a failed shard, `timed_out`; scripted
/// at the stand-in) must not pass for "no more keys": unenrolment, listing and purging
/// fail as unavailable instead of silently leaving keys valid.
#[tokio::test]
async fn partial_search_answers_fail_instead_of_silently_dropping_keys() {
    use crate::es_standin::PartialSearch;
    let standin = EsStandIn::start().await;
    let (store, _) = ElasticsearchStore::open(&es_settings(&standin))
        .await
        .unwrap();
    store
        .insert_api_key(ApiKeyRecord {
            id: "partial-key".into(),
            name: "k".into(),
            agent_id: Some("partial".into()),
            hash: "h".into(),
            created_at: 1,
            expires_at: Some(2),
            invalidated_at: None,
            owner: None,
        })
        .await
        .unwrap();

    for partial in [PartialSearch::FailedShard, PartialSearch::TimedOut] {
        standin.set_partial_searches(Some(partial));

        assert!(
            is_unavailable(store.invalidate_agent_api_keys("partial", 5).await),
            "{partial:?}: invalidate"
        );
        assert!(
            is_unavailable(
                store
                    .api_keys_where(&fleetauth::store::ApiKeyFilter::default())
                    .await
            ),
            "{partial:?}: list"
        );
        assert!(
            is_unavailable(store.purge_api_keys(10).await),
            "{partial:?}: purge"
        );
    }
    standin.set_partial_searches(None);
    assert_eq!(
        store.invalidate_agent_api_keys("partial", 5).await.unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenrolling_finds_an_agents_keys_across_search_pages() {
    let standin = EsStandIn::start().await;
    let (store, _) = ElasticsearchStore::open(&es_settings(&standin))
        .await
        .unwrap();
    let key = |i: usize, agent: &str| ApiKeyRecord {
        id: format!("key-{agent}-{i:04}"),
        name: "k".into(),
        agent_id: Some(agent.to_string()),
        hash: "h".into(),
        created_at: 1,
        expires_at: None,
        invalidated_at: None,
        owner: None,
    };
    for chunk in (0..1200).collect::<Vec<_>>().chunks(100) {
        join_all(chunk.iter().map(|i| store.insert_api_key(key(*i, "many"))))
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
    }
    store.insert_api_key(key(0, "few")).await.unwrap();

    assert_eq!(
        store.invalidate_agent_api_keys("many", 5).await.unwrap(),
        1200
    );

    assert!(
        standin.counts().of("search") >= 3,
        "more than one page was read"
    );
    assert_eq!(
        store
            .api_key("key-many-1199")
            .await
            .unwrap()
            .unwrap()
            .invalidated_at,
        Some(5)
    );
    assert_eq!(
        store
            .api_key("key-few-0000")
            .await
            .unwrap()
            .unwrap()
            .invalidated_at,
        None
    );
}

// ---- faults ----

#[tokio::test]
async fn store_calls_fail_as_unavailable_while_the_cluster_is_down_and_recover() {
    let mut standin = EsStandIn::start().await;
    let (store, _) = ElasticsearchStore::open(&es_settings(&standin))
        .await
        .unwrap();
    store
        .update_agent(
            "kept",
            Box::new(|_| Some(TokenStateRecord::enrolled("kept", 1))),
        )
        .await
        .unwrap();

    standin.stop().await;

    assert!(is_unavailable(bounded(store.ping()).await));
    assert!(is_unavailable(bounded(store.agent("kept")).await));
    assert!(is_unavailable(
        bounded(store.update_agent("kept", Box::new(|_| None))).await
    ));
    assert!(is_unavailable(bounded(store.api_key("k")).await));
    assert!(is_unavailable(
        bounded(store.invalidate_agent_api_keys("kept", 2)).await
    ));
    assert!(is_unavailable(bounded(store.signing_keys(2)).await));
    assert!(is_unavailable(
        bounded(store.meta_get_or_insert("m", "v")).await
    ));
    assert!(is_unavailable(
        bounded(ElasticsearchStore::open(&es_settings(&standin)))
            .await
            .map(|_| ())
    ));

    standin.restart().await;

    let mut ready = false;
    for _ in 0..100 {
        if store.ping().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the store recovers by itself");
    assert_eq!(
        store.agent("kept").await.unwrap().unwrap().updated_at,
        1,
        "with its data"
    );
}

#[tokio::test]
async fn a_hung_cluster_makes_store_calls_unavailable_after_the_timeout() {
    let standin = EsStandIn::start().await;
    let mut es = es_settings(&standin);
    es.timeout = Duration::from_millis(300);
    let (store, _) = ElasticsearchStore::open(&es).await.unwrap();

    standin.set_stalled(true);

    match bounded(store.agent("any")).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("did not answer within"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(is_unavailable(bounded(store.ping()).await));

    standin.set_stalled(false);

    assert_eq!(store.agent("any").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_503_while_the_cluster_is_down_or_hung_and_recovers() {
    let mut standin = EsStandIn::start().await;
    let mut es = es_settings(&standin);
    es.timeout = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_for(
        app_settings(es, &dir),
        Arc::new(ManualClock::starting_now()),
    )
    .await;
    let key = app.enroll("weathered").await;
    let pair = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
    let api_key = format!("ApiKey {}", key.encoded);

    for outage in ["down", "hung"] {
        match outage {
            "down" => standin.stop().await,
            _ => standin.set_stalled(true),
        }

        assert_eq!(
            bounded(status_of(&app, "/readyz")).await,
            503,
            "{outage}: readyz"
        );
        assert_eq!(
            bounded(app.authenticate(&api_key)).await.status(),
            503,
            "{outage}: api key exchange"
        );
        let refresh = bounded(app.refresh(&pair.refresh_token)).await;
        assert_eq!(refresh.status(), 503, "{outage}: refresh");
        assert_eq!(refresh.headers()["retry-after"], "1");
        assert_eq!(
            bounded(app.whoami_status(&pair.access_token)).await,
            503,
            "{outage}: whoami with a JWT"
        );
        assert_eq!(
            bounded(app.whoami(&api_key)).await.status(),
            503,
            "{outage}: whoami with an API key"
        );
        assert_eq!(
            status_of(&app, "/healthz").await,
            200,
            "{outage}: alive all the same"
        );

        match outage {
            "down" => standin.restart().await,
            _ => standin.set_stalled(false),
        }

        let mut recovered = false;
        for _ in 0..100 {
            if status_of(&app, "/readyz").await == 200 {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(recovered, "{outage}: ready again by itself");
        // Nothing was half-done: the pair from before the outage still works.
        assert_eq!(app.whoami_status(&pair.access_token).await, 200, "{outage}");
    }
    let next = app.refresh(&pair.refresh_token).await;
    assert_eq!(next.status(), 200);
    assert!(
        metric_value(
            &app.metrics().await,
            "fleetauth_auth_failures_total{reason=\"unavailable\",detail=\"store_unavailable\"}"
        ) >= 1.0
    );
}

// ---- CLI ----

fn cli(args: &[&str], es_url: &str, dir: &std::path::Path) -> Value {
    let output = crate::common::process::command()
        .args(args)
        .current_dir(dir)
        .env("FLEETAUTH_STORE", "elasticsearch")
        .env("FLEETAUTH_ELASTICSEARCH__URL", es_url)
        .env("FLEETAUTH_DATA_DIR", dir)
        .env("FLEETAUTH_LOG", "warn")
        .output()
        .expect("run fleetauth");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

async fn run_cli(args: &[&str], es_url: &str, dir: &std::path::Path) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (es_url, dir) = (es_url.to_string(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args, &es_url, &dir)
    })
    .await
    .expect("cli task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_commands_act_on_the_elasticsearch_store() {
    let standin = EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, path) = (standin.url(), dir.path());

    let created = run_cli(
        &["api-key", "create", "--agent-id", "cli-agent"],
        &url,
        path,
    )
    .await;
    let spare = run_cli(
        &[
            "api-key",
            "create",
            "--agent-id",
            "cli-agent",
            "--name",
            "spare",
        ],
        &url,
        path,
    )
    .await;

    let app = spawn_app_for(
        app_settings(es_settings(&standin), &dir),
        Arc::new(ManualClock::starting_now()),
    )
    .await;
    let api_key = format!("ApiKey {}", created["encoded"].as_str().unwrap());
    assert_eq!(
        app.authenticate(&api_key).await.status(),
        200,
        "a key made by the CLI works on the server"
    );

    let spare_id = spare["id"].as_str().unwrap();
    assert_eq!(
        run_cli(&["api-key", "invalidate", "--id", spare_id], &url, path).await["invalidated"],
        true
    );
    assert_eq!(
        app.authenticate(&format!("ApiKey {}", spare["encoded"].as_str().unwrap()))
            .await
            .status(),
        401
    );

    let rotated = run_cli(&["keys", "rotate"], &url, path).await;
    let ring = standin.source(".fleetauth-signing-keys", "ring").unwrap();
    let kids: Vec<&str> = ring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], rotated["kid"].as_str().unwrap());

    assert_eq!(
        run_cli(
            &["agent", "unenroll", "--agent-id", "cli-agent"],
            &url,
            path
        )
        .await["unenrolled"],
        true
    );
    assert_eq!(
        app.authenticate(&api_key).await.status(),
        401,
        "unenrolled at once"
    );
}

// ---- requests per issuance (docs/benchmarks.md) ----

/// The requests one flow sent to the stand-in (then forgets them).
fn take(standin: &EsStandIn) -> Counts {
    let counts = standin.counts();
    standin.reset_counts();
    counts
}

#[tokio::test]
async fn requests_per_issuance_are_counted_at_the_standin() {
    let standin = EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = app_settings(es_settings(&standin), &dir);
    settings.jwt.key_poll_interval = Duration::from_secs(3600); // no background reads
    let app = spawn_app_for(settings, Arc::new(ManualClock::starting_now())).await;
    let key = app.enroll("measured").await;
    let api_key = format!("ApiKey {}", key.encoded);
    // The key's first use writes its last-used time (1 read + 1 write, in the
    // background, then at most once per api_keys.last_used_interval): made before the
    // counting, which measures the steady state.
    assert_eq!(app.whoami(&api_key).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    standin.reset_counts();

    let first = app.pair(&api_key).await;
    let api_key_exchange = take(&standin);
    assert_eq!(app.whoami_status(&first.access_token).await, 200);
    let whoami_promoting = take(&standin);
    assert_eq!(app.whoami_status(&first.access_token).await, 200);
    let whoami_steady = take(&standin);
    let second = pair_from(app.refresh(&first.refresh_token).await).await;
    let refresh_current = take(&standin);
    let third = pair_from(app.refresh(&second.refresh_token).await).await;
    let refresh_promoting = take(&standin);
    assert_eq!(app.whoami(&api_key).await.status(), 200);
    let whoami_api_key = take(&standin);
    app.pair(&format!("Bearer {}", third.access_token)).await;
    let access_token_exchange = take(&standin);

    let flows = [
        ("API key exchange", &api_key_exchange, 2, 1),
        (
            "refresh exchange with the current refresh token",
            &refresh_current,
            1,
            1,
        ),
        (
            "refresh exchange promoting the pending pair",
            &refresh_promoting,
            1,
            1,
        ),
        (
            "access-token exchange promoting the pending pair",
            &access_token_exchange,
            1,
            1,
        ),
        (
            "whoami with the pending access token (promotes)",
            &whoami_promoting,
            2,
            1,
        ),
        (
            "whoami with the current access token (steady state)",
            &whoami_steady,
            1,
            0,
        ),
        ("whoami with an API key", &whoami_api_key, 1, 0),
    ];
    eprintln!("| flow | reads (real-time GET) | writes (conditional index) | requests |");
    eprintln!("|---|---|---|---|");
    for (flow, counts, reads, writes) in flows {
        eprintln!(
            "| {flow} | {} | {} | {} |  <!-- {counts} -->",
            counts.reads(),
            counts.writes(),
            counts.total()
        );
        assert_eq!(
            (counts.reads(), counts.writes()),
            (reads, writes),
            "{flow}: {counts}"
        );
        assert_eq!(counts.of("search"), 0, "{flow}: no search on a hot path");
        assert_eq!(
            counts.total(),
            reads + writes,
            "{flow}: nothing else: {counts}"
        );
    }
}
