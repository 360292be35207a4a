//! What an OAuth2 endpoint request carries once the HTTP layer has parsed it: its form
//! parameters (each at most once, RFC 6749 §3.2) and the client credentials of the
//! `Authorization` header. Merging header and body credentials (RFC 6749 §2.3.1) and
//! the syntax of `scope` (§3.3) are decided here, so every grant applies the same rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use oxide_auth::primitives::scope::Scope;

use super::GrantError;

/// How a client presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `Authorization: Basic` (`client_secret_basic`).
    Basic,
    /// `Authorization: ApiKey` (Elasticsearch's header; our extension).
    ApiKey,
    /// `client_id` and `client_secret` form parameters (`client_secret_post`).
    Body,
}

/// A client id (an API key id) and its secret (the key), as presented.
#[derive(Clone)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: String,
    pub method: ClientAuthMethod,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientCredentials({}, {:?}, [redacted])",
            self.id, self.method
        )
    }
}

/// Form parameters: each name at most once; parameters without a value are treated as
/// omitted (RFC 6749 §3.1).
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Builds the parameters from decoded pairs; a repeated name is an error naming it.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, GrantError> {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            if map.contains_key(&name) {
                return Err(GrantError::invalid_request(
                    "duplicate_parameter",
                    format!("the parameter {name:?} is repeated (RFC 6749 §3.2)"),
                ));
            }
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter that must be present.
    pub fn require(&self, name: &str) -> Result<&str, GrantError> {
        self.get(name).ok_or_else(|| {
            GrantError::invalid_request(
                "missing_parameter",
                format!("the parameter {name:?} is required"),
            )
        })
    }
}

/// One request to `/oauth/token`, `/oauth/introspect` or `/oauth/revoke`.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub params: Params,
    /// Credentials from the `Authorization` header (Basic or ApiKey), if any.
    pub header_client: Option<ClientCredentials>,
    /// The caller's address (for the `bound_cidrs` of a JWT auth role).
    pub remote_addr: Option<IpAddr>,
}

impl TokenRequest {
    /// The body's `client_id`/`client_secret` pair, if the body authenticates the
    /// client. A body `client_id` that only repeats the header's id is not a second
    /// authentication (some clients send both).
    pub fn body_client(&self) -> Result<Option<ClientCredentials>, GrantError> {
        let id = self.params.get("client_id");
        let secret = self.params.get("client_secret");
        match (id, secret, &self.header_client) {
            (None, None, _) => Ok(None),
            (Some(id), None, Some(header)) if header.id == id => Ok(None),
            (Some(id), Some(secret), _) => Ok(Some(ClientCredentials {
                id: id.to_string(),
                secret: secret.to_string(),
                method: ClientAuthMethod::Body,
            })),
            (Some(_), None, _) => Err(GrantError::invalid_client(
                "missing_client_secret",
                "client authentication failed: client_secret is missing",
            )),
            (None, Some(_), _) => Err(GrantError::invalid_request(
                "missing_parameter",
                "client_secret was sent without client_id",
            )),
        }
    }

    /// The client's credentials, from the header or the body but not both (RFC 6749
    /// §2.3: one authentication method per request). `None`: none presented.
    pub fn client(&self) -> Result<Option<ClientCredentials>, GrantError> {
        match (self.header_client.clone(), self.body_client()?) {
            (Some(_), Some(_)) => Err(GrantError::invalid_request(
                "multiple_client_authentication",
                "the client authenticated with more than one method (RFC 6749 §2.3)",
            )),
            (Some(client), None) | (None, Some(client)) => Ok(Some(client)),
            (None, None) => Ok(None),
        }
    }

    /// The `scope` parameter, checked for syntax (RFC 6749 §3.3).
    pub fn scope(&self) -> Result<Option<Scope>, GrantError> {
        self.params.get("scope").map(parse_scope).transpose()
    }
}

/// Parses a space-delimited scope; a malformed one is `invalid_scope`.
pub fn parse_scope(text: &str) -> Result<Scope, GrantError> {
    text.parse::<Scope>().map_err(|e| {
        GrantError::invalid_scope("malformed_scope", format!("the scope is malformed: {e}"))
    })
}

/// The scope with no tokens.
pub fn empty_scope() -> Scope {
    "".parse().expect("the empty scope parses")
}

/// A scope as it appears in tokens and responses: its tokens sorted and joined by one
/// space (oxide-auth's `Scope` keeps them in a set), or `None` when empty.
pub fn scope_text(scope: &Scope) -> Option<String> {
    let mut tokens: Vec<&str> = scope.iter().collect();
    if tokens.is_empty() {
        return None;
    }
    tokens.sort_unstable();
    Some(tokens.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)], header: Option<&str>) -> TokenRequest {
        TokenRequest {
            params: Params::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .unwrap(),
            header_client: header.map(|id| ClientCredentials {
                id: id.into(),
                secret: "s".into(),
                method: ClientAuthMethod::Basic,
            }),
            remote_addr: None,
        }
    }

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_ignored() {
        let pairs = [("a", "1"), ("a", "2")].map(|(k, v)| (k.to_string(), v.to_string()));
        let err = Params::from_pairs(pairs).unwrap_err();
        assert_eq!(err.oauth_code(), "invalid_request");
        let params =
            Params::from_pairs([("a".to_string(), String::new()), ("a".into(), "x".into())])
                .unwrap();
        assert_eq!(params.get("a"), Some("x"));
    }

    #[test]
    fn client_credentials_come_from_one_place() {
        let c = request(&[], Some("k1")).client().unwrap().unwrap();
        assert_eq!((c.id.as_str(), c.method), ("k1", ClientAuthMethod::Basic));
        let c = request(&[("client_id", "k2"), ("client_secret", "s")], None)
            .client()
            .unwrap()
            .unwrap();
        assert_eq!((c.id.as_str(), c.method), ("k2", ClientAuthMethod::Body));
        // The header's id repeated in the body is fine; a second secret is not.
        assert!(request(&[("client_id", "k1")], Some("k1")).client().is_ok());
        let both = request(&[("client_id", "k1"), ("client_secret", "s")], Some("k1"));
        assert_eq!(both.client().unwrap_err().oauth_code(), "invalid_request");
        let no_secret = request(&[("client_id", "k2")], None);
        assert_eq!(
            no_secret.client().unwrap_err().oauth_code(),
            "invalid_client"
        );
        assert!(request(&[], None).client().unwrap().is_none());
    }

    #[test]
    fn scopes_are_checked_and_written_in_one_order() {
        let scope = parse_scope("b a  c").unwrap();
        assert_eq!(scope_text(&scope).as_deref(), Some("a b c"));
        assert_eq!(scope_text(&parse_scope("").unwrap()), None);
        assert_eq!(
            parse_scope("a\"b").unwrap_err().oauth_code(),
            "invalid_scope"
        );
    }
}
