//! The small requests tests repeat, against a server at `base` (`http://ADDRESS`): the
//! Fleet API (authenticate, refresh, whoami), the JWKS and `/metrics`, and what their
//! answers hold (a pair, an error code, `Retry-After`, a JWT's parts, a metric's
//! value); credentials as header values, and compact JWS built by hand.

use std::collections::BTreeSet;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

/// A pair as the Fleet API returns it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access_token: String,
    pub refresh_token: String,
}

/// The pair of a `200` answer (a pair endpoint's); any other answer fails the test.
pub async fn pair_from(response: reqwest::Response) -> Pair {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "a pair: {body}");
    pair_of(&body)
}

/// The pair in a JSON body (`access_token`, `refresh_token`).
pub fn pair_of(body: &Value) -> Pair {
    Pair {
        access_token: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        refresh_token: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
    }
}

/// `POST /api/fleet/authenticate` with this `Authorization`, not yet sent.
pub fn authenticate_request(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/api/fleet/authenticate"))
        .header("Authorization", authorization)
}

/// `POST /api/fleet/authenticate` with this `Authorization` (an API key, a refresh or
/// an access token, Basic).
pub async fn authenticate(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
) -> reqwest::Response {
    authenticate_request(client, base, authorization)
        .send()
        .await
        .expect("request")
}

/// A refresh: `POST /api/fleet/authenticate` with `Authorization: Bearer <refresh>`.
pub async fn refresh(
    client: &reqwest::Client,
    base: &str,
    refresh_token: &str,
) -> reqwest::Response {
    authenticate(client, base, &format!("Bearer {refresh_token}")).await
}

/// `GET /api/fleet/whoami` with this `Authorization`.
pub async fn whoami_with(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
) -> reqwest::Response {
    client
        .get(format!("{base}/api/fleet/whoami"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("request")
}

/// The status of `GET /api/fleet/whoami` with an access token.
pub async fn whoami(client: &reqwest::Client, base: &str, access_token: &str) -> u16 {
    whoami_with(client, base, &format!("Bearer {access_token}"))
        .await
        .status()
        .as_u16()
}

/// The status and the `error` code of a JSON error answer (`""` if it has none).
pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON body");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// An answer's status, its `Retry-After` and its JSON body (`null` if none): what a
/// 429 or 503 is checked by.
pub async fn status_retry_after_body(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// The status of `GET url`.
pub async fn get_status(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// The `kid`s of `GET /.well-known/jwks.json`.
pub async fn jwks_kids(client: &reqwest::Client, base: &str) -> BTreeSet<String> {
    let jwks: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("JWKS request")
        .json()
        .await
        .expect("JWKS JSON");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

/// `GET /metrics`: the Prometheus text.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample `name_and_labels` exactly (a counter, or a histogram's
/// count line) in Prometheus text, 0 if absent.
pub fn metric_value(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of the samples of `name` with `label` in their label set.
pub fn metric_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The decoded (unverified) header and claims of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(part.expect("JWT part"))
                .expect("base64url"),
        )
        .expect("json")
    };
    (decode(parts.next()), decode(parts.next()))
}

/// A compact JWS of `header` and `claims`, its signing input signed by `sign` (a
/// genuine key, another key, or a forger's choice).
pub fn compact_jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{signature}")
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A client whose every request is bounded (a hung server fails the test, not hangs it).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Runs blocking work (a process, a script) off the async test's runtime threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}
