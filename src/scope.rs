//! OAuth 2.0 scope syntax (RFC 6749 §3.3): a leaf module, shared by the settings
//! (`oauth.scopes`), the token endpoint and the Vault-compatible roles' policies.

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn valid_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}
