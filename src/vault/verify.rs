//! Verifying an external JWT for a role, as Vault's JWT auth method does: the
//! signature (an allowed algorithm, a key of the right type, chosen by `kid` or tried in
//! turn), then the claims: `nbf`/`exp`/`iat` with the role's leeways, `iss` against the
//! config's `bound_issuer`, `sub` against `bound_subject`, `aud` against
//! `bound_audiences` (any match), `bound_claims`; and finally what the token will carry:
//! the `user_claim`, the `groups_claim`, the `claim_mappings`.
//!
//! Leeways follow Vault's documentation: 0 means the default (60 s clock skew, 150 s for
//! expiration and not-before), -1 means none. A token must have at least one of `exp`,
//! `nbf`, `iat`; without `exp` it expires `expiration_leeway` after the later of `iat`
//! and `nbf` (as Vault's validator does).

use std::collections::BTreeMap;

use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};

use super::config::JwtAuthConfig;
use super::keys::{self, Candidates, FetchError, KeySet};
use super::role::{
    JwtRole, DEFAULT_CLOCK_SKEW_LEEWAY, DEFAULT_EXPIRATION_LEEWAY, DEFAULT_NOT_BEFORE_LEEWAY,
};
use super::VaultError;
use crate::clock::UnixTime;

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

fn refused(reason: &'static str, why: impl std::fmt::Display) -> VaultError {
    VaultError::invalid(reason, format!("error validating token: {why}"))
}

/// Checks the signature of `token` with `keys`: `alg` must be one of the config's, and
/// the key of its family (and `kid`, when the token names one).
pub async fn verify_signature(
    token: &str,
    config: &JwtAuthConfig,
    keys: &KeySet,
    now: UnixTime,
) -> Result<Claims, VaultError> {
    // `none` and unknown algorithms do not even parse as a header.
    let header = decode_header(token).map_err(|_| {
        refused(
            "jwt_malformed",
            "the token is not a well-formed JWT signed with a supported algorithm",
        )
    })?;
    let alg = header.alg;
    if !config.algorithms.contains(&alg) {
        return Err(refused(
            "jwt_wrong_algorithm",
            format!(
                "invalid algorithm (alg) header parameter: {} is not allowed",
                keys::algorithm_name(alg)
            ),
        ));
    }
    let candidates = keys
        .candidates(header.kid.as_deref(), alg, now)
        .await
        .map_err(|FetchError::Provider(why)| VaultError::KeysUnavailable(why))?;
    let candidates = match candidates {
        Candidates::Keys(keys) => keys,
        Candidates::UnknownKid => {
            return Err(refused(
                "jwt_unknown_key",
                "no key of the OIDC provider matches the token's kid",
            ))
        }
    };
    let validation = signature_only(alg);
    for key in &candidates {
        if let Ok(data) = decode::<Claims>(token, &key.key, &validation) {
            return Ok(data.claims);
        }
    }
    Err(refused(
        "jwt_bad_signature",
        "no known key successfully validated the token signature",
    ))
}

/// jsonwebtoken checks the signature only; claims are checked below, with our clock.
fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

/// A numeric date claim; present but not a number is malformed.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<i64>, VaultError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| refused("jwt_malformed", format!("the {name} claim is not a date"))),
        Some(_) => Err(refused(
            "jwt_malformed",
            format!("the {name} claim is not a date"),
        )),
    }
}

/// `nbf`, `exp` and `iat` with the role's leeways.
pub fn check_times(claims: &Claims, role: &JwtRole, now: UnixTime) -> Result<(), VaultError> {
    let skew = JwtRole::effective_leeway(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW_LEEWAY);
    let exp_leeway = JwtRole::effective_leeway(role.expiration_leeway, DEFAULT_EXPIRATION_LEEWAY);
    let nbf_leeway = JwtRole::effective_leeway(role.not_before_leeway, DEFAULT_NOT_BEFORE_LEEWAY);
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    if exp.is_none() && nbf.is_none() && iat.is_none() {
        return Err(refused(
            "jwt_missing_claim",
            "no issued at (iat), not before (nbf), or expiration time (exp) claims in token",
        ));
    }
    let expires = match exp {
        Some(exp) => exp.saturating_add(exp_leeway),
        None => nbf.max(iat).unwrap_or(0).saturating_add(exp_leeway),
    };
    if now.saturating_sub(skew) > expires {
        return Err(refused(
            "jwt_expired",
            "invalid expiration time (exp) claim: token is expired",
        ));
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew).saturating_add(nbf_leeway) < nbf {
            return Err(refused(
                "jwt_not_yet_valid",
                "invalid not before (nbf) claim: token not yet valid",
            ));
        }
    }
    if let Some(iat) = iat {
        if now.saturating_add(skew) < iat {
            return Err(refused(
                "jwt_issued_in_future",
                "invalid issued at (iat) claim: token issued in the future",
            ));
        }
    }
    Ok(())
}

