//! `cargo bench --bench signing`: what it costs to sign one access token, for EdDSA,
//! ES256 and RS256, two ways:
//! - `fleetauth`: `fleetauth::tokens::jwt::sign` with a `SigningKey` whose aws-lc key
//!   pair was parsed once (what the server does);
//! - `jsonwebtoken`: `jsonwebtoken::encode` with an `EncodingKey` built once from the
//!   same private key; jsonwebtoken 11 keeps only the DER bytes and parses them into an
//!   aws-lc key pair inside every `encode` call.
//!
//! Both produce a token with the same header fields and claims, and both are checked to
//! verify with the key's public JWK before timing. Timing: rounds of
//! `FLEETAUTH_SIGNING_ROUND_MS` (200) per variant, alternating the two variants,
//! `FLEETAUTH_SIGNING_ROUNDS` (7) rounds; the median round is reported (robust against
//! a noisy, shared machine).
//!
//! Then verification of one access token, three ways: `jsonwebtoken::decode` with a
//! `DecodingKey` built once (what fleetauth did before issue 10);
//! `fleetauth::tokens::jwt::verify` on tokens the key ring has not seen (each round
//! gets a fresh ring and goes through distinct tokens: the signature is computed); and
//! the same on a token the ring has verified before (only the signature is skipped).

use std::hint::black_box;
use std::time::{Duration, Instant};

use fleetauth::config::SigningAlgorithm;
use fleetauth::tokens::jwt::{self, AccessClaims};
use fleetauth::tokens::{KeyRing, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};

/// The inner `RSAPrivateKey` (PKCS#1) of a PKCS#8 `PrivateKeyInfo`, which is what
/// `EncodingKey::from_rsa_der` wants: SEQUENCE { INTEGER version, SEQUENCE algorithm,
/// OCTET STRING privateKey, ... }.
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<&[u8]> {
    /// Splits one DER TLV off `input`: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (
                rest[..n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize),
                &rest[n..],
            )
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, info, _) = tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(info)? else {
        return None;
    };
    let (0x30, _algorithm, rest) = tlv(rest)? else {
        return None;
    };
    let (0x04, private_key, _) = tlv(rest)? else {
        return None;
    };
    Some(private_key)
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "fleetauth:0f6b3c2a9d8e4f1a8b7c6d5e4f3a2b1c".into(),
        sub: "bench-agent-00042".into(),
        jti: "5d0b2f9e-3c1a-4b7e-9f2d-8a6c4e1b3d57".into(),
        iat: 1_760_000_000,
        exp: 1_760_001_200,
        client_id: "Zk9vYmFyYmF6cXV4MTIz".into(),
        aud: None,
        scope: None,
        groups: None,
        vault_role: None,
        max_uses: None,
        sid: None,
        cnf: None,
    }
}

