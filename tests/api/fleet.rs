//! Every credential kind at the Fleet endpoints, and the shape of what they answer.

use serde_json::{json, Value};

use crate::helpers::{jwt_parts, pair_from, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_api_key_buys_a_pair_in_the_body_and_the_headers() {
    let app = spawn_app().await;
    let key = app.enroll("agent-1").await;

    let response = app.authenticate(&format!("ApiKey {}", key.encoded)).await;

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1200);
    assert_eq!(
        headers["x-fleet-access-token"],
        body["access_token"].as_str().unwrap()
    );
    assert_eq!(
        headers["x-fleet-refresh-token"],
        body["refresh_token"].as_str().unwrap()
    );
    assert_eq!(headers["x-fleet-token-expires-in"], "1200");
    // Refresh tokens carry at least 256 bits: 43 base64url characters of secret.
    assert!(
        body["refresh_token"]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .len()
            >= 43
    );

    let (header, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    assert_eq!(claims["sub"], "agent-1");
    assert_eq!(claims["client_id"], key.id.as_str());
    assert!(claims["iss"].as_str().unwrap().starts_with("fleetauth:"));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    assert!(claims["jti"].as_str().unwrap().len() >= 32);
}

#[tokio::test]
async fn basic_client_authentication_is_accepted_like_an_api_key() {
    use base64::Engine;
    let app = spawn_app().await;
    let key = app.enroll("agent-basic").await;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", key.id, key.api_key));

    let pair = app.pair(&format!("Basic {basic}")).await;

    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
}

#[tokio::test]
async fn whoami_names_the_agent_for_an_api_key_and_for_a_jwt() {
    let app = spawn_app().await;
    let key = app.enroll("agent-2").await;
    let pair = app.pair_with_api_key(&key).await;

    let by_key: Value = app
        .whoami(&format!("ApiKey {}", key.encoded))
        .await
        .json()
        .await
        .unwrap();
    let by_jwt: Value = app
        .whoami(&format!("Bearer {}", pair.access_token))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(
        by_key,
        json!({ "agent_id": "agent-2", "auth_method": "api_key", "token_id": key.id })
    );
    let (_, claims) = jwt_parts(&pair.access_token);
    assert_eq!(
        by_jwt,
        json!({ "agent_id": "agent-2", "auth_method": "jwt", "token_id": claims["jti"] })
    );
}

#[tokio::test]
async fn a_refresh_token_is_accepted_as_bearer_and_in_a_json_body() {
    let app = spawn_app().await;
    let key = app.enroll("agent-3").await;
    let first = app.pair_with_api_key(&key).await;

    let by_header = app.refresh(&first.refresh_token).await;
    assert_eq!(by_header.status(), 200);
    let second = pair_from(by_header).await;

    let by_body = app
        .authenticate_with_body(json!({ "refresh_token": second.refresh_token }))
        .await;
    assert_eq!(by_body.status(), 200);
    let third = pair_from(by_body).await;
    assert_eq!(app.whoami_status(&third.access_token).await, 200);
}

/// RFC 8725 §2.8: a token is accepted only where its kind is expected. The JSON body's
/// `refresh_token` takes a refresh token only (issue 12 item 3: an access token there
/// was exchanged); `/oauth/token` refuses the same case.
#[tokio::test]
async fn an_access_token_or_api_key_in_the_body_refresh_token_is_refused() {
    use base64::Engine;
    let app = spawn_app().await;
    let key = app.enroll("agent-confused").await;
    let pair = app.pair_with_api_key(&key).await;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", key.id, key.api_key));

    for not_a_refresh_token in [
        pair.access_token.as_str(),
        key.encoded.as_str(),
        basic.as_str(),
        "not-a-token",
    ] {
        let response = app
            .authenticate_with_body(json!({ "refresh_token": not_a_refresh_token }))
            .await;
        assert_eq!(response.status(), 401, "{not_a_refresh_token}");
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["statusCode"], 401);
        assert_eq!(body["error"], "invalid_grant");
    }

    // The same access token at /oauth/token's refresh grant, for comparison.
    let oauth = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", pair.access_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status(), 400);
    assert_eq!(
        oauth.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // Refused, not consumed: the pair still works where each token belongs.
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
    let by_body = app
        .authenticate_with_body(json!({ "refresh_token": pair.refresh_token }))
        .await;
    assert_eq!(by_body.status(), 200);
}

#[tokio::test]
async fn a_valid_access_token_buys_a_new_pair() {
    let app = spawn_app().await;
    let key = app.enroll("agent-4").await;
    let first = app.pair_with_api_key(&key).await;

    let second = app.pair(&format!("Bearer {}", first.access_token)).await;

    assert_ne!(second.access_token, first.access_token);
    let (_, claims) = jwt_parts(&second.access_token);
    assert_eq!(claims["sub"], "agent-4");
    assert_eq!(app.whoami_status(&second.access_token).await, 200);
}

#[tokio::test]
async fn a_refresh_token_is_not_accepted_by_a_resource() {
    let app = spawn_app().await;
    let key = app.enroll("agent-5").await;
    let pair = app.pair_with_api_key(&key).await;

    assert_eq!(app.whoami_status(&pair.refresh_token).await, 401);
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_with_a_challenge_and_a_json_error() {
    let app = spawn_app().await;
    let key = app.enroll("agent-6").await;
    use base64::Engine;
    let wrong =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:not-the-secret", key.id));

    let missing = app
        .client
        .post(app.url("/api/fleet/authenticate"))
        .send()
        .await
        .unwrap();
    let wrong = app.authenticate(&format!("ApiKey {wrong}")).await;

    for response in [missing, wrong] {
        assert_eq!(response.status(), 401);
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("ApiKey"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["statusCode"], 401);
        assert!(body["message"].as_str().is_some());
    }
}

#[tokio::test]
async fn with_jwt_disabled_the_authenticate_endpoint_is_404() {
    let app = spawn_app_with(|s| s.jwt.enabled = false).await;
    let key = app.enroll("agent-7").await;

    let response = app.authenticate(&format!("ApiKey {}", key.encoded)).await;

    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn unenrolling_stops_every_credential_at_once() {
    let app = spawn_app().await;
    let key = app.enroll("agent-8").await;
    let pair = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);

    app.unenroll("agent-8").await;

    assert_eq!(app.whoami_status(&pair.access_token).await, 401);
    assert_eq!(app.refresh(&pair.refresh_token).await.status(), 401);
    assert_eq!(
        app.authenticate(&format!("ApiKey {}", key.encoded))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.whoami(&format!("ApiKey {}", key.encoded))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn an_invalidated_api_key_stops_working_at_once_even_when_cached() {
    let app = spawn_app().await;
    let key = app.enroll("agent-9").await;
    // Two uses: the second is served from the verification cache.
    app.pair_with_api_key(&key).await;
    app.pair_with_api_key(&key).await;

    app.invalidate_api_key(&key.id).await;

    assert_eq!(
        app.authenticate(&format!("ApiKey {}", key.encoded))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn stateless_mode_accepts_a_signed_token_without_the_store() {
    let app = spawn_app_with(|s| s.jwt.stateless = true).await;
    let key = app.enroll("agent-10").await;
    let first = app.pair_with_api_key(&key).await;
    // Replace the pending pair: in stateful mode the first access token would now be refused.
    app.pair_with_api_key(&key).await;

    assert_eq!(app.whoami_status(&first.access_token).await, 200);
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
}