/// `iss`, `sub` and `aud`.
pub fn check_bindings(
    claims: &Claims,
    config: &JwtAuthConfig,
    role: &JwtRole,
) -> Result<(), VaultError> {
    if let Some(issuer) = &config.bound_issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(refused("jwt_wrong_issuer", "invalid issuer (iss) claim"));
        }
    }
    if !role.bound_subject.is_empty()
        && claims.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
    {
        return Err(refused("jwt_wrong_subject", "invalid subject (sub) claim"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !role
        .bound_audiences
        .iter()
        .any(|bound| audiences.contains(&bound.as_str()))
    {
        return Err(refused(
            "jwt_wrong_audience",
            "invalid audience (aud) claim: aud claim does not match any bound audience",
        ));
    }
    Ok(())
}

/// A claim by name, or by JSON pointer when it starts with `/` (as Vault reads
/// `bound_claims`, `claim_mappings` and `groups_claim`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    let found = if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    };
    found.filter(|v| !v.is_null())
}

/// A value as a list (a single value is a list of one).
fn as_list(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(items) => Some(items.iter().collect()),
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Some(vec![value]),
        _ => None,
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `*` matches any run of characters (Vault's glob).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// `bound_claims`: every listed claim must match one of its values.
pub fn check_bound_claims(claims: &Claims, role: &JwtRole) -> Result<(), VaultError> {
    let all = Value::Object(claims.clone());
    let globs = role.bound_claims_type == "glob";
    for (name, expected) in &role.bound_claims {
        let actual = claim(&all, name)
            .ok_or_else(|| refused("jwt_claims_mismatch", format!("claim {name:?} is missing")))?;
        let actual = as_list(actual).ok_or_else(|| {
            refused(
                "jwt_claims_mismatch",
                format!("claim {name:?} is not a string, bool, number or list"),
            )
        })?;
        let expected = as_list(expected).unwrap_or_default();
        let found = expected.iter().any(|exp| {
            actual.iter().any(|act| match (globs, exp, act) {
                (true, Value::String(pattern), Value::String(text)) => glob(pattern, text),
                (true, _, _) => false,
                (false, _, _) => scalar_eq(exp, act),
            })
        });
        if !found {
            return Err(refused(
                "jwt_claims_mismatch",
                format!("claim {name:?} does not match any associated bound claim values"),
            ));
        }
    }
    Ok(())
}

/// What the token will carry about its subject.
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The `user_claim` (a non-empty string), the `groups_claim` (a list of strings, or
/// one), and the `claim_mappings` (string claims, copied into the metadata).
pub fn identity(claims: &Claims, role: &JwtRole) -> Result<Identity, VaultError> {
    let all = Value::Object(claims.clone());
    let user_claim = &role.user_claim;
    let user = if role.user_claim_json_pointer {
        claim(&all, user_claim)
    } else {
        claims.get(user_claim.as_str()).filter(|v| !v.is_null())
    };
    let user = match user {
        None => {
            return Err(refused(
                "jwt_missing_claim",
                format!("claim {user_claim:?} not found in token"),
            ))
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(refused(
                "jwt_missing_claim",
                format!("claim {user_claim:?} could not be converted to a non-empty string"),
            ))
        }
    };
    let mut groups = Vec::new();
    if !role.groups_claim.is_empty() {
        let raw = claim(&all, &role.groups_claim).ok_or_else(|| {
            refused(
                "jwt_missing_claim",
                format!("{:?} claim not found in token", role.groups_claim),
            )
        })?;
        let list = as_list(raw).ok_or_else(|| {
            refused(
                "jwt_claims_mismatch",
                format!(
                    "{:?} claim could not be converted to string list",
                    role.groups_claim
                ),
            )
        })?;
        for group in list {
            match group {
                Value::String(g) if g.is_empty() => {}
                Value::String(g) => groups.push(g.clone()),
                other => {
                    return Err(refused(
                        "jwt_claims_mismatch",
                        format!("value {other} in groups claim could not be parsed as string"),
                    ))
                }
            }
        }
    }
    let mut metadata = BTreeMap::new();
    for (source, target) in &role.claim_mappings {
        if let Some(value) = claim(&all, source) {
            let Value::String(text) = value else {
                return Err(refused(
                    "jwt_claims_mismatch",
                    format!("error converting claim '{source}' to string"),
                ));
            };
            metadata.insert(target.clone(), text.clone());
        }
    }
    Ok(Identity {
        user,
        groups,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn times_use_the_leeways() {
        let role = JwtRole::default();
        let now = 1_000_000;
        // Expired an hour ago: refused; expired 200 s ago: within 150 + 60.
        assert!(check_times(&claims(json!({"exp": now - 3600})), &role, now).is_err());
        assert!(check_times(&claims(json!({"exp": now - 200})), &role, now).is_ok());
        assert!(check_times(
            &claims(json!({"nbf": now + 3600, "exp": now + 7200})),
            &role,
            now
        )
        .is_err());
        assert!(check_times(
            &claims(json!({"iat": now + 3600, "exp": now + 7200})),
            &role,
            now
        )
        .is_err());
        assert!(check_times(&claims(json!({"sub": "x"})), &role, now).is_err());
        assert!(check_times(&claims(json!({"exp": "tomorrow"})), &role, now).is_err());
        let strict = JwtRole {
            clock_skew_leeway: -1,
            expiration_leeway: -1,
            not_before_leeway: -1,
            ..JwtRole::default()
        };
        assert!(check_times(&claims(json!({"exp": now - 1})), &strict, now).is_err());
        assert!(check_times(&claims(json!({"exp": now})), &strict, now).is_ok());
        // Without exp, a token lives expiration_leeway after iat.
        assert!(check_times(&claims(json!({"iat": now - 100})), &role, now).is_ok());
        assert!(check_times(&claims(json!({"iat": now - 1000})), &role, now).is_err());
    }

    #[test]
    fn bound_claims_match_strings_lists_numbers_and_globs() {
        let token = claims(json!({
            "repo": "org/app", "env": ["dev", "prod"], "n": 5, "nested": {"team": "core"}
        }));
        let role = |bound: Value, kind: &str| JwtRole {
            bound_claims: bound.as_object().unwrap().clone(),
            bound_claims_type: kind.into(),
            ..JwtRole::default()
        };
        assert!(check_bound_claims(&token, &role(json!({"repo": "org/app"}), "string")).is_ok());
        assert!(check_bound_claims(&token, &role(json!({"env": ["prod", "x"]}), "string")).is_ok());
        assert!(check_bound_claims(&token, &role(json!({"n": 5}), "string")).is_ok());
        assert!(
            check_bound_claims(&token, &role(json!({"/nested/team": "core"}), "string")).is_ok()
        );
        assert!(check_bound_claims(&token, &role(json!({"repo": "org/*"}), "string")).is_err());
        assert!(check_bound_claims(&token, &role(json!({"repo": "org/*"}), "glob")).is_ok());
        assert!(check_bound_claims(&token, &role(json!({"repo": "*/a*p"}), "glob")).is_ok());
        assert!(check_bound_claims(&token, &role(json!({"repo": "other/*"}), "glob")).is_err());
        assert!(check_bound_claims(&token, &role(json!({"missing": "x"}), "string")).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("a*", "abc"));
        assert!(glob("*c", "abc"));
        assert!(glob("a*c", "ac"));
        assert!(!glob("a*c", "a"));
        assert!(glob("*", ""));
        assert!(!glob("ab", "abc"));
    }

    #[test]
    fn identity_reads_the_user_groups_and_mappings() {
        let role = JwtRole {
            user_claim: "email".into(),
            groups_claim: "/org/groups".into(),
            claim_mappings: [("repo".to_string(), "repository".to_string())].into(),
            ..JwtRole::default()
        };
        let found = identity(
            &claims(json!({"email": "a@b", "org": {"groups": ["x", "", "y"]}, "repo": "r"})),
            &role,
        )
        .unwrap();
        assert_eq!(found.user, "a@b");
        assert_eq!(found.groups, vec!["x", "y"]);
        assert_eq!(found.metadata["repository"], "r");
        assert!(identity(&claims(json!({"org": {"groups": []}})), &role).is_err());
        assert!(identity(&claims(json!({"email": 5, "org": {"groups": []}})), &role).is_err());
        assert!(identity(&claims(json!({"email": "a"})), &role).is_err());
    }
}
