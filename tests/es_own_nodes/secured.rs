//! A node with security on (`xpack.security.enabled: true`: the integ-test-zip
//! distribution ships x-pack-security; `elastic`'s password from the keystore's
//! `bootstrap.password`; single-node discovery, so transport TLS is not required, and
//! plain HTTP on loopback). What fleetauth's cluster credential needs, and how it
//! coexists with a `.fleet-agents` index of Fleet's.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::es::{self, OwnNode};
use crate::common::requests::{authenticate, blocking, http_client, pair_from, whoami};
use crate::nodes::Fleetauth;

const ELASTIC_PASSWORD: &str = "secured-node-elastic-pw";
const FLEETAUTH_PASSWORD: &str = "fleetauth-store-user-pw";

/// The role docs/storage.md gives fleetauth's credential: index privileges on its own
/// indices only, no cluster privilege (a file-realm role: roles.yml).
fn store_role_yml(prefix: &str) -> String {
    format!(
        "fleetauth_store:\n  indices:\n    - names: [\"{prefix}.fleet-agents\", \"{prefix}.fleetauth-*\"]\n      \
         privileges: [\"create_index\", \"view_index_metadata\", \"read\", \"write\", \"maintenance\"]\n"
    )
}

async fn as_elastic(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    es::as_user(client, ("elastic", ELASTIC_PASSWORD), method, url, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_secured_cluster_the_documented_privileges_suffice_and_fleet_s_index_is_left_alone() {
    let fleetauth = Fleetauth::new("secured");
    let prefix = fleetauth.prefix.clone();
    let roles = store_role_yml(&prefix);
    let users = format!(
        "fleetauth:{FLEETAUTH_PASSWORD}:fleetauth_store\nreader:{FLEETAUTH_PASSWORD}:viewer"
    );
    let node = blocking(move || {
        OwnNode::start(
            "secured",
            &[
                ("FLEETAUTH_ES_SETTINGS", "xpack.security.enabled: true"),
                ("FLEETAUTH_ES_BOOTSTRAP_PASSWORD", ELASTIC_PASSWORD),
                ("FLEETAUTH_ES_FILE_ROLES", &roles),
                ("FLEETAUTH_ES_FILE_USERS", &users),
            ],
        )
    })
    .await;
    let client = http_client();
    let url = node.url.clone();

    // Security is on: anonymous requests are refused by the node itself.
    let anonymous = client
        .get(format!("{url}/_cluster/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the node requires authentication");

    // Without credentials fleetauth cannot start, and says why without secrets.
    let anonymous_store = Fleetauth::new("secured-anon");
    let refused = anonymous_store
        .cli(&url, &["api-key", "create", "--agent-id", "nobody"])
        .expect_err("no credentials: refused");
    assert!(refused.contains("401"), "names the refusal: {refused}");

    // A file-realm user with exactly the documented privileges on one prefix.
    let fleetauth = fleetauth
        .with_env("FLEETAUTH_ELASTICSEARCH__USERNAME", "fleetauth")
        .with_env("FLEETAUTH_ELASTICSEARCH__PASSWORD", FLEETAUTH_PASSWORD)
        .with_env("FLEETAUTH_API_KEYS__PURGE_INTERVAL", "1s")
        .with_env("FLEETAUTH_LOG", "warn");
    let api_key = fleetauth.enroll(&url, "secured-agent");
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = fleetauth.serve_logging_to(&url, Duration::from_secs(10), log.path());
    let first = pair_from(authenticate(&client, &server.base, &api_key).await).await;
    let second = pair_from(
        authenticate(
            &client,
            &server.base,
            &format!("Bearer {}", first.refresh_token),
        )
        .await,
    )
    .await;
    assert_eq!(
        whoami(&client, &server.base, &second.access_token).await,
        200
    );
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "/readyz on the secured cluster");
    // The remover (every second here) refreshes and searches the API-key index;
    // unenroll searches it too, then invalidates by compare-and-set.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleetauth
        .cli(&url, &["agent", "unenroll", "--agent-id", "secured-agent"])
        .expect("agent unenroll with the documented privileges");
    let refused = authenticate(&client, &server.base, &api_key).await;
    assert_eq!(
        refused.status(),
        401,
        "the unenrolled agent's key is refused"
    );
    let logged = std::fs::read_to_string(log.path()).unwrap();
    // (Without `maintenance` both removers log a 403 for `indices:admin/refresh`.)
    assert!(
        !logged.contains("could not remove") && !logged.contains("unauthorized"),
        "the removers work with the documented privileges:\n{logged}"
    );
    assert!(
        !logged.contains(FLEETAUTH_PASSWORD),
        "the cluster password never reaches the log"
    );
    drop(server);

    // Fewer privileges (the built-in `viewer`: no create_index, no write): start-up
    // fails and names a 403.
    let reader = Fleetauth::new("secured-reader")
        .with_env("FLEETAUTH_ELASTICSEARCH__USERNAME", "reader")
        .with_env("FLEETAUTH_ELASTICSEARCH__PASSWORD", FLEETAUTH_PASSWORD);
    let refused = reader
        .cli(&url, &["api-key", "create", "--agent-id", "read-only"])
        .expect_err("read-only credentials: refused");
    assert!(refused.contains("403"), "names the refusal: {refused}");
    assert!(
        !refused.contains(FLEETAUTH_PASSWORD),
        "no secret: {refused}"
    );

    // Fleet's own `.fleet-agents` (on a real deployment a system index of the Fleet
    // plugin, which this distribution lacks: here an index with Fleet's kind of mapping,
    // made by `elastic`, imitates it). fleetauth without a prefix refuses it, names
    // the index and the setting, and changes nothing in it.
    let (status, body) = as_elastic(
        &client,
        reqwest::Method::PUT,
        format!("{url}/.fleet-agents"),
        Some(json!({
            "settings": { "index": { "hidden": true, "number_of_replicas": 0 } },
            "mappings": { "dynamic": false, "properties": {
                "agent": { "properties": { "id": { "type": "keyword" }, "version": { "type": "keyword" } } },
                "active": { "type": "boolean" },
                "policy_id": { "type": "keyword" },
                "last_checkin": { "type": "date" }
            } }
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = as_elastic(
        &client,
        reqwest::Method::PUT,
        format!("{url}/.fleet-agents/_doc/fleet-agent-1?refresh=true"),
        Some(json!({ "agent": { "id": "fleet-agent-1", "version": "9.2.4" }, "active": true, "policy_id": "p" })),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    let (_, before) = as_elastic(
        &client,
        reqwest::Method::GET,
        format!("{url}/.fleet-agents/_doc/fleet-agent-1"),
        None,
    )
    .await;
    let mut unprefixed = Fleetauth::new("unused")
        .with_env("FLEETAUTH_ELASTICSEARCH__USERNAME", "elastic")
        .with_env("FLEETAUTH_ELASTICSEARCH__PASSWORD", ELASTIC_PASSWORD);
    unprefixed.prefix = String::new();
    let refused = unprefixed
        .cli(&url, &["api-key", "create", "--agent-id", "intruder"])
        .expect_err("Fleet's .fleet-agents is not fleetauth's");
    assert!(
        refused.contains(".fleet-agents") && refused.contains("index_prefix"),
        "names the index and the setting: {refused}"
    );
    assert!(!refused.contains(ELASTIC_PASSWORD), "no secret: {refused}");
    let (_, after) = as_elastic(
        &client,
        reqwest::Method::GET,
        format!("{url}/.fleet-agents/_doc/fleet-agent-1"),
        None,
    )
    .await;
    assert_eq!(before, after, "Fleet's document is unchanged");
    let (_, mapping) = as_elastic(
        &client,
        reqwest::Method::GET,
        format!("{url}/.fleet-agents/_mapping"),
        None,
    )
    .await;
    assert!(
        mapping[".fleet-agents"]["mappings"]["_meta"].is_null(),
        "Fleet's mapping is unchanged: {mapping}"
    );
    // With its prefix, fleetauth works beside it (the servers above did).
}
