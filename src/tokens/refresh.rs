//! Refresh tokens: opaque to clients; here `fr1.` base64url(agent id) `.`
//! base64url(client id) `.` base64url(32 random bytes). The agent id lets the server
//! find the agent's record by key (no search, no index on hashes), the client id says
//! whom to issue the next pair to, and the 256 random bits are the secret. Only the
//! SHA-256 of the whole token is stored, so neither id can be altered unnoticed.
//!
//! A pair issued with an OAuth2 `scope` (RFC 6749 §3.3) carries it in a fourth part,
//! before the secret: `fr1.` agent `.` client `.` base64url(scope) `.` secret, so that a
//! refresh can grant exactly the original scope (RFC 6749 §6) without storing it.
//! Unscoped tokens (every Fleet token) keep the three-part form.
//!
//! A pair bound to a DPoP key (RFC 9449) has a refresh token `fd1.` agent `.` client
//! `.` jkt `.` [scope `.`] secret, where jkt is the key's RFC 7638 thumbprint (already
//! base64url): a refresh must prove that key, and the next pair is bound to it again, so
//! the binding holds for the whole family. The hash covers the thumbprint like the ids.
//!
//! A token of a *token family* (the Elasticsearch-compatible token API, where one user
//! holds many independent families) is `ft1.` base64url(family id) `.`
//! base64url(username) `.` secret: the family id finds the family's record by key, the
//! username is the `sub` of the next pair; the hash covers both, as above.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "fr1.";
const FAMILY_PREFIX: &str = "ft1.";
const BOUND_PREFIX: &str = "fd1.";
/// Length of an RFC 7638 SHA-256 thumbprint, base64url without padding.
const THUMBPRINT_CHARS: usize = 43;
/// The `client_id` of tokens of a token family: they are issued by the token API to a
/// user, not to an OAuth2 client.
pub const FAMILY_CLIENT_ID: &str = "_es_token_service";
const SECRET_BYTES: usize = 32;
/// Length of the base64url (unpadded) encoding of the secret.
const SECRET_CHARS: usize = 43;

/// A newly minted refresh token and the hash to store.
pub struct MintedRefresh {
    pub token: String,
    pub hash: String,
}

/// A presented refresh token, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRefresh {
    pub agent_id: String,
    pub client_id: String,
    /// The scope the pair was issued with, if any.
    pub scope: Option<String>,
    pub hash: String,
    /// The token family, for a token of the token API (then `agent_id` is the user).
    pub family: Option<String>,
    /// The DPoP key (RFC 7638 thumbprint) the token is bound to, if any.
    pub jkt: Option<String>,
}

/// Lower-case hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

pub fn mint(agent_id: &str, client_id: &str, scope: Option<&str>) -> MintedRefresh {
    mint_bound(agent_id, client_id, scope, None)
}

