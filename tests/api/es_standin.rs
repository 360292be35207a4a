//! An in-process Elasticsearch **stand-in** for the tests — not Elasticsearch. A tiny
//! axum server that implements just the APIs fleetauth's Elasticsearch store uses, with
//! Elasticsearch's semantics and JSON shapes, so that the store can be tested in CI
//! where no cluster can be installed (docs/storage.md says what it does not cover):
//!
//! - `GET|HEAD /`, `GET /_cluster/health`;
//! - `HEAD /{index}`, `PUT /{index}` (settings and mappings kept; a `dynamic: strict`
//!   mapping is enforced on writes, field types roughly checked, objects with
//!   `enabled: false` kept unparsed), `GET /{index}/_mapping`, `PUT /{index}/_mapping`
//!   (new fields merged in, a changed field type refused, `_meta` replaced);
//! - `GET /{index}/_doc/{id}`: real-time, with `_seq_no`, `_primary_term`, `found`;
//! - `PUT|POST /{index}/_doc/{id}` with `op_type=create` and `if_seq_no` +
//!   `if_primary_term` (409 `version_conflict_engine_exception` when they do not hold),
//!   `refresh=true|wait_for`; `DELETE /{index}/_doc/{id}`; writes auto-create a missing
//!   index, as Elasticsearch does by default;
//! - `GET|POST /{index}/_search` (`term`, `range`, `exists`, `bool`, `match_all`; one sort field,
//!   `search_after`, `size`) over the index **as of its last refresh**: like a real
//!   cluster, a search does not see writes that were not refreshed (there is no periodic
//!   refresh here, which makes that stricter than a real cluster), and `POST
//!   /{index}/_refresh`.
//!
//! One shard per index: `_seq_no` counts per index, `_primary_term` is 1. Errors have
//! Elasticsearch's shape, `{"error":{"root_cause":[..],"type","reason"},"status"}`.
//!
//! For fault tests it can be stopped (the port refuses connections and open
//! connections are dropped) and started again on the same port with its data, or
//! stalled (requests are accepted and never answered). For concurrency tests it can
//! hold the next N document GETs until all N have read (so N writers decide on the same
//! version), or play a writer that rewrites a document after every GET of it (so every
//! compare-and-set on it loses), or answer searches with a partial 200 (a failed shard,
//! `timed_out`: `set_partial_searches`). It counts the requests it gets
//! by kind and index, which is how docs/benchmarks.md's reads and writes per issuance
//! are measured.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running (or stopped) stand-in. Its data outlives stops and restarts.
pub struct EsStandIn {
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    running: Option<Running>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Cluster {
    indices: Mutex<BTreeMap<String, IndexState>>,
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
    stalled: Mutex<Option<watch::Sender<bool>>>,
    next_uuid: Mutex<u64>,
    /// The barrier the next GETs wait at after reading, and how many may still join it.
    held_gets: Mutex<Option<(Arc<tokio::sync::Barrier>, usize)>>,
    /// Documents (index, id) rewritten by "another writer" after every GET.
    interfered: Mutex<Vec<(String, String)>>,
    /// A scripted fault: searches answer 200 from part of the index only.
    partial_searches: Mutex<Option<PartialSearch>>,
}

/// How a partial search answer says it is partial (a real cluster sends these with 200
/// when a shard fails or the search's `timeout` runs out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialSearch {
    /// `"_shards": {"total": 2, "successful": 1, "failed": 1}` and no hits.
    FailedShard,
    /// `"timed_out": true` and no hits.
    TimedOut,
}

struct IndexState {
    uuid: String,
    settings: Value,
    mappings: Value,
    docs: BTreeMap<String, Doc>,
    /// The documents as of the last refresh: what searches see.
    searchable: BTreeMap<String, Doc>,
    next_seq_no: i64,
    primary_term: i64,
}

#[derive(Clone)]
struct Doc {
    source: Value,
    seq_no: i64,
    primary_term: i64,
    version: i64,
}

/// Requests counted by kind (`doc_get`, `doc_write`, `doc_delete`, `search`,
/// `index_exists`, `index_create`, `get_mapping`, `refresh`, `info`, `cluster`,
/// `other`) and index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<(&'static str, String), u64>);

