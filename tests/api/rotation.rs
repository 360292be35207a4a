//! The rotation protocol of SPEC §3, end to end over HTTP.

use std::collections::HashSet;

use crate::common::requests::error_code;
use crate::helpers::{metric_value, pair_from, race_winners, spawn_app};

#[tokio::test]
async fn a_new_pair_is_pending_until_used_and_the_current_pair_keeps_working() {
    let app = spawn_app().await;
    let key = app.enroll("r1").await;
    let first = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&first.access_token).await, 200); // promotes `first`

    let second = pair_from(app.refresh(&first.refresh_token).await).await;

    // `second` is pending: `first` is still current.
    assert_eq!(app.whoami_status(&first.access_token).await, 200);
    // Using `second` promotes it and retires `first`.
    assert_eq!(app.whoami_status(&second.access_token).await, 200);
    assert_eq!(app.whoami_status(&first.access_token).await, 401);
    assert_eq!(app.whoami_status(&second.access_token).await, 200);
}

#[tokio::test]
async fn refreshing_with_the_pending_refresh_token_promotes_it() {
    let app = spawn_app().await;
    let key = app.enroll("r2").await;
    let first = app.pair_with_api_key(&key).await;
    app.whoami_status(&first.access_token).await;
    let second = pair_from(app.refresh(&first.refresh_token).await).await;

    let third = pair_from(app.refresh(&second.refresh_token).await).await;

    assert_eq!(
        app.whoami_status(&first.access_token).await,
        401,
        "first is retired"
    );
    assert_eq!(
        app.whoami_status(&second.access_token).await,
        200,
        "second is current"
    );
    assert_eq!(
        app.whoami_status(&third.access_token).await,
        200,
        "third is pending, now promoted"
    );
}

#[tokio::test]
async fn a_lost_response_is_recovered_by_retrying_with_the_current_refresh_token() {
    let app = spawn_app().await;
    let key = app.enroll("r3").await;
    let current = app.pair_with_api_key(&key).await;
    app.whoami_status(&current.access_token).await;

    // The answer to this refresh never reaches the agent.
    let lost = pair_from(app.refresh(&current.refresh_token).await).await;
    let retried = app.refresh(&current.refresh_token).await;

    assert_eq!(retried.status(), 200);
    let retried = pair_from(retried).await;
    assert_eq!(app.whoami_status(&retried.access_token).await, 200);
    // The lost pair was replaced before use: refused, but nothing is revoked.
    assert_eq!(
        error_code(app.refresh(&lost.refresh_token).await).await,
        (401, "invalid_grant".into())
    );
    assert_eq!(app.whoami_status(&lost.access_token).await, 401);
    // No false alarm: nothing was revoked. (The reuse counter is process-wide and other
    // tests of this binary trigger reuse on purpose, concurrently, so its value cannot
    // be asserted here; it is counted only where the agent's tokens are revoked.)
    assert_eq!(app.whoami_status(&retried.access_token).await, 200);
    assert_eq!(app.refresh(&retried.refresh_token).await.status(), 200);
}

#[tokio::test]
async fn reuse_of_a_retired_refresh_token_revokes_every_token_of_the_agent() {
    let app = spawn_app().await;
    let key = app.enroll("r4").await;
    let first = app.pair_with_api_key(&key).await;
    app.whoami_status(&first.access_token).await;
    let second = pair_from(app.refresh(&first.refresh_token).await).await;
    assert_eq!(app.whoami_status(&second.access_token).await, 200); // first is now retired
    let reuse_before = metric_value(&app.metrics().await, "fleetauth_refresh_token_reuse_total");

    let replayed = app.refresh(&first.refresh_token).await;

    assert_eq!(error_code(replayed).await, (401, "invalid_grant".into()));
    assert_eq!(
        app.whoami_status(&second.access_token).await,
        401,
        "the live access token is revoked"
    );
    assert_eq!(
        app.refresh(&second.refresh_token).await.status(),
        401,
        "the live refresh token is revoked"
    );
    assert!(
        metric_value(&app.metrics().await, "fleetauth_refresh_token_reuse_total")
            >= reuse_before + 1.0
    );
    // The agent can start over with its API key.
    let fresh = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&fresh.access_token).await, 200);
}

#[tokio::test]
async fn twenty_concurrent_refreshes_leave_exactly_one_usable_pair() {
    let app = spawn_app().await;
    let key = app.enroll("r5").await;
    let start = app.pair_with_api_key(&key).await;
    app.whoami_status(&start.access_token).await;

    let responses =
        futures::future::join_all((0..20).map(|_| app.refresh(&start.refresh_token))).await;

    let pairs = race_winners(responses).await;
    assert!(!pairs.is_empty());
    let mut usable = Vec::new();
    for pair in &pairs {
        // Probe the refresh tokens without side effects on the winner: a loser is
        // refused outright; the winner's refresh (pending) would promote it, so test
        // with the access tokens first.
        if app.whoami_status(&pair.access_token).await == 200 {
            usable.push(pair.clone());
        }
    }
    assert_eq!(usable.len(), 1, "exactly one returned pair is usable");
    for pair in pairs
        .iter()
        .filter(|p| p.access_token != usable[0].access_token)
    {
        assert_eq!(
            error_code(app.refresh(&pair.refresh_token).await).await,
            (401, "invalid_grant".into())
        );
    }
    // No false alarm: the agent was not revoked.
    assert_eq!(app.whoami_status(&usable[0].access_token).await, 200);
    assert_eq!(app.refresh(&usable[0].refresh_token).await.status(), 200);
    let distinct: HashSet<_> = pairs.iter().map(|p| p.refresh_token.clone()).collect();
    assert_eq!(distinct.len(), pairs.len());
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app().await;
    let key = app.enroll("r6").await;
    let pair = app.pair_with_api_key(&key).await;

    app.clock.advance(20 * 60 + 31); // past exp + 30 s leeway
    assert_eq!(app.whoami_status(&pair.access_token).await, 401);
    assert_eq!(
        app.refresh(&pair.refresh_token).await.status(),
        200,
        "the refresh token lives 24 h"
    );

    let later = app.pair_with_api_key(&key).await;
    app.clock.advance(24 * 3600 + 1);
    assert_eq!(
        error_code(app.refresh(&later.refresh_token).await).await,
        (401, "invalid_grant".into())
    );
}

#[tokio::test]
async fn issuance_is_counted_in_the_metrics() {
    let app = spawn_app().await;
    let key = app.enroll("r7").await;
    let before = app.metrics().await;
    let pair = app.pair_with_api_key(&key).await;
    app.refresh(&pair.refresh_token).await;
    app.whoami_status("garbage").await;

    let after = app.metrics().await;

    for series in [
        r#"fleetauth_tokens_issued_total{endpoint="fleet",grant="client_credentials",credential="api_key",kind="access"}"#,
        r#"fleetauth_tokens_issued_total{endpoint="fleet",grant="refresh_token",credential="refresh_token",kind="refresh"}"#,
        r#"fleetauth_token_issue_seconds_count{endpoint="fleet",grant="client_credentials",credential="api_key"}"#,
    ] {
        assert!(
            metric_value(&after, series) >= metric_value(&before, series) + 1.0,
            "{series}"
        );
    }
    assert!(after.contains("fleetauth_auth_failures_total{reason="));
    // Every series is described.
    assert!(after.contains("# HELP fleetauth_tokens_issued_total "));
}
