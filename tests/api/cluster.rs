//! fleetauth as a cluster: three real `fleetauth serve` processes (the binary) on one
//! real Elasticsearch node (`crate::common::es::shared_node_url`; never skipped), each
//! with its own data dir and all on the same index prefix, as behind a load balancer.

use std::time::{Duration, Instant};

use crate::common::process::{Server, SharedStore};
use crate::common::requests::{authenticate, error_code, jwks_kids, pair_from, whoami};
use crate::helpers::jwt_parts;

const KEY_POLL: Duration = Duration::from_millis(500);

/// The real node under a fresh prefix (deleted at the end), every process polling
/// for keys every [`KEY_POLL`].
fn shared_store(label: &str) -> SharedStore {
    SharedStore::on_shared_node(label)
        .with_env(
            "FLEETAUTH_JWT__KEY_POLL_INTERVAL",
            &format!("{}ms", KEY_POLL.as_millis()),
        )
        .with_env("FLEETAUTH_LOG", "warn")
}

/// Servers, started one after the other (the first creates the indices).
fn servers(store: &SharedStore, n: usize) -> Vec<Server> {
    (0..n).map(|_| store.serve(&[])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_across_three_instances_leave_exactly_one_usable_pair() {
    let store = shared_store("race");
    let api_key = store.enroll(&[], "racer");
    let servers = servers(&store, 3);
    let client = reqwest::Client::new();
    let start = pair_from(authenticate(&client, &servers[0].base, &api_key).await).await;
    assert_eq!(
        whoami(&client, &servers[1].base, &start.access_token).await,
        200
    );

    let mut current = start;
    for round in 0..3 {
        let responses = futures::future::join_all((0..12).map(|i| {
            let (client, server) = (&client, &servers[i % 3]);
            let refresh = format!("Bearer {}", current.refresh_token);
            async move { authenticate(client, &server.base, &refresh).await }
        }))
        .await;
        let mut pairs = Vec::new();
        for response in responses {
            let status = response.status().as_u16();
            assert!(
                status < 500,
                "round {round}: no answer may be a 5xx: {status}"
            );
            if status == 200 {
                pairs.push(pair_from(response).await);
            } else {
                assert_eq!(
                    error_code(response).await,
                    (401, "invalid_grant".into()),
                    "round {round}: a loser gets invalid_grant"
                );
            }
        }
        assert!(!pairs.is_empty(), "round {round}: someone won");
        let mut usable = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            if whoami(&client, &servers[i % 3].base, &pair.access_token).await == 200 {
                usable.push(pair.clone());
            }
        }
        assert_eq!(
            usable.len(),
            1,
            "round {round}: exactly one returned pair is usable"
        );
        for pair in pairs
            .iter()
            .filter(|p| p.access_token != usable[0].access_token)
        {
            assert_eq!(
                error_code(
                    authenticate(
                        &client,
                        &servers[1].base,
                        &format!("Bearer {}", pair.refresh_token)
                    )
                    .await
                )
                .await,
                (401, "invalid_grant".into()),
                "round {round}: a replaced pending pair is refused"
            );
        }
        // The winner works on every instance (no false alarm) and, promoted there,
        // is the current pair of the next round.
        current = usable.remove(0);
        for server in &servers {
            assert_eq!(
                whoami(&client, &server.base, &current.access_token).await,
                200,
                "round {round}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_on_one_instance_revokes_the_family_on_the_others() {
    let store = shared_store("reuse");
    let api_key = store.enroll(&[], "reused");
    let servers = servers(&store, 3);
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let client = reqwest::Client::new();
    let first = pair_from(authenticate(&client, &a.base, &api_key).await).await;
    assert_eq!(whoami(&client, &a.base, &first.access_token).await, 200);
    let second =
        pair_from(authenticate(&client, &c.base, &format!("Bearer {}", first.refresh_token)).await)
            .await;
    assert_eq!(whoami(&client, &a.base, &second.access_token).await, 200); // first is now retired

    let replayed = authenticate(&client, &b.base, &format!("Bearer {}", first.refresh_token)).await;

    assert_eq!(error_code(replayed).await, (401, "invalid_grant".into()));
    assert_eq!(
        whoami(&client, &a.base, &second.access_token).await,
        401,
        "revoked on A"
    );
    assert_eq!(
        whoami(&client, &c.base, &second.access_token).await,
        401,
        "revoked on C"
    );
    assert_eq!(
        authenticate(
            &client,
            &c.base,
            &format!("Bearer {}", second.refresh_token)
        )
        .await
        .status(),
        401
    );
    let fresh = pair_from(authenticate(&client, &b.base, &api_key).await).await;
    assert_eq!(
        whoami(&client, &c.base, &fresh.access_token).await,
        200,
        "start over with the API key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_unenrolment_and_key_rotation_reach_every_instance() {
    let store = shared_store("acts");
    let api_key = store.enroll(&[], "acted-on");
    let spare = store.cli_ok(
        &[],
        &[
            "api-key",
            "create",
            "--agent-id",
            "acted-on",
            "--name",
            "spare",
        ],
    );
    let spare_key = format!("ApiKey {}", spare["encoded"].as_str().unwrap());
    let servers = servers(&store, 3);
    let client = reqwest::Client::new();
    for server in &servers {
        assert_eq!(
            authenticate(&client, &server.base, &spare_key)
                .await
                .status(),
            200
        );
    }

    // api-key invalidate: at once on every instance (keys are read on every request).
    store.cli_ok(
        &[],
        &[
            "api-key",
            "invalidate",
            "--id",
            spare["id"].as_str().unwrap(),
        ],
    );
    for server in &servers {
        assert_eq!(
            authenticate(&client, &server.base, &spare_key)
                .await
                .status(),
            401
        );
    }

    // keys rotate: every instance's JWKS lists the new key within the poll interval.
    let pair = pair_from(authenticate(&client, &servers[0].base, &api_key).await).await;
    assert_eq!(
        whoami(&client, &servers[1].base, &pair.access_token).await,
        200,
        "promoted"
    );
    let rotated = store.cli_ok(&[], &["keys", "rotate"]);
    let kid = rotated["kid"].as_str().unwrap().to_string();
    let rotated_at = Instant::now();
    for server in &servers {
        loop {
            if jwks_kids(&client, &server.base).await.contains(&kid) {
                break;
            }
            assert!(
                rotated_at.elapsed() < KEY_POLL * 2 + Duration::from_secs(5),
                "{} never listed {kid}",
                server.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "new key in every JWKS after {:?} (poll interval {KEY_POLL:?})",
        rotated_at.elapsed()
    );
    assert_eq!(
        whoami(&client, &servers[2].base, &pair.access_token).await,
        200,
        "a token of the old key still verifies"
    );
    let signed_after = pair_from(authenticate(&client, &servers[2].base, &api_key).await).await;
    assert_eq!(jwt_parts(&signed_after.access_token).0["kid"], kid.as_str());

    // agent unenroll: every token of the agent refused at once on every instance.
    let live = pair_from(authenticate(&client, &servers[1].base, &api_key).await).await;
    assert_eq!(
        whoami(&client, &servers[0].base, &live.access_token).await,
        200
    );
    store.cli_ok(&[], &["agent", "unenroll", "--agent-id", "acted-on"]);
    for server in &servers {
        assert_eq!(
            whoami(&client, &server.base, &live.access_token).await,
            401,
            "{}",
            server.base
        );
        assert_eq!(
            authenticate(&client, &server.base, &api_key).await.status(),
            401
        );
    }
}
