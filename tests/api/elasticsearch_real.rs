//! On a REAL Elasticsearch node (`crate::real_es::url`; never skipped): each behaviour
//! the stand-in models (real-time GET vs search refresh, 409 on a stale
//! `_seq_no`/`_primary_term`, `op_type=create`, strict mappings) and those it hides
//! (`refresh=wait_for`, queries and sorts on unindexed fields), through the store's own
//! client ([`EsClient`]) and the store. (A `_primary_term` raised by a restart of the
//! node is checked in `es_faults.rs`, on a node of its own.)

use std::time::{Duration, Instant};

use fleetauth::config::ElasticsearchSettings;
use fleetauth::store::elasticsearch::client::{EsClient, EsError, Expect, Visibility, Written};
use fleetauth::store::elasticsearch::ElasticsearchStore;
use fleetauth::store::{ApiKeyRecord, Store, StoreError};
use serde_json::{json, Value};

use crate::real_es;

/// A client of the real node, and a fresh index prefix deleted at the end.
struct Node {
    url: String,
    prefix: String,
    settings: ElasticsearchSettings,
    client: EsClient,
    http: reqwest::Client,
}

impl Node {
    fn new(label: &str) -> Self {
        let url = real_es::url();
        let prefix = real_es::unique_prefix(label);
        let mut settings = ElasticsearchSettings::for_url(&url).expect("a URL");
        settings.index_prefix = prefix.clone();
        settings.timeout = Duration::from_secs(30);
        let client = EsClient::connect(&settings).expect("client");
        Self {
            url,
            prefix,
            settings,
            client,
            http: reqwest::Client::new(),
        }
    }

