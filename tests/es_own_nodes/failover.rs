//! A three-node cluster on loopback (each node its own HTTP and transport ports, every
//! node master-eligible), fleetauth's indices with one replica (`auto_expand_replicas:
//! 0-1`), three `fleetauth serve` processes (one per node), agents refreshing through
//! them; then `kill -9` of the node that holds the primary of the agents index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::es::{get_json as es_json, OwnCluster};
use crate::common::requests::{
    authenticate, blocking, http_client, pair_from, pair_of, status_retry_after_body, whoami, Pair,
};
use crate::nodes::Fleetauth;

const AGENTS: usize = 6;
const ES_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Answer {
    agent: usize,
    server: usize,
    status: u16,
    after_kill: bool,
    retry_after: Option<String>,
    body: Value,
}

/// The node (0-based) holding the started primary of `index`, as node `via` sees it.
async fn primary_node(
    client: &reqwest::Client,
    cluster: &OwnCluster,
    via: usize,
    index: &str,
) -> Option<usize> {
    let shards = es_json(
        client,
        format!(
            "{}/_cat/shards/{index}?format=json&h=prirep,state,node",
            cluster.urls[via]
        ),
    )
    .await;
    shards
        .as_array()?
        .iter()
        .find(|s| s["prirep"] == "p" && s["state"] == "STARTED")
        .map(|s| cluster.node_of(s["node"].as_str().unwrap()))
}

