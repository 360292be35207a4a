//! DPoP (RFC 9449) over real HTTP. Proofs are made by the test as a client would:
//! P-256 keys from aws-lc-rs, JWS signed by the `jsonwebtoken` crate, the RFC 7638
//! thumbprint computed here from the key's coordinates. Bound pairs at
//! `/api/fleet/authenticate`, `/oauth/token` and enrollment; bound access tokens at
//! `whoami`; refresh tokens bound for their whole family; replay, wrong keys, wrong
//! `htm`/`htu`/`ath`, stale proofs and Bearer use of a bound token refused; server
//! nonces; `dpop.require_for_agents`; introspection's `cnf`; metadata.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleetauth::clock::Clock;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::requests::error_code;
use crate::helpers::{basic, jwt_parts, metric_value, spawn_app, spawn_app_with, TestApp};

/// A client's DPoP key pair.
struct DpopKey {
    encoding: EncodingKey,
    jwk: Value,
}

impl DpopKey {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point[0], 4, "an uncompressed point");
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    /// RFC 7638: SHA-256 of the required members in lexicographic order.
    fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().unwrap(),
            self.jwk["y"].as_str().unwrap()
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn proof_with(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(self.jwk.clone()).unwrap());
        encode(&header, &claims, &self.encoding).unwrap()
    }

    /// A fresh proof for `method` `url`, for `access_token` if given, at `now`.
    fn proof(&self, method: &str, url: &str, access_token: Option<&str>, now: i64) -> String {
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        self.proof_with(claims)
    }
}

async fn authenticate_dpop(app: &TestApp, authorization: &str, proof: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/fleet/authenticate"))
        .header("Authorization", authorization)
        .header("DPoP", proof)
        .send()
        .await
        .unwrap()
}