    /// A test index of our own, strict, with a keyword `id`, a long `n` and a keyword
    /// `secret` that is neither indexed nor has doc values (like an API key's hash).
    async fn index(&self, name: &str, refresh_interval: &str) -> String {
        let index = format!("{}.{name}", self.prefix);
        let body = json!({
            "settings": { "index": {
                "number_of_shards": 1, "number_of_replicas": 0,
                "refresh_interval": refresh_interval
            } },
            "mappings": { "dynamic": "strict", "properties": {
                "id": { "type": "keyword" },
                "n": { "type": "long" },
                "secret": { "type": "keyword", "index": false, "doc_values": false }
            } }
        });
        assert!(self
            .client
            .create_index(&index, &body)
            .await
            .expect("create"));
        index
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("node answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn open_store(&self) -> ElasticsearchStore {
        ElasticsearchStore::open(&self.settings)
            .await
            .expect("store opens")
            .0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        real_es::delete_indices_blocking(&self.url, &self.prefix);
    }
}

fn doc(id: &str, n: i64) -> Value {
    json!({ "id": id, "n": n, "secret": "s" })
}

async fn ids(node: &Node, index: &str, query: Value) -> Result<Vec<String>, EsError> {
    Ok(node
        .client
        .search_ids(index, query, "id", None, 100)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

#[tokio::test]
async fn a_real_time_get_sees_a_write_that_search_sees_only_after_a_refresh() {
    let node = Node::new("rtget");
    // No periodic refresh: only an explicit one (or refresh=wait_for) makes writes searchable.
    let index = node.index("docs", "-1").await;

    let put = node
        .client
        .put(
            &index,
            "a",
            &doc("a", 1),
            Expect::Absent,
            Visibility::Eventually,
        )
        .await
        .unwrap();

    assert_eq!(put, Written::Done);
    let got = node.client.get::<Value>(&index, "a").await.unwrap();
    assert_eq!(got.expect("real-time GET finds it").doc["n"], 1);
    assert_eq!(
        ids(&node, &index, json!({ "match_all": {} }))
            .await
            .unwrap(),
        Vec::<String>::new(),
        "a search does not see the unrefreshed write"
    );

    // With a refresh interval again, refresh=wait_for returns once the write is searchable.
    node.admin(
        reqwest::Method::PUT,
        &format!("/{index}/_settings"),
        Some(json!({ "index": { "refresh_interval": "1s" } })),
    )
    .await;
    let started = Instant::now();
    node.client
        .put(
            &index,
            "b",
            &doc("b", 2),
            Expect::Absent,
            Visibility::BeforeReturn,
        )
        .await
        .unwrap();
    eprintln!(
        "refresh=wait_for with a 1 s refresh interval returned after {:?}",
        started.elapsed()
    );
    assert_eq!(
        ids(&node, &index, json!({ "match_all": {} }))
            .await
            .unwrap(),
        vec!["a".to_string(), "b".to_string()],
        "a write that returned with refresh=wait_for is searchable (and so is the earlier one)"
    );
}

#[tokio::test]
async fn a_stale_seq_no_or_primary_term_and_a_second_create_are_409s() {
    let node = Node::new("cas");
    let index = node.index("docs", "1s").await;
    node.client
        .put(
            &index,
            "x",
            &doc("x", 1),
            Expect::Absent,
            Visibility::Eventually,
        )
        .await
        .unwrap();
    let v1 = node
        .client
        .get::<Value>(&index, "x")
        .await
        .unwrap()
        .unwrap()
        .version;

    assert_eq!(
        node.client
            .put(
                &index,
                "x",
                &doc("x", 9),
                Expect::Absent,
                Visibility::Eventually
            )
            .await
            .unwrap(),
        Written::Conflict,
        "op_type=create on an existing document"
    );
    assert_eq!(
        node.client
            .put(
                &index,
                "x",
                &doc("x", 2),
                Expect::At(v1),
                Visibility::Eventually
            )
            .await
            .unwrap(),
        Written::Done
    );
    assert_eq!(
        node.client
            .put(
                &index,
                "x",
                &doc("x", 3),
                Expect::At(v1),
                Visibility::Eventually
            )
            .await
            .unwrap(),
        Written::Conflict,
        "a stale _seq_no"
    );
    let v2 = node
        .client
        .get::<Value>(&index, "x")
        .await
        .unwrap()
        .unwrap()
        .version;
    let mut wrong_term = v2;
    wrong_term.primary_term += 1;
    assert_eq!(
        node.client
            .put(
                &index,
                "x",
                &doc("x", 4),
                Expect::At(wrong_term),
                Visibility::Eventually
            )
            .await
            .unwrap(),
        Written::Conflict,
        "another _primary_term"
    );
    assert_eq!(
        node.client.delete(&index, "x", v1).await.unwrap(),
        Written::Conflict,
        "a delete at a stale version"
    );
    let last = node
        .client
        .get::<Value>(&index, "x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.doc["n"], 2,
        "only the write at the current version took"
    );
}

#[tokio::test]
async fn a_strict_mapping_refuses_an_unknown_field_with_a_400_that_is_not_transient() {
    let node = Node::new("strict");
    let index = node.index("docs", "1s").await;

    let refused = node
        .client
        .put(
            &index,
            "y",
            &json!({ "id": "y", "unknown": true }),
            Expect::Absent,
            Visibility::Eventually,
        )
        .await;

    match refused {
        Err(e @ EsError::Refused { status: 400, .. }) => {
            assert!(
                e.to_string().contains("strict_dynamic_mapping_exception"),
                "{e}"
            );
            assert!(!e.is_transient());
            assert!(matches!(StoreError::from(e), StoreError::Corrupt(_)));
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(node
        .client
        .get::<Value>(&index, "y")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_query_or_sort_on_an_unindexed_field_is_a_400_from_the_real_node() {
    let node = Node::new("unindexed");
    let index = node.index("docs", "1s").await;
    node.client
        .put(
            &index,
            "z",
            &doc("z", 1),
            Expect::Absent,
            Visibility::BeforeReturn,
        )
        .await
        .unwrap();

    let query = ids(&node, &index, json!({ "term": { "secret": "s" } })).await;
    let sort = node
        .client
        .search_ids(&index, json!({ "match_all": {} }), "secret", None, 10)
        .await;

    for (what, result) in [("query", query.map(|_| ())), ("sort", sort.map(|_| ()))] {
        match result {
            Err(e @ EsError::Refused { status: 400, .. }) => {
                assert!(!e.is_transient(), "{what}: {e}")
            }
            other => panic!("{what} on an unindexed field: expected a 400, got {other:?}"),
        }
    }
}

/// API keys are inserted with refresh=wait_for: a key whose creation returned is found by
/// the invalidation search at once, on the real node's periodic refresh.
#[tokio::test]
async fn keys_inserted_just_before_are_found_by_invalidation_on_the_real_node() {
    let node = Node::new("waitfor");
    let store = node.open_store().await;
    let mut waits = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        store
            .insert_api_key(ApiKeyRecord {
                id: format!("k{i}"),
                name: "n".into(),
                agent_id: Some("agent".into()),
                hash: "h".into(),
                created_at: 1,
                expires_at: None,
                invalidated_at: None,
                owner: None,
            })
            .await
            .unwrap();
        waits.push(started.elapsed());
        assert_eq!(
            store.invalidate_agent_api_keys("agent", 2).await.unwrap(),
            1,
            "key k{i} found right after its insert returned"
        );
    }
    eprintln!("insert with refresh=wait_for on the real node: {waits:?}");
}
