//! Forged and tampered access tokens are refused wherever a JWT is accepted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleetauth::config::SigningAlgorithm;
use fleetauth::tokens::{jwt, SigningKey};
use serde_json::{json, Value};

// Builds a compact JWS from a header and claims, signed by `sign`.
use crate::common::requests::compact_jws as forge;
use crate::helpers::{jwt_parts, spawn_app, TestApp};

/// A genuine token of an enrolled agent, promoted to current, and its parts.
async fn genuine(app: &TestApp, agent: &str) -> (String, Value, Value) {
    let key = app.enroll(agent).await;
    let pair = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
    let (header, claims) = jwt_parts(&pair.access_token);
    (pair.access_token, header, claims)
}

async fn refused_everywhere(app: &TestApp, token: &str) {
    assert_eq!(
        app.whoami_status(token).await,
        401,
        "whoami accepted a forged token"
    );
    assert_eq!(
        app.authenticate(&format!("Bearer {token}")).await.status(),
        401,
        "authenticate accepted it"
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = spawn_app().await;
    let (_, mut header, claims) = genuine(&app, "f1").await;
    header["alg"] = json!("none");
    let unsigned = forge(&header, &claims, |_| Vec::new());

    refused_everywhere(&app, &unsigned).await;
    refused_everywhere(&app, unsigned.trim_end_matches('.')).await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let app = spawn_app().await;
    let (_, mut header, claims) = genuine(&app, "f2").await;
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let public_x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    header["alg"] = json!("HS256");

    for secret in [public_x, jwks["keys"][0].to_string().into_bytes()] {
        let key = jsonwebtoken::EncodingKey::from_secret(&secret);
        let token = forge(&header, &claims, |input| {
            URL_SAFE_NO_PAD
                .decode(
                    jsonwebtoken::crypto::sign(input, &key, jsonwebtoken::Algorithm::HS256)
                        .unwrap(),
                )
                .unwrap()
        });
        refused_everywhere(&app, &token).await;
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let app = spawn_app().await;
    let (_, header, claims) = genuine(&app, "f3").await;
    let record = SigningKey::generate(SigningAlgorithm::EdDSA, 0).unwrap();
    let other = SigningKey::from_record(&record).unwrap();

    // Claiming the server's kid, signed by another key.
    let with_our_kid = forge(&header, &claims, |input| other.sign(input));
    // Or naming the other key's kid, which the server does not know.
    let with_their_kid = {
        let claims: fleetauth::tokens::AccessClaims =
            serde_json::from_value(claims.clone()).unwrap();
        jwt::sign(&other, &claims)
    };

    refused_everywhere(&app, &with_our_kid).await;
    refused_everywhere(&app, &with_their_kid).await;
}

#[tokio::test]
async fn a_tampered_claim_breaks_the_signature() {
    let app = spawn_app().await;
    let (token, _, mut claims) = genuine(&app, "f4").await;
    app.enroll("f4-victim").await;
    claims["sub"] = json!("f4-victim");
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());

    refused_everywhere(&app, &parts.join(".")).await;
}

#[tokio::test]
async fn correctly_signed_tokens_with_bad_claims_are_refused() {
    let app = spawn_app().await;
    let (_, header, claims) = genuine(&app, "f5").await;
    let key = app.signing_key().await;
    let now = claims["iat"].as_i64().unwrap();

    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    let mut wrong_issuer = claims.clone();
    wrong_issuer["iss"] = json!("https://someone-else.example");
    let mut unknown_jti = claims.clone();
    unknown_jti["jti"] = json!("00000000-0000-4000-8000-000000000000");
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut wrong_typ = header.clone();
    wrong_typ["typ"] = json!("JWT");

    for (what, header, claims) in [
        ("expired", &header, &expired),
        ("wrong iss", &header, &wrong_issuer),
        ("unknown jti", &header, &unknown_jti),
        ("no exp", &header, &no_exp),
        ("typ JWT", &wrong_typ, &claims),
    ] {
        let token = forge(header, claims, |input| key.sign(input));
        assert_eq!(app.whoami_status(&token).await, 401, "{what}");
    }
}

#[tokio::test]
async fn any_crit_header_parameter_is_refused() {
    // RFC 7515 §4.1.11: a recipient that does not understand a critical extension must
    // refuse the JWS. fleetauth understands none, so every `crit` is refused, even one
    // naming a registered parameter, an empty list (itself invalid) or null.
    let app = spawn_app().await;
    let (_, header, claims) = genuine(&app, "f6").await;
    let key = app.signing_key().await;

    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!([]),
        json!("exp"),
        Value::Null,
    ] {
        let mut with_crit = header.clone();
        with_crit["crit"] = crit.clone();
        with_crit["exp"] = claims["exp"].clone();
        with_crit["b64"] = json!(true);
        let token = forge(&with_crit, &claims, |input| key.sign(input));
        assert_eq!(app.whoami_status(&token).await, 401, "crit {crit}");
        refused_everywhere(&app, &token).await;
    }
    // The same header without `crit`, signed the same way, passes: the refusal is the
    // `crit` parameter's, not the forging's.
    let token = forge(&header, &claims, |input| key.sign(input));
    assert_eq!(app.whoami_status(&token).await, 200);
}