async fn whoami_dpop(
    app: &TestApp,
    scheme: &str,
    token: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url("/api/fleet/whoami"))
        .header("Authorization", format!("{scheme} {token}"));
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_fleet_pair_bound_by_a_proof_needs_that_key_for_its_whole_family() {
    let app = spawn_app().await;
    let key = app.enroll("agent-dpop").await;
    let dpop = DpopKey::generate();
    let now = app.clock.now();
    let auth_url = app.url("/api/fleet/authenticate");
    let whoami_url = app.url("/api/fleet/whoami");

    let response = authenticate_dpop(
        &app,
        &format!("ApiKey {}", key.encoded),
        &dpop.proof("POST", &auth_url, None, now),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let (_, claims) = jwt_parts(&access);
    assert_eq!(claims["cnf"]["jkt"], dpop.thumbprint());

    // At the resource: DPoP scheme + a fresh proof of the key, with ath.
    let proof = dpop.proof("GET", &whoami_url, Some(&access), now);
    let ok = whoami_dpop(&app, "DPoP", &access, Some(&proof)).await;
    assert_eq!(ok.status(), 200);
    // The same proof again is a replay.
    let replayed = whoami_dpop(&app, "DPoP", &access, Some(&proof)).await;
    assert_eq!(replayed.status(), 401);
    assert!(replayed.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("DPoP "));
    assert_eq!(
        error_code(replayed).await,
        (401, "invalid_dpop_proof".into())
    );
    // As a Bearer token, or without a proof, or with another key's proof: refused.
    assert_eq!(
        whoami_dpop(&app, "Bearer", &access, None).await.status(),
        401
    );
    assert_eq!(whoami_dpop(&app, "DPoP", &access, None).await.status(), 401);
    let thief = DpopKey::generate();
    let stolen = thief.proof("GET", &whoami_url, Some(&access), now);
    assert_eq!(
        error_code(whoami_dpop(&app, "DPoP", &access, Some(&stolen)).await).await,
        (401, "invalid_dpop_proof".into())
    );
    // A proof for another URL, another method, another token, or too old.
    for bad in [
        dpop.proof("GET", &app.url("/api/fleet/other"), Some(&access), now),
        dpop.proof("POST", &whoami_url, Some(&access), now),
        dpop.proof("GET", &whoami_url, Some("another-token"), now),
        dpop.proof("GET", &whoami_url, None, now),
        dpop.proof("GET", &whoami_url, Some(&access), now - 3600),
    ] {
        let response = whoami_dpop(&app, "DPoP", &access, Some(&bad)).await;
        assert_eq!(
            error_code(response).await,
            (401, "invalid_dpop_proof".into())
        );
    }

    // The refresh token is bound too: no proof, or the thief's, is refused (400 at a
    // token endpoint) without revoking anything.
    let no_proof = app.refresh(&refresh).await;
    assert_eq!(
        error_code(no_proof).await,
        (400, "invalid_dpop_proof".into())
    );
    let with_thief = authenticate_dpop(
        &app,
        &format!("Bearer {refresh}"),
        &thief.proof("POST", &auth_url, None, now),
    )
    .await;
    assert_eq!(
        error_code(with_thief).await,
        (400, "invalid_dpop_proof".into())
    );
    let next = authenticate_dpop(
        &app,
        &format!("Bearer {refresh}"),
        &dpop.proof("POST", &auth_url, None, now),
    )
    .await;
    assert_eq!(next.status(), 200);
    let next: Value = next.json().await.unwrap();
    assert_eq!(next["token_type"], "DPoP");
    let (_, claims) = jwt_parts(next["access_token"].as_str().unwrap());
    assert_eq!(
        claims["cnf"]["jkt"],
        dpop.thumbprint(),
        "bound for the whole family"
    );
    assert!(next["refresh_token"].as_str().unwrap().starts_with("fd1."));

    // An unbound token may not be presented with the DPoP scheme.
    let plain = app.pair_with_api_key(&key).await;
    let proof = dpop.proof("GET", &whoami_url, Some(&plain.access_token), now);
    let response = whoami_dpop(&app, "DPoP", &plain.access_token, Some(&proof)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.whoami_status(&plain.access_token).await, 200);
}

#[tokio::test]
async fn oauth_clients_get_bound_tokens_and_introspection_reports_cnf() {
    let app = spawn_app().await;
    let client = app.client_key("dpop-client").await;
    let dpop = DpopKey::generate();
    let token_url = app.url("/oauth/token");
    let before = metric_value(
        &app.metrics().await,
        "fleetauth_dpop_proof_failures_total{reason=\"dpop_replayed\"}",
    );
    let proof = dpop.proof("POST", &token_url, None, app.clock.now());
    let response = app
        .client
        .post(&token_url)
        .header("Authorization", basic(&client))
        .header("DPoP", &proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap();

    let introspected: Value = app
        .client
        .post(app.url("/oauth/introspect"))
        .header("Authorization", basic(&client))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["token_type"], "DPoP");
    assert_eq!(introspected["cnf"]["jkt"], dpop.thumbprint());

    // The same proof again is refused in the OAuth format.
    let replay = app
        .client
        .post(&token_url)
        .header("Authorization", basic(&client))
        .header("DPoP", &proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    let error: Value = replay.json().await.unwrap();
    assert_eq!(error["error"], "invalid_dpop_proof");
    let after = metric_value(
        &app.metrics().await,
        "fleetauth_dpop_proof_failures_total{reason=\"dpop_replayed\"}",
    );
    assert!(after >= before + 1.0);

    // Malformed proofs: 400, never 5xx.
    for bad in ["", "abc", "a.b.c", &"x".repeat(10_000)] {
        let response = app
            .client
            .post(&token_url)
            .header("Authorization", basic(&client))
            .header("DPoP", bad)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:.20}");
    }
    // A proof carrying its private key, or a symmetric key, or the wrong typ.
    let now = app.clock.now();
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("JWT".into());
    header.jwk = Some(serde_json::from_value(dpop.jwk.clone()).unwrap());
    let wrong_typ = encode(
        &header,
        &json!({"jti": "j1", "htm": "POST", "htu": token_url, "iat": now}),
        &dpop.encoding,
    )
    .unwrap();
    let response = app
        .client
        .post(&token_url)
        .header("Authorization", basic(&client))
        .header("DPoP", wrong_typ)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let metadata = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let algs = metadata["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("ES256")) && algs.contains(&json!("EdDSA")));
}

#[tokio::test]
async fn server_nonces_are_demanded_and_honoured() {
    let app = spawn_app_with(|s| s.dpop.require_nonce = true).await;
    let key = app.enroll("agent-nonce").await;
    let dpop = DpopKey::generate();
    let auth_url = app.url("/api/fleet/authenticate");
    let now = app.clock.now();
    let response = authenticate_dpop(
        &app,
        &format!("ApiKey {}", key.encoded),
        &dpop.proof("POST", &auth_url, None, now),
    )
    .await;
    assert_eq!(response.status(), 400);
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(error_code(response).await.1, "use_dpop_nonce");

    let claims = json!({
        "jti": uuid::Uuid::new_v4().to_string(), "htm": "POST", "htu": auth_url,
        "iat": now, "nonce": nonce,
    });
    let response = authenticate_dpop(
        &app,
        &format!("ApiKey {}", key.encoded),
        &dpop.proof_with(claims),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("dpop-nonce"));
    // A made-up nonce is refused.
    let claims = json!({
        "jti": uuid::Uuid::new_v4().to_string(), "htm": "POST", "htu": auth_url,
        "iat": now, "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    });
    let response = authenticate_dpop(
        &app,
        &format!("ApiKey {}", key.encoded),
        &dpop.proof_with(claims),
    )
    .await;
    assert_eq!(error_code(response).await, (400, "use_dpop_nonce".into()));
}

#[tokio::test]
async fn agents_may_be_required_to_use_dpop_including_at_enrollment() {
    let app = spawn_app_with(|s| s.dpop.require_for_agents = true).await;
    let key = app.enroll("agent-required").await;
    let response = app.authenticate(&format!("ApiKey {}", key.encoded)).await;
    assert_eq!(
        error_code(response).await,
        (400, "invalid_dpop_proof".into())
    );
    let dpop = DpopKey::generate();
    let auth_url = app.url("/api/fleet/authenticate");
    let response = authenticate_dpop(
        &app,
        &format!("ApiKey {}", key.encoded),
        &dpop.proof("POST", &auth_url, None, app.clock.now()),
    )
    .await;
    assert_eq!(response.status(), 200);

    // Non-agent clients are not concerned.
    let client = app.client_key("plain-client").await;
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic(&client))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Enrollment with JWTs: a proof binds the first pair; none is refused.
    let token = app
        .services()
        .enrollment
        .create_token(
            &fleetauth::enrollment::Creator::cli(),
            fleetauth::enrollment::NewEnrollmentToken {
                policy_id: "p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .encoded;
    let enroll_url = app.url("/api/fleet/agents/enroll");
    let body = json!({ "type": "PERMANENT", "metadata": { "local": {} } });
    let refused = app
        .client
        .post(&enroll_url)
        .header("Authorization", format!("ApiKey {token}"))
        .header("X-Elastic-Agent-Accept-Auth", "JWT")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(refused).await,
        (400, "invalid_dpop_proof".into())
    );
    let enrolled = app
        .client
        .post(&enroll_url)
        .header("Authorization", format!("ApiKey {token}"))
        .header("X-Elastic-Agent-Accept-Auth", "JWT")
        .header(
            "DPoP",
            dpop.proof("POST", &enroll_url, None, app.clock.now()),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), 200);
    let enrolled: Value = enrolled.json().await.unwrap();
    assert_eq!(enrolled["item"]["token_type"], "DPoP");
    let (_, claims) = jwt_parts(enrolled["item"]["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], dpop.thumbprint());
}