impl Counts {
    pub fn of(&self, kind: &str) -> u64 {
        self.0
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn of_index(&self, kind: &str, index: &str) -> u64 {
        self.0
            .iter()
            .filter(|((k, i), _)| *k == kind && i == index)
            .map(|(_, n)| n)
            .sum()
    }

    /// Document reads: real-time GETs and searches.
    pub fn reads(&self) -> u64 {
        self.of("doc_get") + self.of("search")
    }

    /// Document writes.
    pub fn writes(&self) -> u64 {
        self.of("doc_write") + self.of("doc_delete")
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|((kind, index), n)| format!("{kind} {index} x{n}"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

impl EsStandIn {
    /// Starts an empty stand-in on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let cluster = Arc::new(Cluster::default());
        let running = Some(serve(listener, cluster.clone()));
        Self {
            addr,
            cluster,
            running,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering: the port refuses connections, open connections are dropped.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// Starts again on the same port, with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the stand-in's port");
        self.running = Some(serve(listener, self.cluster.clone()));
    }

    /// While stalled, requests are accepted and never answered (a hung cluster).
    pub fn set_stalled(&self, stalled: bool) {
        let mut slot = self.cluster.stalled.lock().unwrap();
        match (stalled, slot.take()) {
            (true, None) => *slot = Some(watch::channel(true).0),
            (true, Some(tx)) => *slot = Some(tx),
            (false, Some(tx)) => {
                let _ = tx.send(false);
            }
            (false, None) => {}
        }
    }

    /// The next `n` document GETs read, then wait until all `n` have read, then answer.
    pub fn hold_doc_gets(&self, n: usize) {
        *self.cluster.held_gets.lock().unwrap() = Some((Arc::new(tokio::sync::Barrier::new(n)), n));
    }

    /// After every GET of this document, another writer rewrites it (same content, new
    /// `_seq_no`), so a compare-and-set based on that GET always loses.
    pub fn interfere_with(&self, index: &str, id: &str) {
        self.cluster
            .interfered
            .lock()
            .unwrap()
            .push((index.to_string(), id.to_string()));
    }

    /// Scripted fault: from now on searches answer 200 with no hits, saying they are
    /// partial (`None`: whole answers again).
    pub fn set_partial_searches(&self, partial: Option<PartialSearch>) {
        *self.cluster.partial_searches.lock().unwrap() = partial;
    }

    pub fn counts(&self) -> Counts {
        Counts(self.cluster.counts.lock().unwrap().clone())
    }

    pub fn reset_counts(&self) {
        self.cluster.counts.lock().unwrap().clear();
    }

    /// Creates an index as someone else would (e.g. a real Fleet Server), bypassing
    /// fleetauth.
    pub fn create_foreign_index(&self, name: &str, mappings: Value) {
        let uuid = self.cluster.uuid();
        self.cluster
            .indices
            .lock()
            .unwrap()
            .insert(name.to_string(), IndexState::new(uuid, json!({}), mappings));
    }

    /// The `_source` of a document, read directly.
    pub fn source(&self, index: &str, id: &str) -> Option<Value> {
        self.cluster
            .indices
            .lock()
            .unwrap()
            .get(index)?
            .docs
            .get(id)
            .map(|d| d.source.clone())
    }
}

impl Drop for EsStandIn {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
        }
    }
}

/// Accepts connections until told to stop, then drops the listener and every open
/// connection (in-flight requests included).
fn serve(listener: TcpListener, cluster: Arc<Cluster>) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let router = router(cluster);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        let mut stopping = stop_rx.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let service = TowerToHyperService::new(router.clone());
                    let mut stopping = stop_rx.clone();
                    connections.spawn(async move {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = connection => {}
                            _ = stopping.wait_for(|stop| *stop) => {}
                        }
                    });
                }
                _ = stopping.wait_for(|stop| *stop) => break,
            }
        }
        drop(listener);
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    });
    Running { stop, task }
}

type Shared = Arc<Cluster>;

