//! Thin typed calls over the official `elasticsearch` crate: exactly the requests the
//! store makes, each returning typed results and a typed [`EsError`]. No decisions live
//! here; [`super`] composes these calls. The one policy here: a request the cluster
//! rejects as overloaded (429) is sent again, at most [`MAX_REJECTED_RESENDS`] times
//! after short jittered pauses, before the rejection is reported.
//!
//! Why re-sending is safe: a 429 (`es_rejected_execution_exception` from a full
//! thread-pool queue, an indexing-pressure rejection, `circuit_breaking_exception`) is
//! given before the operation runs; and even if one had run, every write fleetauth
//! makes is conditional (`op_type=create`, or `if_seq_no`/`if_primary_term`, for
//! deletes too), so a write sent twice can only be applied once: the second answers
//! 409, which the store already treats as "someone else wrote first". Reads, searches,
//! refreshes, mapping updates and index creation (an existing index is fine) are
//! idempotent.
//!
//! Only APIs present in Elasticsearch 7.10 and later (and in OpenSearch) are used:
//! `HEAD /{index}`, `PUT /{index}`, `GET /{index}/_mapping`, `GET /{index}/_doc/{id}`
//! (real-time by default), `POST /{index}/_doc/{id}` with `op_type=create` or
//! `if_seq_no`/`if_primary_term`, `DELETE /{index}/_doc/{id}` with
//! `if_seq_no`/`if_primary_term`, `PUT /{index}/_mapping` (new fields, at start-up),
//! `POST /{index}/_refresh` (before a purge) and `POST /{index}/_search` with
//! `search_after`.
//!
//! Error messages never carry credentials, URLs or document contents: a transport error
//! is reported by its innermost cause, an HTTP error by its status, its Elasticsearch
//! error type, and (except for 400s, whose reasons can quote a field's value) its reason.

use std::future::Future;
use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsParts, IndicesGetMappingParts, IndicesPutMappingParts,
    IndicesRefreshParts,
};
use elasticsearch::params::{OpType, Refresh};
use elasticsearch::{DeleteParts, Elasticsearch, GetParts, IndexParts, SearchParts};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{ElasticsearchSettings, EsAuth};

/// How many times a request rejected with 429 is sent again before the rejection is
/// reported (as [`EsError::Refused`] with status 429: the store is unavailable, 503).
pub const MAX_REJECTED_RESENDS: u32 = 3;
/// The pause before the first resend; it doubles for each next one (25, 50, 100 ms,
/// each drawn between half and all of it), so the resends add at most 175 ms.
const FIRST_RESEND_PAUSE: Duration = Duration::from_millis(25);

/// A failed call to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("elasticsearch did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("elasticsearch is unreachable: {0}")]
    Unreachable(String),
    #[error("elasticsearch answered {status} {kind}{reason}")]
    Refused {
        status: u16,
        kind: String,
        reason: String,
    },
    #[error("elasticsearch sent an unexpected answer: {0}")]
    Unexpected(String),
    /// A search that did not see every shard (`timed_out`, or failed shards): its hits
    /// may lack documents, so nothing may be decided from it.
    #[error("elasticsearch answered a search from part of the index only: {0}")]
    PartialSearch(String),
    #[error("document {index}/{id} cannot be read: {reason}")]
    BadDocument {
        index: String,
        id: String,
        reason: String,
    },
    #[error("cannot set up the elasticsearch client: {0}")]
    Setup(String),
}

impl EsError {
    /// Whether retrying later may succeed (the cluster is down, slow, overloaded, or
    /// refuses us for now: 401/403, a missing index, 429, 5xx), as opposed to data the
    /// cluster and fleetauth do not agree on (a 400 for our request, e.g. a document
    /// that an index made by another version refuses, or a stored document we cannot
    /// read).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::BadDocument { .. } | Self::Refused { status: 400, .. }
        )
    }
}

/// Where a document stands: what `if_seq_no` / `if_primary_term` must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub seq_no: i64,
    pub primary_term: i64,
}

/// A document as read, with the version a conditional write must name.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub doc: T,
    pub version: Version,
}

/// The condition of a write.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The document must not exist (`op_type=create`).
    Absent,
    /// The document must still be at this version.
    At(Version),
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    /// 409: the condition did not hold (someone else wrote first).
    Conflict,
}

/// When a write becomes visible to searches (reads by id see it at once regardless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// At the next periodic refresh.
    Eventually,
    /// Before the call returns (`refresh=wait_for`).
    BeforeReturn,
}

/// A handle on one cluster. Cheap to clone.
#[derive(Clone)]
pub struct EsClient {
    es: Elasticsearch,
    timeout: Duration,
}

#[derive(Deserialize)]
struct GetResponse {
    found: bool,
    #[serde(default)]
    _seq_no: Option<i64>,
    #[serde(default)]
    _primary_term: Option<i64>,
    #[serde(default)]
    _source: Option<Value>,
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    _shards: Option<ShardCounts>,
    hits: SearchHits,
}