async fn primary_term(client: &reqwest::Client, url: &str, index: &str, id: &str) -> i64 {
    let doc = es_json(client, format!("{url}/{index}/_doc/{id}")).await;
    doc["_primary_term"]
        .as_i64()
        .unwrap_or_else(|| panic!("{index}/{id}: {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_of_the_agents_primary_mid_load_fails_over_and_loses_no_acknowledged_pair()
{
    let cluster = blocking(|| OwnCluster::start("failover", 3)).await;
    let fleetauth = Fleetauth::new("failover");
    let keys: Vec<String> = (0..AGENTS)
        .map(|a| fleetauth.enroll(&cluster.urls[0], &format!("agent-{a}")))
        .collect();
    let servers: Vec<_> = cluster
        .urls
        .iter()
        .map(|url| fleetauth.serve(url, ES_TIMEOUT))
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let client = http_client();
    let index = format!("{}.fleet-agents", fleetauth.prefix);

    // Every fleetauth index has a replica on another node.
    let settings = es_json(
        &client,
        format!(
            "{}/{}.*/_settings/index.number_of_replicas?expand_wildcards=all",
            cluster.urls[0], fleetauth.prefix
        ),
    )
    .await;
    let indices = settings.as_object().expect("indices");
    assert!(indices.len() >= 2, "fleetauth's indices: {settings}");
    for (name, s) in indices {
        assert_eq!(
            s["settings"]["index"]["number_of_replicas"], "1",
            "{name}: one replica on a 3-node cluster"
        );
    }

    let mut first = Vec::new();
    for (a, key) in keys.iter().enumerate() {
        first.push(pair_from(authenticate(&client, &bases[a % 3], key).await).await);
    }
    let health = es_json(
        &client,
        format!(
            "{}/_cluster/health/{index}?wait_for_status=green&timeout=60s",
            cluster.urls[0]
        ),
    )
    .await;
    assert_eq!(health["status"], "green", "{health}");

    // Load: each agent runs its refresh chain, moving to the next instance after each
    // answer (and on a 503 retrying the same refresh token there).
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut chains = Vec::new();
    for (agent, start) in first.into_iter().enumerate() {
        let (client, bases) = (client.clone(), bases.clone());
        let (killed, stop, answers) = (killed.clone(), stop.clone(), answers.clone());
        chains.push(tokio::spawn(async move {
            let mut pair: Pair = start;
            let mut next = agent;
            while !stop.load(Ordering::SeqCst) {
                let server = next % 3;
                next += 1;
                let after_kill = killed.load(Ordering::SeqCst);
                let response = authenticate(
                    &client,
                    &bases[server],
                    &format!("Bearer {}", pair.refresh_token),
                )
                .await;
                let (status, retry_after, mut body) = status_retry_after_body(response).await;
                if status == 200 {
                    pair = pair_of(&body);
                    body = Value::Null;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answers.lock().unwrap().push(Answer {
                    agent,
                    server,
                    status,
                    after_kill,
                    retry_after,
                    body,
                });
            }
            pair
        }));
    }
    let ok_count = |after_kill: bool| -> Vec<usize> {
        let answers = answers.lock().unwrap();
        (0..AGENTS)
            .map(|a| {
                answers
                    .iter()
                    .filter(|x| x.agent == a && x.status == 200 && x.after_kill == after_kill)
                    .count()
            })
            .collect()
    };
    let started = Instant::now();
    while ok_count(false).iter().any(|n| *n < 3) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the chains did not run before the kill: {:?}",
            ok_count(false)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let victim = primary_node(&client, &cluster, 0, &index)
        .await
        .expect("a started primary");
    let survivor = (victim + 1) % 3;
    let term_before = primary_term(&client, &cluster.urls[survivor], &index, "agent-0").await;
    eprintln!(
        "killing node {} (primary of {index}, _primary_term {term_before})",
        victim + 1
    );
    // The mark goes up once the node's process is gone (the script waits for it): a
    // request sent while the kill was still under way may reach the node, so it is
    // counted as before the kill.
    cluster.kill_9(victim);
    killed.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();

    // Every agent carries on through the instances whose node is alive.
    while ok_count(true).iter().any(|n| *n < 5) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(120),
            "the chains did not carry on after the failover: {:?}",
            ok_count(true)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut last = Vec::new();
    for chain in chains {
        last.push(chain.await.unwrap());
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());

    // Only successes, or 503 with Retry-After in the Fleet API's format.
    for answer in &answers {
        match answer.status {
            200 => {}
            503 => {
                assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
                assert!(
                    answer.body["statusCode"] == 503 && answer.body["error"].is_string(),
                    "the Fleet API's error format: {answer:?}"
                );
            }
            _ => panic!("only 200 or 503 through the failover, never a wrong answer: {answer:?}"),
        }
    }
    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
    eprintln!(
        "{} answers: before the kill 200 x{}, 503 x{}; after it 200 x{}, 503 x{} \
         ({} of them from the instance on the killed node); {:?} from the kill to the end",
        answers.len(),
        count(&|a| !a.after_kill && a.status == 200),
        count(&|a| !a.after_kill && a.status == 503),
        count(&|a| a.after_kill && a.status == 200),
        count(&|a| a.after_kill && a.status == 503),
        count(&|a| a.after_kill && a.status == 503 && a.server == victim),
        killed_at.elapsed()
    );
    assert_eq!(
        count(&|a| a.after_kill && a.status == 200 && a.server == victim),
        0,
        "the instance on the killed node cannot have issued anything"
    );
    assert!(
        count(&|a| a.after_kill && a.status == 503) > 0,
        "the outage was seen"
    );

    // The primary moved to a surviving node, under a higher primary term.
    let moved = primary_node(&client, &cluster, survivor, &index)
        .await
        .expect("a started primary after the failover");
    assert_ne!(moved, victim, "the primary is on a surviving node");
    for a in 0..AGENTS {
        let term = primary_term(
            &client,
            &cluster.urls[survivor],
            &index,
            &format!("agent-{a}"),
        )
        .await;
        assert!(
            term > term_before,
            "agent-{a}: _primary_term {term_before} -> {term} across the failover"
        );
    }

    // Nothing acknowledged was lost: every chain's last pair (each earlier one was
    // used by the chain itself) works, on every surviving instance in turn.
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let mut newest = Vec::new();
    for (a, pair) in last.iter().enumerate() {
        let server = alive[a % alive.len()];
        let response = authenticate(
            &client,
            &bases[server],
            &format!("Bearer {}", pair.refresh_token),
        )
        .await;
        newest.push(pair_from(response).await);
    }

    // The compare-and-set under the new primary term: a race of 8 refreshes of one
    // token over the surviving instances leaves exactly one usable pair.
    let racing = newest[0].clone();
    let responses = futures::future::join_all((0..8).map(|i| {
        let (client, base) = (&client, &bases[alive[i % alive.len()]]);
        let refresh = format!("Bearer {}", racing.refresh_token);
        async move { authenticate(client, base, &refresh).await }
    }))
    .await;
    let mut pairs = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        if status == 200 {
            pairs.push(pair_from(response).await);
        } else {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid_grant")),
                "a loser of the race gets invalid_grant: {body}"
            );
        }
    }
    let mut usable = 0;
    for pair in &pairs {
        if whoami(&client, &bases[alive[0]], &pair.access_token).await == 200 {
            usable += 1;
        }
    }
    assert_eq!(
        usable,
        1,
        "exactly one of {} returned pairs is usable",
        pairs.len()
    );
    drop(servers);
}