fn router(cluster: Shared) -> Router {
    Router::new()
        .route("/", get(info).head(info))
        .route("/_cluster/health", get(health))
        .route(
            "/{index}",
            get(index_get).head(index_exists).put(index_create),
        )
        .route("/{index}/_mapping", get(index_mapping).put(put_mapping))
        .route(
            "/{index}/_doc/{id}",
            get(doc_get)
                .put(doc_write)
                .post(doc_write)
                .delete(doc_delete),
        )
        .route("/{index}/_search", get(search).post(search))
        .route("/{index}/_refresh", post(refresh).get(refresh))
        .fallback(no_handler)
        .layer(middleware::from_fn_with_state(
            cluster.clone(),
            count_and_stall,
        ))
        .with_state(cluster)
}

/// Counts every request, holds it while the stand-in is stalled, and marks answers
/// the way Elasticsearch does.
async fn count_and_stall(State(cluster): State<Shared>, request: Request, next: Next) -> Response {
    let (kind, index) = classify(request.method(), request.uri().path());
    *cluster
        .counts
        .lock()
        .unwrap()
        .entry((kind, index))
        .or_default() += 1;
    let stalled = cluster
        .stalled
        .lock()
        .unwrap()
        .as_ref()
        .map(|tx| tx.subscribe());
    if let Some(mut stalled) = stalled {
        let _ = stalled.wait_for(|stalled| !*stalled).await;
    }
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

fn classify(method: &Method, path: &str) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let index = percent_encoding::percent_decode_str(segments[0])
        .decode_utf8_lossy()
        .into_owned();
    let kind = match (method, segments.as_slice()) {
        (_, [""]) => "info",
        (_, ["_cluster", ..]) => "cluster",
        (&Method::HEAD, [_]) => "index_exists",
        (&Method::PUT, [_]) => "index_create",
        (&Method::PUT, [_, "_mapping"]) => "put_mapping",
        (_, [_, "_mapping"]) => "get_mapping",
        (&Method::GET, [_, "_doc", _]) => "doc_get",
        (&Method::PUT | &Method::POST, [_, "_doc", _]) => "doc_write",
        (&Method::DELETE, [_, "_doc", _]) => "doc_delete",
        (_, [_, "_search"]) => "search",
        (_, [_, "_refresh"]) => "refresh",
        _ => "other",
    };
    (kind, index)
}

// ---- responses ----

fn es_error(status: StatusCode, kind: &str, reason: &str, extra: Value) -> Response {
    let mut cause = json!({ "type": kind, "reason": reason });
    if let (Some(cause), Some(extra)) = (cause.as_object_mut(), extra.as_object()) {
        cause.extend(extra.clone());
    }
    let mut error = cause.clone();
    error["root_cause"] = json!([cause]);
    (
        status,
        Json(json!({ "error": error, "status": status.as_u16() })),
    )
        .into_response()
}

fn index_not_found(index: &str) -> Response {
    es_error(
        StatusCode::NOT_FOUND,
        "index_not_found_exception",
        &format!("no such index [{index}]"),
        json!({ "resource.type": "index_or_alias", "resource.id": index, "index_uuid": "_na_", "index": index }),
    )
}

fn bad_request(kind: &str, reason: &str) -> Response {
    es_error(StatusCode::BAD_REQUEST, kind, reason, json!({}))
}

fn version_conflict(index: &IndexState, name: &str, id: &str, reason: String) -> Response {
    es_error(
        StatusCode::CONFLICT,
        "version_conflict_engine_exception",
        &format!("[{id}]: version conflict, {reason}"),
        json!({ "index_uuid": index.uuid, "shard": "0", "index": name }),
    )
}

async fn no_handler(method: Method, uri: axum::http::Uri) -> Response {
    bad_request(
        "illegal_argument_exception",
        &format!("request [{uri}] contains unrecognized parameters or no handler found for method [{method}]"),
    )
}

async fn info() -> Response {
    Json(json!({
        "name": "standin-node",
        "cluster_name": "fleetauth-es-standin",
        "cluster_uuid": "standin",
        "version": { "number": "8.15.0", "build_flavor": "default", "minimum_wire_compatibility_version": "7.17.0" },
        "tagline": "You Know, for Search"
    }))
    .into_response()
}

async fn health() -> Response {
    Json(json!({
        "cluster_name": "fleetauth-es-standin", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1
    }))
    .into_response()
}

