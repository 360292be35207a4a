//! Real 429 answers: a node of its own whose write thread pool has one thread and one
//! queue slot (`thread_pool.write.size: 1`, `thread_pool.write.queue_size: 1`), under
//! concurrent load from three API families through one `fleetauth serve`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::es::{get_json as es_json, OwnNode};
use crate::common::requests::{
    authenticate, basic, blocking, http_client, metric_value, metrics, pair_from, pair_of,
    status_retry_after_body, Pair,
};
use crate::nodes::{Fleetauth, BOOTSTRAP_PASSWORD};

const FLEET_AGENTS: usize = 8;
const OAUTH_AGENTS: usize = 4;
const SECURITY_WRITERS: usize = 2;

#[derive(Debug)]
struct Answer {
    family: &'static str,
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn answer(family: &'static str, response: reqwest::Response) -> (Answer, Option<Value>) {
    let (status, retry_after, body) = status_retry_after_body(response).await;
    let ok = (status < 300).then(|| body.clone());
    (
        Answer {
            family,
            status,
            retry_after,
            body,
        },
        ok,
    )
}

async fn rejected_writes(client: &reqwest::Client, url: &str) -> u64 {
    let stats = es_json(client, format!("{url}/_nodes/stats/thread_pool")).await;
    stats["nodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["thread_pool"]["write"]["rejected"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_429_gives_bounded_resends_then_503_with_retry_after_and_no_partial_state()
{
    let node = blocking(|| {
        OwnNode::start(
            "rejecting",
            &[(
                "FLEETAUTH_ES_SETTINGS",
                "thread_pool.write.size: 1\nthread_pool.write.queue_size: 1",
            )],
        )
    })
    .await;
    let fleetauth = Fleetauth::new("rejecting");
    let agents = FLEET_AGENTS + OAUTH_AGENTS;
    let keys: Vec<String> = (0..agents)
        .map(|a| fleetauth.enroll(&node.url, &format!("agent-{a}")))
        .collect();
    let server = fleetauth.serve(&node.url, Duration::from_secs(5));
    let base = server.base.clone();
    let client = http_client();
    let mut first = Vec::new();
    for key in &keys {
        // One at a time: the node takes them.
        first.push(pair_from(authenticate(&client, &base, key).await).await);
    }
    let rejected_before = rejected_writes(&client, &node.url).await;
    let basic = basic("elastic", BOOTSTRAP_PASSWORD);

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut chains = Vec::new();
    for (a, start) in first.into_iter().enumerate() {
        let (client, base, stop, answers) =
            (client.clone(), base.clone(), stop.clone(), answers.clone());
        chains.push(tokio::spawn(async move {
            let mut pair: Pair = start;
            while !stop.load(Ordering::SeqCst) {
                let (family, response) = if a < FLEET_AGENTS {
                    let auth = format!("Bearer {}", pair.refresh_token);
                    ("fleet", authenticate(&client, &base, &auth).await)
                } else {
                    let form = [
                        ("grant_type", "refresh_token"),
                        ("refresh_token", pair.refresh_token.as_str()),
                    ];
                    let sent = client.post(format!("{base}/oauth/token")).form(&form);
                    ("oauth", sent.send().await.expect("request"))
                };
                let (answer, ok) = answer(family, response).await;
                if let Some(body) = ok {
                    pair = pair_of(&body);
                }
                answers.lock().unwrap().push(answer);
            }
            pair
        }));
    }
    let mut writers = Vec::new();
    for w in 0..SECURITY_WRITERS {
        let (client, base, stop, answers, basic) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            answers.clone(),
            basic.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut created = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("load-{w}-{n}");
                let response = client
                    .post(format!("{base}/_security/api_key"))
                    .header("Authorization", &basic)
                    .json(&json!({ "name": name }))
                    .send()
                    .await
                    .expect("request");
                let (answer, ok) = answer("security", response).await;
                if let Some(body) = ok {
                    created.push(body["id"].as_str().unwrap().to_string());
                }
                answers.lock().unwrap().push(answer);
            }
            created
        }));
    }
    let started = Instant::now();
    let unavailable = |family: &str| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.family == family && a.status == 503)
            .count()
    };
    while started.elapsed() < Duration::from_secs(8)
        || ["fleet", "oauth", "security"]
            .iter()
            .any(|f| unavailable(f) == 0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "every family should have met a rejection it could not resend past: fleet {}, oauth {}, security {}",
            unavailable("fleet"),
            unavailable("oauth"),
            unavailable("security")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut last = Vec::new();
    for chain in chains {
        last.push(chain.await.unwrap());
    }
    let mut created = Vec::new();
    for writer in writers {
        created.extend(writer.await.unwrap());
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());

    let rejected = rejected_writes(&client, &node.url).await - rejected_before;
    let metrics = metrics(&client, &base).await;
    let resent = metric_value(
        &metrics,
        "fleetauth_store_rejections_total{outcome=\"resent\"}",
    );
    let gave_up = metric_value(
        &metrics,
        "fleetauth_store_rejections_total{outcome=\"gave_up\"}",
    );
    let count = |family: &str, ok: bool| {
        answers
            .iter()
            .filter(|a| a.family == family && (a.status < 300) == ok)
            .count()
    };
    eprintln!(
        "node rejected {rejected} writes (429); fleetauth resent {resent}, gave up {gave_up}; \
         fleet {} ok / {} 503, oauth {} ok / {} 503, security {} ok / {} 503",
        count("fleet", true),
        count("fleet", false),
        count("oauth", true),
        count("oauth", false),
        count("security", true),
        count("security", false)
    );
    assert!(rejected > 0, "the node answered 429");
    assert!(resent > 0.0, "fleetauth resent rejected requests");
    assert!(gave_up > 0.0, "and gave up after its bounded resends");
    assert!(
        resent
            >= gave_up * f64::from(fleetauth::store::elasticsearch::client::MAX_REJECTED_RESENDS),
        "each given-up request was resent {} times first",
        fleetauth::store::elasticsearch::client::MAX_REJECTED_RESENDS
    );

    // Each answer: a success, or 503 with Retry-After in its family's own format.
    for a in &answers {
        if a.status < 300 {
            continue;
        }
        assert_eq!(a.status, 503, "only 503 for an overloaded cluster: {a:?}");
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
        let in_format = match a.family {
            "fleet" => a.body["statusCode"] == 503 && a.body["error"].is_string(),
            "oauth" => a.body["error"] == "temporarily_unavailable",
            _ => a.body["status"] == 503 && a.body["error"]["type"].is_string(),
        };
        assert!(in_format, "the family's error format: {a:?}");
    }

    // No partial state: every chain's last acknowledged pair works (a 503 changed
    // nothing the chain relied on), and each API key acknowledged exists.
    for (a, pair) in last.iter().enumerate() {
        let response =
            authenticate(&client, &base, &format!("Bearer {}", pair.refresh_token)).await;
        assert_eq!(response.status(), 200, "agent-{a}'s last acknowledged pair");
    }
    let listed: Value = client
        .get(format!("{base}/_security/api_key"))
        .header("Authorization", &basic)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["api_keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    for id in &created {
        assert!(
            ids.contains(&id.as_str()),
            "acknowledged API key {id} exists"
        );
    }
    drop(server);
}
