//! The credential parser (every `Authorization` scheme: ApiKey, Basic, Bearer, and what
//! is not one), the refresh-token format and the service-token format.
//!
//! Input: the raw header value. Properties checked besides "no panic":
//! - a parsed `ApiKey`/`Basic` pair re-encodes to a header that parses to the same pair;
//! - a `Bearer` value is non-empty visible ASCII; `Debug` never shows a secret;
//! - a value is at most one of: a refresh token, a service token, a JWT-shaped token;
//! - a parsed refresh token carries the SHA-256 of exactly the presented text, and a
//!   token minted from ids taken from the input parses back to those ids.

#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetauth::credentials::{self, Presented};
use fleetauth::identity::service_accounts;
use fleetauth::tokens::{jwt, refresh};
use libfuzzer_sys::fuzz_target;

fn check_token_formats(token: &str) {
    if let Some(parsed) = refresh::parse(token) {
        assert_eq!(parsed.hash, refresh::hash(token));
        assert!(!parsed.agent_id.is_empty() && !parsed.client_id.is_empty());
        // The kinds never overlap: that is how one Bearer value is told apart.
        assert!(!jwt::looks_like_jwt(token));
        assert!(service_accounts::parse(token).is_none());
    }
    if let Some(parsed) = service_accounts::parse(token) {
        assert!(service_accounts::valid_token_name(&parsed.name));
        assert!(parsed.account.contains('/'));
        assert!(!format!("{parsed:?}").contains(':'));
        assert!(!jwt::looks_like_jwt(token));
    }
}

fuzz_target!(|data: &[u8]| {
    match credentials::from_authorization(data) {
        Ok(Presented::ApiKey { id, secret }) | Ok(Presented::Basic { id, secret }) => {
            assert!(!id.is_empty() && !secret.is_empty() && !id.contains(':'));
            let again = format!("ApiKey {}", STANDARD.encode(format!("{id}:{secret}")));
            match credentials::from_authorization(again.as_bytes()) {
                Ok(Presented::ApiKey {
                    id: id2,
                    secret: secret2,
                }) => {
                    assert_eq!((id2, secret2), (id, secret))
                }
                other => panic!("re-encoded pair does not parse back: {other:?}"),
            }
        }
        Ok(Presented::Bearer(token)) => {
            assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(
                format!("{:?}", Presented::Bearer(token.clone())),
                "Bearer([redacted])"
            );
            check_token_formats(&token);
        }
        Err(e) => {
            let _ = e.reason();
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_token_formats(text);

    // Round trip of the refresh-token format: ids (and a scope) taken from the input.
    let mut parts = text.splitn(3, '\u{0}');
    let (agent, client, scope) = (parts.next(), parts.next(), parts.next());
    if let (Some(agent), Some(client)) = (agent, client) {
        if !agent.is_empty() && !client.is_empty() {
            let minted = refresh::mint(agent, client, scope);
            let parsed = refresh::parse(&minted.token).expect("a minted token parses");
            assert_eq!(parsed.agent_id, agent);
            assert_eq!(parsed.client_id, client);
            assert_eq!(parsed.scope.as_deref(), scope.filter(|s| !s.is_empty()));
            assert_eq!(parsed.hash, minted.hash);
            assert_eq!(parsed.family, None);
            let family = refresh::mint_family(agent, client);
            let parsed = refresh::parse(&family.token).expect("a family token parses");
            assert_eq!(parsed.family.as_deref(), Some(agent));
            assert_eq!(parsed.agent_id, client);
        }
    }
});