// ---- indices ----

impl Cluster {
    fn uuid(&self) -> String {
        let mut next = self.next_uuid.lock().unwrap();
        *next += 1;
        format!("standin-index-{next}")
    }
}

impl IndexState {
    fn new(uuid: String, settings: Value, mappings: Value) -> Self {
        Self {
            uuid,
            settings,
            mappings,
            docs: BTreeMap::new(),
            searchable: BTreeMap::new(),
            next_seq_no: 0,
            primary_term: 1,
        }
    }

    fn refresh(&mut self) {
        self.searchable = self.docs.clone();
    }
}

fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c))
}

async fn index_exists(State(cluster): State<Shared>, Path(index): Path<String>) -> StatusCode {
    if cluster.indices.lock().unwrap().contains_key(&index) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn index_get(State(cluster): State<Shared>, Path(index): Path<String>) -> Response {
    let indices = cluster.indices.lock().unwrap();
    match indices.get(&index) {
        Some(state) => Json(json!({ index.clone(): { "aliases": {}, "mappings": state.mappings, "settings": state.settings } }))
            .into_response(),
        None => index_not_found(&index),
    }
}

async fn index_create(
    State(cluster): State<Shared>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    if !valid_index_name(&index) {
        return bad_request(
            "invalid_index_name_exception",
            &format!("Invalid index name [{index}]"),
        );
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return bad_request("parse_exception", &format!("request body is not JSON: {e}"))
            }
        }
    };
    if let Some(unknown) = body.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["settings", "mappings", "aliases"].contains(&k.as_str()))
    }) {
        return bad_request(
            "parse_exception",
            &format!("unknown key [{unknown}] for create index"),
        );
    }
    let uuid = cluster.uuid();
    let mut indices = cluster.indices.lock().unwrap();
    if let Some(existing) = indices.get(&index) {
        return es_error(
            StatusCode::BAD_REQUEST,
            "resource_already_exists_exception",
            &format!("index [{index}/{}] already exists", existing.uuid),
            json!({ "index_uuid": existing.uuid, "index": index }),
        );
    }
    let mappings = body.get("mappings").cloned().unwrap_or_else(|| json!({}));
    let settings = body.get("settings").cloned().unwrap_or_else(|| json!({}));
    indices.insert(index.clone(), IndexState::new(uuid, settings, mappings));
    Json(json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }))
        .into_response()
}

async fn index_mapping(State(cluster): State<Shared>, Path(index): Path<String>) -> Response {
    let indices = cluster.indices.lock().unwrap();
    match indices.get(&index) {
        Some(state) => {
            Json(json!({ index.clone(): { "mappings": state.mappings } })).into_response()
        }
        None => index_not_found(&index),
    }
}

/// Merges `incoming` properties into `existing`: new fields are added, object fields
/// merged recursively; a field whose type changes is refused, as Elasticsearch does.
fn merge_properties(
    existing: &mut Map<String, Value>,
    incoming: &Map<String, Value>,
) -> Result<(), String> {
    for (name, field) in incoming {
        match existing.get_mut(name) {
            None => {
                existing.insert(name.clone(), field.clone());
            }
            Some(current) => {
                if current["type"] != field["type"] {
                    return Err(format!(
                        "mapper [{name}] cannot be changed from type [{}] to [{}]",
                        current["type"], field["type"]
                    ));
                }
                if let Some(inner) = field["properties"].as_object() {
                    let current_inner = current
                        .as_object_mut()
                        .expect("a mapping field is an object")
                        .entry("properties")
                        .or_insert_with(|| json!({}));
                    merge_properties(
                        current_inner.as_object_mut().ok_or("bad properties")?,
                        inner,
                    )?;
                }
            }
        }
    }
    Ok(())
}

