//! What kind of token this is: decided once, from a token's verified claims or a parsed
//! refresh token, and matched on by every caller (the grants, introspection and
//! revocation, the authentication chain, the token API). The formats are [`super::jwt`]
//! and [`super::refresh`]; this module is the one place that reads their `sid`,
//! `vault_role` and `sub` = `client_id` markers.

use super::jwt::AccessClaims;
use super::refresh::ParsedRefresh;

/// Whose token it is, and where its state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An agent's pair: kept as the agent's current or pending pair, rotated by the rules
    /// of SPEC §3.
    AgentPair,
    /// A client's token for itself (RFC 9068 §2.2: `sub` is the client id). `stored`:
    /// its pair is kept in a token-state record of its own, like an agent's
    /// (`oauth.client_credentials_refresh`); otherwise it is an access token alone, valid
    /// by its signature and claims while the client's API key is valid.
    ClientToken { stored: bool },
    /// A token of the Elasticsearch-compatible token API: a user's, kept in its token
    /// family's record (`sid` claim; the family in the refresh token).
    Family,
    /// A subject admitted by the Vault-compatible JWT auth method (`vault_role` claim):
    /// an access token alone, valid by its signature and claims and, when use-limited,
    /// its use counter.
    External,
}

/// Whether non-agent clients' pairs are kept in the store
/// (`oauth.client_credentials_refresh`): the one setting the kind depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientState {
    pub stored: bool,
}

impl ClientState {
    /// The kind of a token issued to `subject` through `client_id` (not a family's, not
    /// an external subject's): an agent's pair unless the subject is the client itself.
    pub fn of_subject(self, subject: &str, client_id: &str) -> TokenKind {
        if subject == client_id {
            TokenKind::ClientToken {
                stored: self.stored,
            }
        } else {
            TokenKind::AgentPair
        }
    }

    /// The kind of a verified access token.
    pub fn of_access(self, claims: &AccessClaims) -> TokenKind {
        if claims.vault_role.is_some() {
            TokenKind::External
        } else if claims.sid.is_some() {
            TokenKind::Family
        } else {
            self.of_subject(&claims.sub, &claims.client_id)
        }
    }

    /// The kind of a parsed refresh token (never [`TokenKind::External`]: those subjects
    /// get no refresh token).
    pub fn of_refresh(self, presented: &ParsedRefresh) -> TokenKind {
        if presented.family.is_some() {
            TokenKind::Family
        } else {
            self.of_subject(&presented.agent_id, &presented.client_id)
        }
    }
}

impl TokenKind {
    /// Whether the token's pair is kept in the store (an agent's, a stored client's or a
    /// family's record), so that it rotates and can be revoked alone.
    pub fn has_stored_pair(self) -> bool {
        match self {
            Self::AgentPair | Self::Family | Self::ClientToken { stored: true } => true,
            Self::ClientToken { stored: false } | Self::External => false,
        }
    }

    /// The agent a token belongs to, given its subject: only an agent's pair has one.
    pub fn agent(self, subject: &str) -> Option<&str> {
        match self {
            Self::AgentPair => Some(subject),
            Self::ClientToken { .. } | Self::Family | Self::External => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_the_markers_and_the_client_state_setting() {
        let off = ClientState { stored: false };
        let on = ClientState { stored: true };
        assert_eq!(off.of_subject("agent-1", "key-1"), TokenKind::AgentPair);
        assert_eq!(
            off.of_subject("key-1", "key-1"),
            TokenKind::ClientToken { stored: false }
        );
        assert_eq!(
            on.of_subject("key-1", "key-1"),
            TokenKind::ClientToken { stored: true }
        );
        assert!(TokenKind::AgentPair.has_stored_pair());
        assert!(TokenKind::Family.has_stored_pair());
        assert!(TokenKind::ClientToken { stored: true }.has_stored_pair());
        assert!(!TokenKind::ClientToken { stored: false }.has_stored_pair());
        assert!(!TokenKind::External.has_stored_pair());
        assert_eq!(TokenKind::AgentPair.agent("a"), Some("a"));
        assert_eq!(TokenKind::External.agent("a"), None);
    }
}