/// Median time per call of `f` over `rounds` rounds of about `round` each.
fn time_rounds(round: Duration, samples: &mut Vec<f64>, mut f: impl FnMut()) {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < round {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    samples.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("signing: a micro-benchmark; run it with `cargo bench --bench signing`");
        return;
    }
    let round = Duration::from_millis(env_number("FLEETAUTH_SIGNING_ROUND_MS", 200));
    let rounds = env_number("FLEETAUTH_SIGNING_ROUNDS", 7).max(1) as usize;
    let claims = claims();
    println!(
        "# Signing one access token ({rounds} rounds of {} ms per variant, median)",
        round.as_millis()
    );
    println!();
    println!("| algorithm | fleetauth::tokens::jwt::sign µs/op | jsonwebtoken::encode µs/op | encode / sign |");
    println!("|---|---:|---:|---:|");
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
    ] {
        let record = SigningKey::generate(algorithm, claims.iat).expect("key generation");
        let key = SigningKey::from_record(&record).expect("generated key parses");
        let (jwt_alg, encoding_key) = match algorithm {
            SigningAlgorithm::EdDSA => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(&record.private_der),
            ),
            SigningAlgorithm::ES256 => (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&record.private_der),
            ),
            SigningAlgorithm::RS256 => {
                let pkcs1 = pkcs8_to_pkcs1(&record.private_der).expect("an RSA PKCS#8 document");
                (Algorithm::RS256, EncodingKey::from_rsa_der(pkcs1))
            }
        };
        let mut header = Header::new(jwt_alg);
        header.typ = Some(jwt::ACCESS_TOKEN_TYP.into());
        header.kid = Some(key.kid.clone());

        // Both tokens must verify with the published key, or the comparison is moot.
        let mut validation = Validation::new(jwt_alg);
        validation.validate_exp = false;
        validation.set_issuer(&[&claims.iss]);
        let ours = jwt::sign(&key, &claims);
        let theirs =
            jsonwebtoken::encode(&header, &claims, &encoding_key).expect("jsonwebtoken signs");
        for token in [&ours, &theirs] {
            let decoded =
                jsonwebtoken::decode::<AccessClaims>(token, &key.decoding_key, &validation)
                    .expect("token verifies");
            assert_eq!(decoded.claims, claims);
        }

        let (mut sign_samples, mut encode_samples) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            time_rounds(round, &mut sign_samples, || {
                black_box(jwt::sign(black_box(&key), black_box(&claims)));
            });
            time_rounds(round, &mut encode_samples, || {
                black_box(
                    jsonwebtoken::encode(
                        black_box(&header),
                        black_box(&claims),
                        black_box(&encoding_key),
                    )
                    .ok(),
                );
            });
        }
        let (sign, encode) = (median(&mut sign_samples), median(&mut encode_samples));
        println!(
            "| {} | {sign:.1} | {encode:.1} | {:.2} |",
            algorithm.as_str(),
            encode / sign
        );
    }
    verification(round, rounds, &claims);
}

/// How many distinct tokens the cold verification goes through per round (more than a
/// 200 ms round verifies here, so none is seen twice in a round).
const COLD_TOKENS: usize = 20_000;

fn verification(round: Duration, rounds: usize, claims: &AccessClaims) {
    println!();
    println!(
        "# Verifying one access token ({rounds} rounds of {} ms per variant, median)",
        round.as_millis()
    );
    println!();
    println!("| algorithm | jsonwebtoken::decode µs/op | jwt::verify, new token µs/op | jwt::verify, verified before µs/op | decode / new | decode / verified before |");
    println!("|---|---:|---:|---:|---:|---:|");
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
    ] {
        let record = SigningKey::generate(algorithm, claims.iat).expect("key generation");
        let ring = || KeyRing::from_records(std::slice::from_ref(&record)).expect("ring");
        let key = ring().signing.clone();
        let tokens: Vec<String> = (0..COLD_TOKENS)
            .map(|i| {
                let mut c = claims.clone();
                c.jti = format!("{i:036}");
                jwt::sign(&key, &c)
            })
            .collect();
        let expect = jwt::Expectations {
            issuer: &claims.iss,
            audience: None,
            leeway: 30,
            now: claims.iat,
        };
        let mut validation = Validation::new(key.jwt_algorithm());
        validation.validate_exp = false;
        validation.set_issuer(&[&claims.iss]);
        let warm_ring = ring();
        assert!(jwt::verify(&tokens[0], &warm_ring, &expect).is_ok());
        let (mut decode, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut i = 0;
            time_rounds(round, &mut decode, || {
                i = (i + 1) % COLD_TOKENS;
                black_box(
                    jsonwebtoken::decode::<AccessClaims>(
                        black_box(&tokens[i]),
                        &key.decoding_key,
                        &validation,
                    )
                    .expect("verifies"),
                );
            });
            let cold_ring = ring();
            let mut i = 0;
            time_rounds(round, &mut cold, || {
                i = (i + 1) % COLD_TOKENS;
                black_box(
                    jwt::verify(black_box(&tokens[i]), &cold_ring, &expect).expect("verifies"),
                );
            });
            time_rounds(round, &mut warm, || {
                black_box(
                    jwt::verify(black_box(&tokens[0]), &warm_ring, &expect).expect("verifies"),
                );
            });
        }
        let (decode, cold, warm) = (median(&mut decode), median(&mut cold), median(&mut warm));
        println!(
            "| {} | {decode:.1} | {cold:.1} | {warm:.2} | {:.2} | {:.0} |",
            algorithm.as_str(),
            decode / cold,
            decode / warm
        );
    }
}