async fn put_mapping(
    State(cluster): State<Shared>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return bad_request("parse_exception", "request body is required"),
    };
    let mut indices = cluster.indices.lock().unwrap();
    let Some(state) = indices.get_mut(&index) else {
        return index_not_found(&index);
    };
    let mut mappings = state.mappings.clone();
    if !mappings.is_object() {
        mappings = json!({});
    }
    if let Some(incoming) = body["properties"].as_object() {
        let existing = mappings
            .as_object_mut()
            .expect("an object")
            .entry("properties")
            .or_insert_with(|| json!({}));
        if let Err(reason) =
            merge_properties(existing.as_object_mut().expect("an object"), incoming)
        {
            return bad_request("illegal_argument_exception", &reason);
        }
    }
    for key in ["_meta", "dynamic"] {
        if let Some(value) = body.get(key) {
            mappings[key] = value.clone();
        }
    }
    state.mappings = mappings;
    Json(json!({ "acknowledged": true })).into_response()
}

async fn refresh(State(cluster): State<Shared>, Path(index): Path<String>) -> Response {
    let mut indices = cluster.indices.lock().unwrap();
    match indices.get_mut(&index) {
        Some(state) => {
            state.refresh();
            Json(json!({ "_shards": { "total": 1, "successful": 1, "failed": 0 } })).into_response()
        }
        None => index_not_found(&index),
    }
}

// ---- documents ----

async fn doc_get(
    State(cluster): State<Shared>,
    Path((index, id)): Path<(String, String)>,
) -> Response {
    let response = read_doc(&cluster, &index, &id);
    let barrier = {
        let mut held = cluster.held_gets.lock().unwrap();
        let barrier = held.as_ref().map(|(barrier, _)| barrier.clone());
        match held.as_mut() {
            Some((_, 1)) => *held = None,
            Some((_, left)) => *left -= 1,
            None => {}
        }
        barrier
    };
    if let Some(barrier) = barrier {
        barrier.wait().await;
    }
    response
}

fn read_doc(cluster: &Cluster, index: &str, id: &str) -> Response {
    let interfere = cluster
        .interfered
        .lock()
        .unwrap()
        .iter()
        .any(|(i, d)| i == index && d == id);
    let mut indices = cluster.indices.lock().unwrap();
    let Some(state) = indices.get_mut(index) else {
        return index_not_found(index);
    };
    let response = match state.docs.get(id) {
        Some(doc) => Json(json!({
            "_index": index, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
            "_primary_term": doc.primary_term, "found": true, "_source": doc.source
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "_index": index, "_id": id, "found": false })),
        )
            .into_response(),
    };
    if interfere {
        let seq_no = state.next_seq_no;
        if let Some(doc) = state.docs.get_mut(id) {
            doc.seq_no = seq_no;
            doc.version += 1;
            state.next_seq_no += 1;
        }
    }
    response
}

/// The `if_seq_no` / `if_primary_term` pair of a write, validated as Elasticsearch does.
#[allow(clippy::result_large_err)]
fn cas_params(query: &HashMap<String, String>) -> Result<Option<(i64, i64)>, Response> {
    let parse = |name: &str| -> Result<Option<i64>, Response> {
        query
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    bad_request(
                        "illegal_argument_exception",
                        &format!("Failed to parse [{name}]: [{v}]"),
                    )
                })
            })
            .transpose()
    };
    match (parse("if_seq_no")?, parse("if_primary_term")?) {
        (None, None) => Ok(None),
        (Some(seq_no), Some(term)) if seq_no >= 0 && term > 0 => Ok(Some((seq_no, term))),
        (Some(_), None) => Err(bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: ifSeqNo is set, but primary term is [0];",
        )),
        _ => Err(bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: invalid if_seq_no or if_primary_term;",
        )),
    }
}

fn refresh_requested(query: &HashMap<String, String>) -> Result<bool, String> {
    match query.get("refresh").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("" | "true" | "wait_for") => Ok(true),
        Some(other) => Err(format!("Unknown value for refresh: [{other}].")),
    }
}

/// The holder's `if_seq_no`/`if_primary_term` against the document: `None` when they
/// hold, else the conflict's reason.
fn cas_mismatch(current: Option<&Doc>, (seq_no, term): (i64, i64)) -> Option<String> {
    match current {
        None => Some(format!("required seqNo [{seq_no}], primary term [{term}]. but no document was found")),
        Some(doc) if doc.seq_no != seq_no || doc.primary_term != term => Some(format!(
            "required seqNo [{seq_no}], primary term [{term}]. current document has seqNo [{}] and primary term [{}]",
            doc.seq_no, doc.primary_term
        )),
        Some(_) => None,
    }
}

