//! Access-token (JWT) header and claims parsing and validation: `tokens::jwt::verify`
//! against a key ring of this server.
//!
//! The first input byte chooses what the rest is:
//! - `0`: a whole token, as presented. Nothing the fuzzer writes can carry a valid
//!   signature, so verification must refuse it (a forgery check, besides "no panic").
//! - `1`: a JOSE header and a claims set (JSON, split at the length in the next byte),
//!   signed with the server's own key: every header and claims check runs.
//! - `2`: the server's own header (`typ`, `kid`, `alg` right) and fuzzed claims, signed:
//!   every claims check runs.
//!
//! A token that passes must satisfy what SPEC §3 promises of every accepted token:
//! the expected `iss` and `aud`, not expired beyond the leeway, `typ: at+jwt`.

#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleetauth::clock::UnixTime;
use fleetauth::config::SigningAlgorithm;
use fleetauth::tokens::jwt::{self, Expectations};
use fleetauth::tokens::{KeyRing, SigningKey};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "fleetauth:fuzz";
const AUDIENCE: &str = "fuzz-audience";
/// A fixed "now", so that a crash reproduces.
const NOW: UnixTime = 1_790_000_000;
const LEEWAY: i64 = 30;

static RING: LazyLock<KeyRing> = LazyLock::new(|| {
    let record = SigningKey::generate(SigningAlgorithm::EdDSA, NOW - 60).expect("key");
    KeyRing::from_records(&[record]).expect("ring")
});

fn signed(header: &[u8], claims: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = RING.signing.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
        1 => {
            let Some((&split, rest)) = rest.split_first() else {
                return;
            };
            let split = usize::from(split).min(rest.len());
            let (header, claims) = rest.split_at(split);
            signed(header, claims)
        }
        _ => {
            let header = serde_json::json!({
                "alg": "EdDSA",
                "typ": jwt::ACCESS_TOKEN_TYP,
                "kid": RING.signing.kid,
            });
            signed(header.to_string().as_bytes(), rest)
        }
    };
    for audience in [None, Some(AUDIENCE)] {
        let expect = Expectations {
            issuer: ISSUER,
            audience,
            leeway: LEEWAY,
            now: NOW,
        };
        let result = jwt::verify(&token, &RING, &expect);
        match result {
            Ok(claims) => {
                assert_ne!(
                    mode % 3,
                    0,
                    "an unsigned fuzzer token was accepted: {token}"
                );
                assert_eq!(claims.iss, ISSUER);
                assert!(claims.exp + LEEWAY > NOW);
                assert!(claims.iat <= NOW + LEEWAY);
                if let Some(aud) = audience {
                    assert_eq!(claims.aud.as_deref(), Some(aud));
                }
                let header = jwt_header(&token);
                let typ = header["typ"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                assert!(typ == "at+jwt" || typ == "application/at+jwt", "{header}");
                assert_eq!(header["alg"], "EdDSA");
            }
            Err(e) => {
                let _ = e.reason();
            }
        }
    }
});

fn jwt_header(token: &str) -> serde_json::Value {
    let first = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(first).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}