#[tokio::test]
async fn nbf_is_checked_with_the_same_leeway_as_exp() {
    let app = spawn_app().await;
    let (_, header, claims) = genuine(&app, "f7").await;
    let key = app.signing_key().await;
    let now = claims["iat"].as_i64().unwrap();
    let leeway = app.settings.jwt.leeway.as_secs() as i64;
    assert!(leeway >= 2, "the test needs a leeway of a few seconds");

    let with_nbf = |nbf: Value| {
        let mut claims = claims.clone();
        claims["nbf"] = nbf;
        forge(&header, &claims, |input| key.sign(input))
    };
    for (what, nbf, status) in [
        ("in the past", json!(now - 60), 200),
        ("now", json!(now), 200),
        ("within the leeway", json!(now + leeway - 1), 200),
        (
            "fractional, within the leeway",
            json!(now as f64 + 0.5),
            200,
        ),
        ("just past the leeway", json!(now + leeway + 1), 401),
        ("an hour ahead", json!(now + 3600), 401),
        ("not a number", json!("tomorrow"), 401),
    ] {
        assert_eq!(
            app.whoami_status(&with_nbf(nbf)).await,
            status,
            "nbf {what}"
        );
    }

    // A token refused for its nbf becomes valid once the clock reaches it.
    let later = with_nbf(json!(now + leeway + 5));
    assert_eq!(app.whoami_status(&later).await, 401);
    app.clock.advance(10);
    assert_eq!(app.whoami_status(&later).await, 200);
}

#[tokio::test]
async fn a_token_verified_before_is_still_checked_in_full_on_every_use() {
    // The key ring remembers tokens whose signature it verified (src/tokens/jwt.rs);
    // only the signature computation is skipped for them, so expiry, altered bytes and
    // the agent's state still refuse the token at once.
    let app = spawn_app().await;
    let (token, _, claims) = genuine(&app, "f8").await;
    assert_eq!(app.whoami_status(&token).await, 200, "remembered");

    // Any other bytes are another token: a flipped signature bit is verified, and fails.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    refused_everywhere(&app, &tampered).await;
    assert_eq!(
        app.whoami_status(&token).await,
        200,
        "the genuine one still passes"
    );

    // The agent is unenrolled: refused at once although its signature is remembered.
    app.unenroll("f8").await;
    assert_eq!(app.whoami_status(&token).await, 401, "unenrolled");

    // Expiry is checked against the clock on every use.
    let (token, _, _) = genuine(&app, "f8-expiring").await;
    assert_eq!(app.whoami_status(&token).await, 200);
    let exp = claims["exp"].as_i64().unwrap();
    let leeway = app.settings.jwt.leeway.as_secs() as i64;
    app.clock
        .advance(exp - claims["iat"].as_i64().unwrap() + leeway + 1);
    assert_eq!(app.whoami_status(&token).await, 401, "expired");
}