async fn doc_write(
    State(cluster): State<Shared>,
    Path((index, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if id.is_empty() || id.len() > 512 {
        return bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: id is too long or empty;",
        );
    }
    let cas = match cas_params(&query) {
        Ok(cas) => cas,
        Err(response) => return response,
    };
    let create = match query.get("op_type").map(String::as_str) {
        None | Some("index") => false,
        Some("create") => true,
        Some(other) => {
            return bad_request(
                "illegal_argument_exception",
                &format!("opType must be 'create' or 'index', found: [{other}]"),
            )
        }
    };
    if create && cas.is_some() {
        return bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: create operations do not support compare and set. use index instead;",
        );
    }
    let refresh = match refresh_requested(&query) {
        Ok(refresh) => refresh,
        Err(reason) => return bad_request("illegal_argument_exception", &reason),
    };
    let source: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Value::Object(o),
        Ok(_) | Err(_) => {
            return bad_request(
                "mapper_parsing_exception",
                "failed to parse, document is empty or not an object",
            )
        }
    };
    if !valid_index_name(&index) {
        return bad_request(
            "invalid_index_name_exception",
            &format!("Invalid index name [{index}]"),
        );
    }
    let uuid = cluster.uuid();
    let mut indices = cluster.indices.lock().unwrap();
    // Like a default cluster: a write to a missing index creates it (dynamic mapping).
    let state = indices
        .entry(index.clone())
        .or_insert_with(|| IndexState::new(uuid, json!({}), json!({})));
    if let Err((kind, reason)) = check_mapping(&source, &state.mappings) {
        return bad_request(kind, &reason);
    }
    let current = state.docs.get(&id);
    if create {
        if let Some(doc) = current {
            let reason = format!(
                "document already exists (current version [{}])",
                doc.version
            );
            return version_conflict(state, &index, &id, reason);
        }
    }
    if let Some(expected) = cas {
        if let Some(reason) = cas_mismatch(current, expected) {
            return version_conflict(state, &index, &id, reason);
        }
    }
    let version = current.map_or(1, |d| d.version + 1);
    let created = current.is_none();
    let doc = Doc {
        source,
        seq_no: state.next_seq_no,
        primary_term: state.primary_term,
        version,
    };
    state.next_seq_no += 1;
    state.docs.insert(id.clone(), doc.clone());
    if refresh {
        state.refresh();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut answer = json!({
        "_index": index, "_id": id, "_version": version,
        "result": if created { "created" } else { "updated" },
        "_shards": { "total": 2, "successful": 1, "failed": 0 },
        "_seq_no": doc.seq_no, "_primary_term": doc.primary_term
    });
    if query.get("refresh").map(String::as_str) == Some("true") {
        answer["forced_refresh"] = json!(true);
    }
    (status, Json(answer)).into_response()
}