#[derive(Deserialize)]
struct ShardCounts {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    successful: u64,
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct SearchHits {
    hits: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    _id: String,
    #[serde(default)]
    sort: Vec<Value>,
}

/// The innermost cause of an error: for a refused connection "Connection refused (os
/// error 111)" rather than a message quoting the request URL.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl EsClient {
    pub fn connect(settings: &ElasticsearchSettings) -> Result<Self, EsError> {
        let pool = SingleNodeConnectionPool::new(settings.url.clone());
        let mut builder = TransportBuilder::new(pool).timeout(settings.timeout);
        builder = match &settings.auth {
            EsAuth::None => builder,
            EsAuth::Basic { username, password } => builder.auth(Credentials::Basic(
                username.clone(),
                password.expose().to_string(),
            )),
            EsAuth::ApiKey(key) => match key.expose().split_once(':') {
                Some((id, secret)) => {
                    builder.auth(Credentials::ApiKey(id.to_string(), secret.to_string()))
                }
                None => builder.auth(Credentials::EncodedApiKey(key.expose().to_string())),
            },
        };
        if let Some(pem) = &settings.ca_cert_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| EsError::Setup(format!("elasticsearch.ca_cert: {}", innermost(&e))))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder.build().map_err(|e| EsError::Setup(innermost(&e)))?;
        Ok(Self {
            es: Elasticsearch::new(transport),
            timeout: settings.timeout,
        })
    }

    fn transport_error(&self, e: elasticsearch::Error) -> EsError {
        if e.is_timeout() {
            EsError::Timeout(self.timeout)
        } else {
            EsError::Unreachable(innermost(&e))
        }
    }

    /// Sends the request that `request` builds, again after a pause while the cluster
    /// rejects it as overloaded (429; see the module doc), and reads the answer.
    async fn send<F, Fut>(&self, mut request: F) -> Result<(u16, Value), EsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response, elasticsearch::Error>>,
    {
        let mut resends = 0;
        loop {
            let (status, body) = self.read(request().await).await?;
            if status != 429 {
                return Ok((status, body));
            }
            if resends == MAX_REJECTED_RESENDS {
                crate::telemetry::metrics::store_rejection("gave_up");
                return Ok((status, body));
            }
            crate::telemetry::metrics::store_rejection("resent");
            let pause = FIRST_RESEND_PAUSE * 2u32.pow(resends);
            let pause = rand::rng().random_range(pause / 2..=pause);
            tokio::time::sleep(pause).await;
            resends += 1;
        }
    }

    /// Status and body of a response (the body read within the same timeout).
    async fn read(
        &self,
        sent: Result<Response, elasticsearch::Error>,
    ) -> Result<(u16, Value), EsError> {
        let response = sent.map_err(|e| self.transport_error(e))?;
        let status = response.status_code().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        match serde_json::from_slice(&bytes) {
            Ok(body) => Ok((status, body)),
            Err(_) if status >= 400 => Err(EsError::Refused {
                status,
                kind: "(not an Elasticsearch error body)".into(),
                reason: String::new(),
            }),
            Err(e) => Err(EsError::Unexpected(format!(
                "status {status}, body is not JSON: {e}"
            ))),
        }
    }

    /// Turns an error response into an [`EsError`].
    fn refused(status: u16, body: &Value) -> EsError {
        let error = &body["error"];
        let kind = error["type"]
            .as_str()
            .or_else(|| error.as_str())
            .unwrap_or("(no error type)")
            .to_string();
        let reason = match (status, error["reason"].as_str()) {
            (400, _) | (_, None) => String::new(),
            (_, Some(reason)) => format!(": {}", reason.chars().take(300).collect::<String>()),
        };
        EsError::Refused {
            status,
            kind,
            reason,
        }
    }

    fn error_type(body: &Value) -> Option<&str> {
        body["error"]["type"].as_str()
    }

    pub async fn index_exists(&self, index: &str) -> Result<bool, EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .indices()
                    .exists(IndicesExistsParts::Index(&[index]))
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// Creates an index; `false` if it already exists (another instance won the race).
    pub async fn create_index(&self, index: &str, body: &Value) -> Result<bool, EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .indices()
                    .create(IndicesCreateParts::Index(index))
                    .body(body)
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, _) => Ok(true),
            (400, body) if Self::error_type(&body) == Some("resource_already_exists_exception") => {
                Ok(false)
            }
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// The `_meta` of an index's mapping (`Null` when it has none).
    pub async fn mapping_meta(&self, index: &str) -> Result<Value, EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .indices()
                    .get_mapping(IndicesGetMappingParts::Index(&[index]))
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, body) => {
                // Keyed by the concrete index name (which differs when `index` is an alias).
                let mappings = body
                    .as_object()
                    .and_then(|indices| indices.values().next())
                    .map(|i| i["mappings"].clone())
                    .ok_or_else(|| {
                        EsError::Unexpected(format!("no mapping returned for {index}"))
                    })?;
                Ok(mappings["_meta"].clone())
            }
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// Adds fields to an index's mapping (and replaces its `_meta`).
    pub async fn put_mapping(&self, index: &str, body: &Value) -> Result<(), EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .indices()
                    .put_mapping(IndicesPutMappingParts::Index(&[index]))
                    .body(body)
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, _) => Ok(()),
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// Makes every acknowledged write to `index` visible to searches (`POST
    /// /{index}/_refresh`). Costly on a busy index: only for rare jobs (purges).
    pub async fn refresh(&self, index: &str) -> Result<(), EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .indices()
                    .refresh(IndicesRefreshParts::Index(&[index]))
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, _) => Ok(()),
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// Deletes a document if it is still at `version`; `Done` also when it is gone.
    pub async fn delete(
        &self,
        index: &str,
        id: &str,
        version: Version,
    ) -> Result<Written, EsError> {
        let sent = self
            .send(move || async move {
                self.es
                    .delete(DeleteParts::IndexId(index, id))
                    .if_seq_no(version.seq_no)
                    .if_primary_term(version.primary_term)
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, _) => Ok(Written::Done),
            (404, body) if body.get("result").and_then(Value::as_str) == Some("not_found") => {
                Ok(Written::Conflict)
            }
            (409, body) if Self::error_type(&body) == Some("version_conflict_engine_exception") => {
                Ok(Written::Conflict)
            }
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// A real-time read by id: the latest write, refreshed or not.
    pub async fn get<T: DeserializeOwned>(
        &self,
        index: &str,
        id: &str,
    ) -> Result<Option<Versioned<T>>, EsError> {
        let (status, body) = self
            .send(move || async move { self.es.get(GetParts::IndexId(index, id)).send().await })
            .await?;
        if !matches!(status, 200 | 404) || body.get("found").is_none() {
            return Err(Self::refused(status, &body));
        }
        let bad = |reason: String| EsError::BadDocument {
            index: index.to_string(),
            id: id.to_string(),
            reason,
        };
        let got: GetResponse = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        if !got.found {
            return Ok(None);
        }
        let (Some(seq_no), Some(primary_term), Some(source)) =
            (got._seq_no, got._primary_term, got._source)
        else {
            return Err(EsError::Unexpected(format!(
                "{index}/{id}: found without _seq_no, _primary_term or _source"
            )));
        };
        let doc = serde_json::from_value(source).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Versioned {
            doc,
            version: Version {
                seq_no,
                primary_term,
            },
        }))
    }

    /// Writes a whole document if `expect` holds.
    pub async fn put<T: Serialize>(
        &self,
        index: &str,
        id: &str,
        doc: &T,
        expect: Expect,
        visibility: Visibility,
    ) -> Result<Written, EsError> {
        let sent = self
            .send(move || async move {
                let mut request = self.es.index(IndexParts::IndexId(index, id)).body(doc);
                request = match expect {
                    Expect::Absent => request.op_type(OpType::Create),
                    Expect::At(v) => request.if_seq_no(v.seq_no).if_primary_term(v.primary_term),
                };
                if visibility == Visibility::BeforeReturn {
                    request = request.refresh(Refresh::WaitFor);
                }
                request.send().await
            })
            .await?;
        match sent {
            (200 | 201, _) => Ok(Written::Done),
            (409, body) if Self::error_type(&body) == Some("version_conflict_engine_exception") => {
                Ok(Written::Conflict)
            }
            (status, body) => Err(Self::refused(status, &body)),
        }
    }

    /// One page of the ids of documents matching `query`, in `sort_field` order, after
    /// `after` (a search: sees only refreshed writes).
    pub async fn search_ids(
        &self,
        index: &str,
        query: Value,
        sort_field: &str,
        after: Option<&str>,
        size: usize,
    ) -> Result<Vec<(String, Option<String>)>, EsError> {
        let mut order = serde_json::Map::new();
        order.insert(sort_field.to_string(), json!("asc"));
        let mut body = json!({
            "query": query,
            "sort": [order],
            "size": size,
            "_source": false,
            "track_total_hits": false
        });
        if let Some(after) = after {
            body["search_after"] = json!([after]);
        }
        let body = &body;
        let sent = self
            .send(move || async move {
                self.es
                    .search(SearchParts::Index(&[index]))
                    .body(body)
                    .send()
                    .await
            })
            .await?;
        match sent {
            (200, body) => {
                let found: SearchResponse = serde_json::from_value(body)
                    .map_err(|e| EsError::Unexpected(format!("search answer: {e}")))?;
                // A 200 may still be a partial answer; hits from it would silently drop
                // keys from an invalidation, a purge or a listing.
                if found.timed_out {
                    return Err(EsError::PartialSearch(format!(
                        "search of {index} timed out"
                    )));
                }
                if let Some(shards) = &found._shards {
                    if shards.failed > 0 || shards.successful < shards.total {
                        return Err(EsError::PartialSearch(format!(
                            "search of {index}: {} of {} shards answered, {} failed",
                            shards.successful, shards.total, shards.failed
                        )));
                    }
                }
                Ok(found
                    .hits
                    .hits
                    .into_iter()
                    .map(|hit| {
                        let sort = hit.sort.first().and_then(Value::as_str).map(str::to_string);
                        (hit._id, sort)
                    })
                    .collect())
            }
            (status, body) => Err(Self::refused(status, &body)),
        }
    }
}
