//! Refresh tokens: opaque to clients; here `fr1.` base64url(agent id) `.`
//! base64url(client id) `.` base64url(32 random bytes). The agent id lets the server
//! find the agent's record by key (no search, no index on hashes), the client id says
//! whom to issue the next pair to, and the 256 random bits are the secret. Only the
//! SHA-256 of the whole token is stored, so neither id can be altered unnoticed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "fr1.";
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
pub struct PresentedRefresh {
    pub agent_id: String,
    pub client_id: String,
    pub hash: String,
}

/// Lower-case hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

pub fn mint(agent_id: &str, client_id: &str) -> MintedRefresh {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let mut token = String::with_capacity(
        PREFIX.len() + (agent_id.len() + client_id.len()) * 4 / 3 + 8 + SECRET_CHARS,
    );
    token.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(agent_id, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(client_id, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(secret, &mut token);
    let hash = hash(&token);
    MintedRefresh { token, hash }
}

/// Parses a presented token; `None` if it cannot be one of ours.
pub fn parse(token: &str) -> Option<PresentedRefresh> {
    let mut parts = token.strip_prefix(PREFIX)?.split('.');
    let (agent, client, secret) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || secret.len() != SECRET_CHARS {
        return None;
    }
    URL_SAFE_NO_PAD.decode(secret).ok()?;
    let text = |part: &str| {
        String::from_utf8(URL_SAFE_NO_PAD.decode(part).ok()?)
            .ok()
            .filter(|s| !s.is_empty())
    };
    Some(PresentedRefresh {
        agent_id: text(agent)?,
        client_id: text(client)?,
        hash: hash(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_back_to_its_agent_and_hash() {
        let minted = mint("agent-7", "key-1");
        let parsed = parse(&minted.token).unwrap();
        assert_eq!(parsed.agent_id, "agent-7");
        assert_eq!(parsed.client_id, "key-1");
        assert_eq!(parsed.hash, minted.hash);
        assert_ne!(mint("agent-7", "key-1").token, minted.token);
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
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
    }
}