async fn doc_delete(
    State(cluster): State<Shared>,
    Path((index, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let cas = match cas_params(&query) {
        Ok(cas) => cas,
        Err(response) => return response,
    };
    let refresh = refresh_requested(&query).unwrap_or(false);
    let mut indices = cluster.indices.lock().unwrap();
    let Some(state) = indices.get_mut(&index) else {
        return index_not_found(&index);
    };
    if let Some(expected) = cas {
        if let Some(reason) = cas_mismatch(state.docs.get(&id), expected) {
            return version_conflict(state, &index, &id, reason);
        }
    }
    let seq_no = state.next_seq_no;
    state.next_seq_no += 1;
    let removed = state.docs.remove(&id);
    if refresh {
        state.refresh();
    }
    let (status, result, version) = match &removed {
        Some(doc) => (StatusCode::OK, "deleted", doc.version + 1),
        None => (StatusCode::NOT_FOUND, "not_found", 1),
    };
    (
        status,
        Json(json!({
            "_index": index, "_id": id, "_version": version, "result": result,
            "_shards": { "total": 2, "successful": 1, "failed": 0 },
            "_seq_no": seq_no, "_primary_term": state.primary_term
        })),
    )
        .into_response()
}

/// Enforces a `dynamic: strict` mapping and roughly checks field types.
fn check_mapping(source: &Value, mappings: &Value) -> Result<(), (&'static str, String)> {
    let strict =
        mappings["dynamic"].as_str() == Some("strict") || mappings["dynamic"] == json!("strict");
    check_object(
        source.as_object().expect("an object"),
        &mappings["properties"],
        strict,
        "_doc",
    )
}

fn check_object(
    object: &Map<String, Value>,
    properties: &Value,
    strict: bool,
    path: &str,
) -> Result<(), (&'static str, String)> {
    for (name, value) in object {
        let field = &properties[name];
        if field.is_null() {
            if strict {
                return Err((
                    "strict_dynamic_mapping_exception",
                    format!("mapping set to strict, dynamic introduction of [{name}] within [{path}] is not allowed"),
                ));
            }
            continue;
        }
        let values = match value {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        };
        for value in values.into_iter().filter(|v| !v.is_null()) {
            let full = if path == "_doc" {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let mismatch = |expected: &str| {
                Err((
                    "mapper_parsing_exception",
                    format!("failed to parse field [{full}] of type [{expected}]"),
                ))
            };
            if field.get("properties").is_some() || field["type"] == json!("object") {
                let Some(inner) = value.as_object() else {
                    return mismatch("object");
                };
                if field["enabled"] == json!(false) {
                    continue; // kept in _source, not parsed
                }
                let inner_strict = match field["dynamic"].as_str() {
                    Some("strict") => true,
                    Some(_) => false,
                    None => strict,
                };
                check_object(inner, &field["properties"], inner_strict, &full)?;
                continue;
            }
            let ok = match field["type"].as_str() {
                Some("keyword") => value.is_string(),
                Some("long" | "integer") => value.is_i64() || value.is_u64(),
                Some("boolean") => value.is_boolean(),
                Some("binary") => value.as_str().is_some_and(|s| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                }),
                _ => true,
            };
            if !ok {
                return mismatch(field["type"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(())
}

// ---- search ----

/// The values at a dotted path (arrays flattened).
fn values_at<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![doc];
    for part in path.split('.') {
        let mut next = Vec::new();
        for value in current {
            match &value[part] {
                Value::Null => {}
                Value::Array(items) => next.extend(items.iter().filter(|v| !v.is_null())),
                other => next.push(other),
            }
        }
        current = next;
    }
    current
}

/// The single `{name: body}` of a query clause.
fn clause(query: &Value) -> Result<(&str, &Value), String> {
    let object = query
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("a query clause must have exactly one key")?;
    let (name, body) = object.iter().next().expect("one key");
    Ok((name.as_str(), body))
}

fn clauses(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn matches(query: &Value, doc: &Value) -> Result<bool, String> {
    let (name, body) = clause(query)?;
    match name {
        "match_all" => Ok(true),
        "term" => {
            let (field, wanted) = clause(body)?;
            let wanted = wanted.get("value").unwrap_or(wanted);
            Ok(values_at(doc, field).contains(&wanted))
        }
        "range" => {
            let (field, bounds) = clause(body)?;
            let bounds = bounds
                .as_object()
                .ok_or("[range] bounds must be an object")?;
            let values = values_at(doc, field);
            Ok(values.iter().any(|value| {
                bounds.iter().all(|(op, bound)| {
                    let order = compare(Some(value), Some(bound));
                    match op.as_str() {
                        "lte" => order.is_le(),
                        "lt" => order.is_lt(),
                        "gte" => order.is_ge(),
                        "gt" => order.is_gt(),
                        _ => false,
                    }
                })
            }))
        }
        "exists" => {
            let field = body["field"].as_str().ok_or("[exists] requires a field")?;
            Ok(!values_at(doc, field).is_empty())
        }
        "bool" => {
            let object = body.as_object().ok_or("[bool] must be an object")?;
            if let Some(unknown) = object
                .keys()
                .find(|k| !["filter", "must", "must_not", "should"].contains(&k.as_str()))
            {
                return Err(format!("[bool] query does not support [{unknown}]"));
            }
            for required in clauses(&body["filter"])
                .into_iter()
                .chain(clauses(&body["must"]))
            {
                if !matches(required, doc)? {
                    return Ok(false);
                }
            }
            for excluded in clauses(&body["must_not"]) {
                if matches(excluded, doc)? {
                    return Ok(false);
                }
            }
            let should = clauses(&body["should"]);
            if !should.is_empty() && body["filter"].is_null() && body["must"].is_null() {
                let mut any = false;
                for s in should {
                    any |= matches(s, doc)?;
                }
                return Ok(any);
            }
            Ok(true)
        }
        other => Err(format!(
            "unknown query [{other}] (the stand-in supports term, range, exists, bool, match_all)"
        )),
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater, // missing values sort last
        (Some(_), None) => Ordering::Less,
        (Some(Value::String(a)), Some(Value::String(b))) => a.cmp(b),
        (Some(a), Some(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
    }
}

async fn search(State(cluster): State<Shared>, Path(index): Path<String>, body: Bytes) -> Response {
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return bad_request(
                    "parsing_exception",
                    &format!("request body is not JSON: {e}"),
                )
            }
        }
    };
    let query = request
        .get("query")
        .cloned()
        .unwrap_or_else(|| json!({ "match_all": {} }));
    let size = request["size"].as_u64().unwrap_or(10) as usize;
    let sort = match clauses(&request["sort"]).as_slice() {
        [] => None,
        [Value::String(field)] => Some((field.clone(), true)),
        [Value::Object(o)] if o.len() == 1 => {
            let (field, order) = o.iter().next().expect("one key");
            let order = order.get("order").unwrap_or(order);
            Some((field.clone(), order != &json!("desc")))
        }
        _ => return bad_request("parsing_exception", "the stand-in supports one sort field"),
    };
    let after = clauses(&request["search_after"])
        .first()
        .map(|v| (*v).clone());
    if after.is_some() && sort.is_none() {
        return bad_request(
            "illegal_argument_exception",
            "Sort must contain at least one field.",
        );
    }
    let with_source = request["_source"] != json!(false);
    let indices = cluster.indices.lock().unwrap();
    let Some(state) = indices.get(&index) else {
        return index_not_found(&index);
    };
    let mut hits = Vec::new();
    for (id, doc) in &state.searchable {
        match matches(&query, &doc.source) {
            Ok(true) => hits.push((id, doc)),
            Ok(false) => {}
            Err(reason) => return bad_request("parsing_exception", &reason),
        }
    }
    let key = |doc: &Doc| {
        sort.as_ref()
            .and_then(|(field, _)| values_at(&doc.source, field).first().map(|v| (*v).clone()))
    };
    if let Some((_, ascending)) = &sort {
        hits.sort_by(|a, b| {
            let order = compare(key(a.1).as_ref(), key(b.1).as_ref());
            if *ascending {
                order
            } else {
                order.reverse()
            }
        });
        if let Some(after) = &after {
            hits.retain(|(_, doc)| {
                let order = compare(key(doc).as_ref(), Some(after));
                if *ascending {
                    order.is_gt()
                } else {
                    order.is_lt()
                }
            });
        }
    }
    let hits: Vec<Value> = hits
        .into_iter()
        .take(size)
        .map(|(id, doc)| {
            let mut hit = json!({ "_index": index, "_id": id, "_score": null });
            if with_source {
                hit["_source"] = doc.source.clone();
            }
            if sort.is_some() {
                hit["sort"] = json!([key(doc)]);
            }
            hit
        })
        .collect();
    match *cluster.partial_searches.lock().unwrap() {
        Some(PartialSearch::FailedShard) => {
            return Json(json!({
                "took": 1, "timed_out": false,
                "_shards": { "total": 2, "successful": 1, "skipped": 0, "failed": 1, "failures": [{
                    "shard": 1, "index": index, "reason": { "type": "node_not_connected_exception" }
                }] },
                "hits": { "max_score": null, "hits": [] }
            }))
            .into_response()
        }
        Some(PartialSearch::TimedOut) => {
            return Json(json!({
                "took": 1, "timed_out": true,
                "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
                "hits": { "max_score": null, "hits": [] }
            }))
            .into_response()
        }
        None => {}
    }
    Json(json!({
        "took": 1, "timed_out": false,
        "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
        "hits": { "max_score": null, "hits": hits }
    }))
    .into_response()
}