/// [`mint`], bound to the DPoP key with thumbprint `jkt` when given.
pub fn mint_bound(
    agent_id: &str,
    client_id: &str,
    scope: Option<&str>,
    jkt: Option<&str>,
) -> MintedRefresh {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let scope = scope.filter(|s| !s.is_empty());
    let ids_len = agent_id.len() + client_id.len() + scope.map_or(0, str::len);
    let mut token = String::with_capacity(
        PREFIX.len() + ids_len * 4 / 3 + 12 + SECRET_CHARS + THUMBPRINT_CHARS + 1,
    );
    token.push_str(if jkt.is_some() { BOUND_PREFIX } else { PREFIX });
    URL_SAFE_NO_PAD.encode_string(agent_id, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(client_id, &mut token);
    token.push('.');
    if let Some(jkt) = jkt {
        token.push_str(jkt);
        token.push('.');
    }
    if let Some(scope) = scope {
        URL_SAFE_NO_PAD.encode_string(scope, &mut token);
        token.push('.');
    }
    URL_SAFE_NO_PAD.encode_string(secret, &mut token);
    let hash = hash(&token);
    MintedRefresh { token, hash }
}

/// A refresh token of the token family `family_id`, whose tokens are `username`'s.
pub fn mint_family(family_id: &str, username: &str) -> MintedRefresh {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let mut token = String::with_capacity(
        FAMILY_PREFIX.len() + (family_id.len() + username.len()) * 4 / 3 + 8 + SECRET_CHARS,
    );
    token.push_str(FAMILY_PREFIX);
    URL_SAFE_NO_PAD.encode_string(family_id, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(username, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(secret, &mut token);
    let hash = hash(&token);
    MintedRefresh { token, hash }
}

fn text_part(part: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).ok()?)
        .ok()
        .filter(|s| !s.is_empty())
}

fn valid_secret(secret: &str) -> bool {
    secret.len() == SECRET_CHARS && URL_SAFE_NO_PAD.decode(secret).is_ok()
}

/// Parses a presented token; `None` if it cannot be one of ours.
pub fn parse(token: &str) -> Option<ParsedRefresh> {
    if let Some(rest) = token.strip_prefix(FAMILY_PREFIX) {
        let [family, username, secret] = rest.split('.').collect::<Vec<_>>()[..] else {
            return None;
        };
        if !valid_secret(secret) {
            return None;
        }
        return Some(ParsedRefresh {
            agent_id: text_part(username)?,
            client_id: FAMILY_CLIENT_ID.to_string(),
            scope: None,
            hash: hash(token),
            family: Some(text_part(family)?),
            jkt: None,
        });
    }
    if let Some(rest) = token.strip_prefix(BOUND_PREFIX) {
        let parts: Vec<&str> = rest.split('.').collect();
        let (agent, client, jkt, scope, secret) = match parts.as_slice() {
            [agent, client, jkt, secret] => (*agent, *client, *jkt, None, *secret),
            [agent, client, jkt, scope, secret] => (*agent, *client, *jkt, Some(*scope), *secret),
            _ => return None,
        };
        let thumbprint_ok = jkt.len() == THUMBPRINT_CHARS
            && URL_SAFE_NO_PAD.decode(jkt).is_ok_and(|d| d.len() == 32);
        if !valid_secret(secret) || !thumbprint_ok {
            return None;
        }
        let scope = match scope {
            Some(part) => Some(text_part(part)?),
            None => None,
        };
        return Some(ParsedRefresh {
            agent_id: text_part(agent)?,
            client_id: text_part(client)?,
            scope,
            hash: hash(token),
            family: None,
            jkt: Some(jkt.to_string()),
        });
    }
    let parts: Vec<&str> = token.strip_prefix(PREFIX)?.split('.').collect();
    let (agent, client, scope, secret) = match parts.as_slice() {
        [agent, client, secret] => (*agent, *client, None, *secret),
        [agent, client, scope, secret] => (*agent, *client, Some(*scope), *secret),
        _ => return None,
    };
    if !valid_secret(secret) {
        return None;
    }
    let scope = match scope {
        Some(part) => Some(text_part(part)?),
        None => None,
    };
    Some(ParsedRefresh {
        agent_id: text_part(agent)?,
        client_id: text_part(client)?,
        scope,
        hash: hash(token),
        family: None,
        jkt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_back_to_its_agent_and_hash() {
        let minted = mint("agent-7", "key-1", None);
        let parsed = parse(&minted.token).unwrap();
        assert_eq!(parsed.agent_id, "agent-7");
        assert_eq!(parsed.scope, None);
        assert_eq!(parsed.client_id, "key-1");
        assert_eq!(parsed.hash, minted.hash);
        assert_ne!(mint("agent-7", "key-1", None).token, minted.token);
    }

    #[test]
    fn a_scoped_token_carries_its_scope_under_the_hash() {
        let minted = mint("agent-7", "key-1", Some("fleet:read fleet:write"));
        let parsed = parse(&minted.token).unwrap();
        assert_eq!(parsed.scope.as_deref(), Some("fleet:read fleet:write"));
        assert_eq!(
            (parsed.agent_id.as_str(), parsed.client_id.as_str()),
            ("agent-7", "key-1")
        );
        assert_eq!(parsed.hash, minted.hash);
        // An empty scope is no scope: the three-part form.
        assert_eq!(mint("a", "k", Some("")).token.matches('.').count(), 3);
    }

    #[test]
    fn a_family_token_carries_its_family_and_user_under_the_hash() {
        let minted = mint_family("fam-1", "alice");
        assert!(minted.token.starts_with("ft1."));
        let parsed = parse(&minted.token).unwrap();
        assert_eq!(parsed.family.as_deref(), Some("fam-1"));
        assert_eq!(parsed.agent_id, "alice");
        assert_eq!(parsed.client_id, FAMILY_CLIENT_ID);
        assert_eq!(parsed.hash, minted.hash);
        assert_eq!(parse(&mint("a", "k", None).token).unwrap().family, None);
        let secret = "A".repeat(SECRET_CHARS);
        assert!(parse(&format!("ft1.YQ.{secret}")).is_none());
        assert!(parse(&format!("ft1.YQ.YQ.YQ.{secret}")).is_none());
        assert!(parse(&format!("ft1..YQ.{secret}")).is_none());
    }

    #[test]
    fn a_bound_token_carries_its_key_thumbprint_under_the_hash() {
        let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
        for scope in [None, Some("fleet:read")] {
            let minted = mint_bound("agent-7", "key-1", scope, Some(jkt));
            assert!(minted.token.starts_with("fd1."));
            let parsed = parse(&minted.token).unwrap();
            assert_eq!(parsed.jkt.as_deref(), Some(jkt));
            assert_eq!(parsed.scope.as_deref(), scope);
            assert_eq!(parsed.agent_id, "agent-7");
            assert_eq!(parsed.hash, minted.hash);
        }
        assert_eq!(parse(&mint("a", "k", None).token).unwrap().jkt, None);
        // Another thumbprint is another token: its hash differs.
        let minted = mint_bound("a", "k", None, Some(jkt));
        let other = minted.token.replace(jkt, &"A".repeat(43));
        assert_ne!(parse(&other).unwrap().hash, minted.hash);
        let secret = "A".repeat(SECRET_CHARS);
        assert!(parse(&format!("fd1.YQ.YQ.short.{secret}")).is_none());
        assert!(parse(&format!("fd1.YQ.YQ.{secret}")).is_none());
    }

    #[test]
    fn garbage_is_not_a_refresh_token() {
        let secret = "A".repeat(SECRET_CHARS);
        for bad in [
            "".to_string(),
            "fr1.".into(),
            "abc".into(),
            "fr1.YQ.YQ.short".into(),
            format!("fr1.!!!.YQ.{secret}"),
            format!("fr1..YQ.{secret}"),
            format!("YQ.YQ.{secret}"),
            format!("fr1.YQ.YQ.{secret}.x"),
            format!("fr1.YQ.YQ..{secret}"),
            format!("fr1.YQ.YQ.YQ.YQ.{secret}"),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
    }
}
