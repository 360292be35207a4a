//! `cargo bench --bench dpop`: what DPoP (RFC 9449) adds to a protected-resource
//! request, next to what a Bearer access token already costs:
//! - `bearer`: `fleetauth::tokens::jwt::verify` of one EdDSA access token (signature,
//!   claims), what every request with an access token pays;
//! - `proof ES256` / `proof EdDSA`: `DpopVerifier::verify` of one fresh proof with
//!   `ath` (header and JWK checks, signature, `htm`/`htu`/`iat`/`ath`, thumbprint, the
//!   replay cache), what a DPoP request pays on top.
//!
//! Proofs are made beforehand (client work, not timed), each with its own `jti`, since a
//! proof is accepted once. Timing: `FLEETAUTH_DPOP_ROUNDS` (5) rounds of
//! `FLEETAUTH_DPOP_PER_ROUND` (3000) operations per variant, alternating; the median
//! round is reported. The store is not involved (stateful checks cost the same with or
//! without DPoP).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleetauth::clock::{Clock, SystemClock};
use fleetauth::config::{DpopSettings, SigningAlgorithm};
use fleetauth::tokens::dpop::{access_token_hash, DpopVerifier, ProofTarget};
use fleetauth::tokens::jwt::{self, AccessClaims, Expectations};
use fleetauth::tokens::{KeyRing, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const URL: &str = "https://auth.example/api/fleet/whoami";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A client key: its JWS algorithm, signing key and public JWK.
fn client_key(alg: Algorithm) -> (EncodingKey, Value) {
    let rng = SystemRandom::new();
    match alg {
        Algorithm::ES256 => {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            });
            (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
        }
        _ => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk)
        }
    }
}

fn proofs(alg: Algorithm, token: &str, now: i64, n: usize) -> Vec<String> {
    let (key, jwk) = client_key(alg);
    let mut header = Header::new(alg);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(serde_json::from_value(jwk).unwrap());
    let ath = access_token_hash(token);
    (0..n)
        .map(|i| {
            let claims = json!({
                "jti": format!("bench-{i}-{}", uuid::Uuid::new_v4()),
                "htm": "GET", "htu": URL, "iat": now, "ath": ath,
            });
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("dpop: a micro-benchmark; run it with `cargo bench --bench dpop`");
        return;
    }
    let rounds = env_number("FLEETAUTH_DPOP_ROUNDS", 5).max(1) as usize;
    let per_round = env_number("FLEETAUTH_DPOP_PER_ROUND", 3000).max(1) as usize;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();

    let record = SigningKey::generate(SigningAlgorithm::EdDSA, now).expect("key");
    let ring = KeyRing::from_records(&[record]).expect("ring");
    let claims = AccessClaims {
        iss: "fleetauth:bench".into(),
        sub: "agent-1".into(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        exp: now + 1200,
        client_id: "key-1".into(),
        aud: None,
        scope: None,
        groups: None,
        vault_role: None,
        max_uses: None,
        sid: None,
        cnf: None,
    };
    let token = jwt::sign(&ring.signing, &claims);
    let expect = Expectations {
        issuer: "fleetauth:bench",
        audience: None,
        leeway: 30,
        now,
    };
    jwt::verify(&token, &ring, &expect).expect("the token verifies");

    let verifier = DpopVerifier::new(DpopSettings::default(), clock, [7; 32]);
    let target = ProofTarget {
        method: "GET",
        url: URL,
        access_token: Some(&token),
    };
    let mut es256 = proofs(Algorithm::ES256, &token, now, per_round * rounds).into_iter();
    let mut eddsa = proofs(Algorithm::EdDSA, &token, now, per_round * rounds).into_iter();

    let (mut bearer_s, mut es_s, mut ed_s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..per_round {
            black_box(jwt::verify(black_box(&token), &ring, &expect).ok());
        }
        bearer_s.push(started.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        for (samples, proofs) in [(&mut es_s, &mut es256), (&mut ed_s, &mut eddsa)] {
            let batch: Vec<String> = proofs.by_ref().take(per_round).collect();
            let started = Instant::now();
            for proof in &batch {
                verifier
                    .verify(black_box(proof), &target)
                    .expect("a fresh proof verifies");
            }
            samples.push(started.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        }
    }
    let bearer = median(&mut bearer_s);
    let es = median(&mut es_s);
    let ed = median(&mut ed_s);
    println!(
        "# DPoP proof validation vs a Bearer access token ({rounds} rounds of {per_round}, median)"
    );
    println!();
    println!("| check | µs/request | vs bearer |");
    println!("|---|---:|---:|");
    println!("| bearer: access token verify (EdDSA) | {bearer:.1} | 1.00 |");
    println!(
        "| + DPoP proof ES256 (with ath, replay cache) | {es:.1} | {:.2} |",
        es / bearer
    );
    println!(
        "| + DPoP proof EdDSA (with ath, replay cache) | {ed:.1} | {:.2} |",
        ed / bearer
    );
    println!(
        "| DPoP request total, ES256 proof | {:.1} | {:.2} |",
        bearer + es,
        (bearer + es) / bearer
    );
}
