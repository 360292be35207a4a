// Over 600 lines with its tests: the code is ~480 (one Vault jwt role: every field's parsing and check); the rest is the tests.
//! Roles (`/v1/auth/jwt/role/:name`): what a JWT must show to log in, and what the
//! token it buys looks like. Parsed from a request with Vault's field names (the
//! `token_*` names and their legacy aliases `policies`, `ttl`, `max_ttl`, `period`,
//! `num_uses`, `bound_cidrs`), merged over the stored role as Vault does (a write
//! changes only the fields it names), checked as a whole, and stored in the normalized
//! form that `GET` shows.
//!
//! Lifetimes (our tokens are not renewable): a periodic role's tokens live `period`;
//! otherwise `ttl` (default: `jwt.access_ttl`), at most `max_ttl`; always at most
//! `token_explicit_max_ttl` and the server's `jwt.max_access_ttl`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::fields::{self, Fields};
use super::{NoRole, VaultError};

/// Vault's default leeways, in seconds (used when a leeway is 0; -1 means none).
pub const DEFAULT_CLOCK_SKEW_LEEWAY: i64 = 60;
pub const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
pub const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;

/// The longest role name.
const MAX_NAME_LEN: usize = 128;

/// The token types Vault accepts on a role. All are stored and shown as given; the
/// tokens issued are this server's access tokens whatever the type (they are neither
/// renewable nor revocable one by one, like Vault's batch tokens).
const TOKEN_TYPES: [&str; 5] = [
    "default",
    "service",
    "batch",
    "default-service",
    "default-batch",
];

/// A stored role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtRole {
    /// `jwt` (the default here) or `oidc`. An `oidc` role is stored and shown, but, as
    /// in Vault, refused by `POST /v1/auth/jwt/login`: this server has no OIDC
    /// (browser redirect) login flow.
    pub role_type: String,
    /// OIDC login only (stored and shown): where the provider may redirect to.
    pub allowed_redirect_uris: Vec<String>,
    /// OIDC login only (stored and shown): the scopes asked of the provider.
    pub oidc_scopes: Vec<String>,
    /// OIDC login only (stored and shown).
    pub verbose_oidc_logging: bool,
    /// OIDC login only (stored and shown): seconds, 0 for none.
    pub max_age: u64,
    pub bound_audiences: Vec<String>,
    pub user_claim: String,
    pub user_claim_json_pointer: bool,
    pub bound_subject: String,
    pub bound_claims_type: String,
    pub bound_claims: Map<String, Value>,
    /// Claim (or JSON pointer) -> metadata key.
    pub claim_mappings: BTreeMap<String, String>,
    pub groups_claim: String,
    pub token_policies: Vec<String>,
    pub token_no_default_policy: bool,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_period: u64,
    pub token_num_uses: u32,
    /// Networks, normalized (`10.0.0.0/8`, `127.0.0.1/32`).
    pub token_bound_cidrs: Vec<String>,
    /// One of [`TOKEN_TYPES`]; shown, not acted on.
    pub token_type: String,
    pub clock_skew_leeway: i64,
    pub expiration_leeway: i64,
    pub not_before_leeway: i64,
}

impl Default for JwtRole {
    fn default() -> Self {
        Self {
            role_type: "jwt".into(),
            allowed_redirect_uris: Vec::new(),
            oidc_scopes: Vec::new(),
            verbose_oidc_logging: false,
            max_age: 0,
            bound_audiences: Vec::new(),
            user_claim: String::new(),
            user_claim_json_pointer: false,
            bound_subject: String::new(),
            bound_claims_type: "string".into(),
            bound_claims: Map::new(),
            claim_mappings: BTreeMap::new(),
            groups_claim: String::new(),
            token_policies: Vec::new(),
            token_no_default_policy: false,
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_period: 0,
            token_num_uses: 0,
            token_bound_cidrs: Vec::new(),
            token_type: "default".into(),
            clock_skew_leeway: DEFAULT_CLOCK_SKEW_LEEWAY,
            expiration_leeway: DEFAULT_EXPIRATION_LEEWAY,
            not_before_leeway: DEFAULT_NOT_BEFORE_LEEWAY,
        }
    }
}

/// The server's token lifetimes that roles are checked against.
#[derive(Debug, Clone, Copy)]
pub struct TtlLimits {
    /// A role without `ttl` gets this (`jwt.access_ttl`).
    pub default_ttl: Duration,
    /// No token lives longer (`jwt.max_access_ttl`).
    pub max_ttl: Duration,
}

/// Role names as Vault takes them: lower-cased, word characters, `-`, `.`, `@`, starting
/// and ending with a word character.
pub fn normalize_role_name(name: &str) -> Result<String, VaultError> {
    let name = name.to_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| word(c) || matches!(c, '-' | '.' | '@'))
        && name.starts_with(word)
        && name.ends_with(word);
    if valid {
        Ok(name)
    } else {
        Err(VaultError::no_role(
            NoRole::InvalidName,
            format!("invalid role name {name:?}: use letters, digits, '_', '-', '.' and '@' (at most {MAX_NAME_LEN}), starting and ending with a letter, digit or '_'"),
        ))
    }
}

/// The network a `bound_cidrs` entry names (an address alone is a /32 or /128).
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .map(|net| net.trunc())
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A field given under its current name, its legacy alias, or neither.
fn aliased<'a>(
    body: &'a Fields,
    name: &'static str,
    alias: &'static str,
) -> Result<Option<(&'static str, &'a Value)>, VaultError> {
    match (body.get(name), body.get(alias)) {
        (Some(_), Some(_)) => Err(VaultError::invalid(
            "invalid_field",
            format!("cannot set both {name:?} and its alias {alias:?}"),
        )),
        (Some(v), None) => Ok(Some((name, v))),
        (None, Some(v)) => Ok(Some((alias, v))),
        (None, None) => Ok(None),
    }
}

impl JwtRole {
    /// Applies a `POST /v1/auth/jwt/role/:name` body to the stored role (or to the
    /// defaults for a new one) and checks the result. Returns the role and warnings
    /// (ignored parameters, lifetimes the server will cut).
    pub fn apply(
        existing: Option<JwtRole>,
        body: &Fields,
        limits: TtlLimits,
    ) -> Result<(Self, Vec<String>), VaultError> {
        let mut role = existing.unwrap_or_default();
        let mut warnings = Vec::new();
        let mut ignored = Vec::new();
        const ALIASES: [(&str, &str); 6] = [
            ("token_policies", "policies"),
            ("token_ttl", "ttl"),
            ("token_max_ttl", "max_ttl"),
            ("token_period", "period"),
            ("token_num_uses", "num_uses"),
            ("token_bound_cidrs", "bound_cidrs"),
        ];
        for (name, value) in body {
            let name = name.as_str();
            match name {
                "role_type" => role.role_type = fields::string(name, value)?,
                "bound_audiences" => role.bound_audiences = fields::string_list(name, value)?,
                "user_claim" => role.user_claim = fields::string(name, value)?,
                "user_claim_json_pointer" => {
                    role.user_claim_json_pointer = fields::boolean(name, value)?
                }
                "bound_subject" => role.bound_subject = fields::string(name, value)?,
                "bound_claims_type" => role.bound_claims_type = fields::string(name, value)?,
                "bound_claims" => role.bound_claims = fields::object(name, value)?,
                "claim_mappings" => {
                    role.claim_mappings = fields::string_pairs(name, value)?.into_iter().collect()
                }
                "groups_claim" => role.groups_claim = fields::string(name, value)?,
                "token_no_default_policy" => {
                    role.token_no_default_policy = fields::boolean(name, value)?
                }
                "token_explicit_max_ttl" => {
                    role.token_explicit_max_ttl = fields::seconds(name, value)?
                }
                "token_type" => {
                    let kind = fields::string(name, value)?;
                    role.token_type = match kind.as_str() {
                        "" => "default".into(),
                        known if TOKEN_TYPES.contains(&known) => kind,
                        other => {
                            return Err(VaultError::invalid(
                                "invalid_field",
                                format!("invalid 'token_type' value {other:?}"),
                            ))
                        }
                    };
                }
                "allowed_redirect_uris" => {
                    role.allowed_redirect_uris = fields::string_list(name, value)?
                }
                "oidc_scopes" => role.oidc_scopes = fields::string_list(name, value)?,
                "verbose_oidc_logging" => role.verbose_oidc_logging = fields::boolean(name, value)?,
                "max_age" => role.max_age = fields::seconds(name, value)?,
                "clock_skew_leeway" => {
                    role.clock_skew_leeway = fields::signed_seconds(name, value)?
                }
                "expiration_leeway" => {
                    role.expiration_leeway = fields::signed_seconds(name, value)?
                }
                "not_before_leeway" => {
                    role.not_before_leeway = fields::signed_seconds(name, value)?
                }
                "name" => {}
                other if ALIASES.iter().any(|(a, b)| other == *a || other == *b) => {}
                other => ignored.push(other.to_string()),
            }
        }
        if let Some((name, value)) = aliased(body, "token_policies", "policies")? {
            role.token_policies = fields::string_list(name, value)?;
        }
        if let Some((name, value)) = aliased(body, "token_ttl", "ttl")? {
            role.token_ttl = fields::seconds(name, value)?;
        }
        if let Some((name, value)) = aliased(body, "token_max_ttl", "max_ttl")? {
            role.token_max_ttl = fields::seconds(name, value)?;
        }
        if let Some((name, value)) = aliased(body, "token_period", "period")? {
            role.token_period = fields::seconds(name, value)?;
        }
        if let Some((name, value)) = aliased(body, "token_num_uses", "num_uses")? {
            let uses = fields::integer(name, value)?;
            role.token_num_uses = u32::try_from(uses).map_err(|_| {
                VaultError::invalid(
                    "invalid_field",
                    format!("{name:?} cannot be negative (0 means unlimited)"),
                )
            })?;
        }
        if let Some((name, value)) = aliased(body, "token_bound_cidrs", "bound_cidrs")? {
            role.token_bound_cidrs = fields::string_list(name, value)?
                .iter()
                .map(|text| {
                    parse_cidr(text).map(|net| net.to_string()).ok_or_else(|| {
                        VaultError::invalid(
                            "invalid_field",
                            format!("invalid CIDR {text:?} in {name}: expected an address or a network like 10.0.0.0/8"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if !ignored.is_empty() {
            ignored.sort();
            warnings.push(format!(
                "Endpoint ignored these unrecognized parameters: [{}]",
                ignored.join(" ")
            ));
        }
        role.normalize_and_check(limits, &mut warnings)?;
        Ok((role, warnings))
    }

    fn normalize_and_check(
        &mut self,
        limits: TtlLimits,
        warnings: &mut Vec<String>,
    ) -> Result<(), VaultError> {
        let invalid = |message: String| VaultError::invalid("invalid_role", message);
        match self.role_type.as_str() {
            "" | "jwt" => self.role_type = "jwt".into(),
            "oidc" => {
                // Vault's rule for OIDC roles; such a role can be stored, not used here.
                if self.allowed_redirect_uris.is_empty() {
                    return Err(invalid(
                        "'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified".into(),
                    ));
                }
            }
            other => return Err(invalid(format!("invalid 'role_type': {other}"))),
        }
        if self.user_claim.trim().is_empty() {
            return Err(invalid("a user claim must be defined on the role".into()));
        }
        if self.role_type == "jwt" && self.bound_audiences.is_empty() {
            return Err(invalid(
                "bound_audiences must be set: a JWT is accepted only if its aud claim names one of them".into(),
            ));
        }
        match self.bound_claims_type.as_str() {
            "string" => {}
            "glob" => {
                for (claim, values) in &self.bound_claims {
                    let all_strings = match values {
                        Value::String(_) => true,
                        Value::Array(items) => items.iter().all(Value::is_string),
                        _ => false,
                    };
                    if !all_strings {
                        return Err(invalid(format!(
                            "bound claim {claim:?}: glob values must be strings"
                        )));
                    }
                }
            }
            other => return Err(invalid(format!("invalid 'bound_claims_type': {other}"))),
        }
        for (claim, values) in &self.bound_claims {
            let scalar =
                |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let ok = match values {
                Value::Array(items) => !items.is_empty() && items.iter().all(scalar),
                other => scalar(other),
            };
            if !ok {
                return Err(invalid(format!(
                    "bound claim {claim:?} must be a string, number, boolean or a list of them"
                )));
            }
        }
        let mut targets = BTreeSet::new();
        for target in self.claim_mappings.values() {
            if target == "role" {
                return Err(invalid(
                    "metadata key \"role\" is reserved and may not be a mapping destination".into(),
                ));
            }
            if !targets.insert(target) {
                return Err(invalid(format!(
                    "multiple keys are mapped to metadata key {target:?}"
                )));
            }
        }
        // Vault lower-cases, de-duplicates and sorts policies; they become the token's
        // scope, so they must be scope tokens (RFC 6749 §3.3).
        let policies: BTreeSet<String> = self
            .token_policies
            .iter()
            .map(|p| p.to_lowercase())
            .collect();
        for policy in &policies {
            if !crate::scope::valid_scope_token(policy) {
                return Err(invalid(format!(
                    "invalid policy name {policy:?}: no spaces, quotes or backslashes"
                )));
            }
        }
        self.token_policies = policies.into_iter().collect();
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(invalid("ttl should not be greater than max ttl".into()));
        }
        let server_max = limits.max_ttl.as_secs();
        if self.token_period > server_max {
            return Err(invalid(format!(
                "'period' of {}s is greater than the server's maximum token lifetime (jwt.max_access_ttl, {server_max}s)",
                self.token_period
            )));
        }
        if self.token_ttl > server_max
            || self.token_max_ttl > server_max
            || self.token_explicit_max_ttl > server_max
        {
            warnings.push(format!(
                "token ttl or max ttl is greater than the server's maximum token lifetime (jwt.max_access_ttl, {server_max}s); issued tokens' lifetime will be truncated"
            ));
        }
        Ok(())
    }

    /// The networks callers must come from (none: any).
    pub fn bound_networks(&self) -> Vec<IpNet> {
        self.token_bound_cidrs
            .iter()
            .filter_map(|text| parse_cidr(text))
            .collect()
    }

    /// The policies a token of this role carries (`default` first unless
    /// `token_no_default_policy`).
    pub fn policies(&self) -> Vec<String> {
        let mut policies: BTreeSet<String> = self.token_policies.iter().cloned().collect();
        if !self.token_no_default_policy {
            policies.insert("default".into());
        }
        policies.into_iter().collect()
    }

    /// How long a token of this role lives, before the server's own cap.
    pub fn lifetime(&self, limits: TtlLimits) -> Duration {
        let secs = if self.token_period > 0 {
            self.token_period
        } else {
            let ttl = match self.token_ttl {
                0 => limits.default_ttl.as_secs(),
                ttl => ttl,
            };
            match self.token_max_ttl {
                0 => ttl,
                max => ttl.min(max),
            }
        };
        let secs = match self.token_explicit_max_ttl {
            0 => secs,
            max => secs.min(max),
        };
        Duration::from_secs(secs).min(limits.max_ttl)
    }

    /// A leeway as used: 0 is the default, negative is none.
    pub fn effective_leeway(value: i64, default: i64) -> i64 {
        match value {
            0 => default,
            v if v < 0 => 0,
            v => v,
        }
    }

    /// `GET /v1/auth/jwt/role/:name`'s `data` (current names and their aliases).
    pub fn read_data(&self) -> Value {
        json!({
            "role_type": self.role_type,
            "bound_audiences": self.bound_audiences,
            "user_claim": self.user_claim,
            "user_claim_json_pointer": self.user_claim_json_pointer,
            "bound_subject": self.bound_subject,
            "bound_claims_type": self.bound_claims_type,
            "bound_claims": self.bound_claims,
            "claim_mappings": self.claim_mappings,
            "groups_claim": self.groups_claim,
            "token_policies": self.token_policies,
            "policies": self.token_policies,
            "token_no_default_policy": self.token_no_default_policy,
            "token_ttl": self.token_ttl,
            "ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "max_ttl": self.token_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_period": self.token_period,
            "period": self.token_period,
            "token_num_uses": self.token_num_uses,
            "num_uses": self.token_num_uses,
            "token_bound_cidrs": self.token_bound_cidrs,
            "bound_cidrs": self.token_bound_cidrs,
            "token_type": self.token_type,
            "allowed_redirect_uris": self.allowed_redirect_uris,
            "oidc_scopes": self.oidc_scopes,
            "verbose_oidc_logging": self.verbose_oidc_logging,
            "max_age": self.max_age,
            "clock_skew_leeway": self.clock_skew_leeway,
            "expiration_leeway": self.expiration_leeway,
            "not_before_leeway": self.not_before_leeway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TtlLimits = TtlLimits {
        default_ttl: Duration::from_secs(1200),
        max_ttl: Duration::from_secs(3600),
    };

    fn apply(
        existing: Option<JwtRole>,
        value: Value,
    ) -> Result<(JwtRole, Vec<String>), VaultError> {
        JwtRole::apply(existing, value.as_object().unwrap(), LIMITS)
    }

    fn minimal() -> Value {
        json!({"role_type": "jwt", "bound_audiences": "ci", "user_claim": "sub"})
    }

    #[test]
    fn a_role_needs_audiences_and_a_user_claim() {
        let err = apply(None, json!({"user_claim": "sub"})).unwrap_err();
        assert!(err.to_string().contains("bound_audiences"));
        let err = apply(None, json!({"bound_audiences": ["a"]})).unwrap_err();
        assert!(err.to_string().contains("user claim"));
        let (role, warnings) = apply(None, minimal()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(role.bound_audiences, vec!["ci"]);
        assert_eq!(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW_LEEWAY);
        assert_eq!(role.policies(), vec!["default"]);
    }

    #[test]
    fn ttls_cidrs_and_aliases_are_checked() {
        let mut body = minimal();
        body["ttl"] = json!("2h");
        body["max_ttl"] = json!("1h");
        assert!(apply(None, body)
            .unwrap_err()
            .to_string()
            .contains("max ttl"));
        let mut body = minimal();
        body["bound_cidrs"] = json!(["10.0.0.0/8", "not-a-cidr"]);
        assert!(apply(None, body)
            .unwrap_err()
            .to_string()
            .contains("not-a-cidr"));
        let mut body = minimal();
        body["ttl"] = json!(60);
        body["token_ttl"] = json!(60);
        assert!(apply(None, body).unwrap_err().to_string().contains("both"));
        let mut body = minimal();
        body["num_uses"] = json!(-1);
        assert!(apply(None, body).is_err());
        let mut body = minimal();
        body["period"] = json!("2h");
        assert!(apply(None, body)
            .unwrap_err()
            .to_string()
            .contains("period"));
        let mut body = minimal();
        body["bound_cidrs"] = json!("10.1.2.3/8, 192.168.1.1");
        body["policies"] = json!("Dev,ops,dev");
        body["max_ttl"] = json!("2h");
        body["surprise"] = json!(true);
        let (role, warnings) = apply(None, body).unwrap();
        assert_eq!(role.token_bound_cidrs, vec!["10.0.0.0/8", "192.168.1.1/32"]);
        assert_eq!(role.token_policies, vec!["dev", "ops"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn oidc_only_fields_are_stored_and_shown() {
        let mut body = minimal();
        body["allowed_redirect_uris"] = json!(["http://localhost:8250/oidc/callback"]);
        body["oidc_scopes"] = json!("profile,email");
        body["verbose_oidc_logging"] = json!(true);
        body["max_age"] = json!("5m");
        body["token_type"] = json!("batch");
        let (role, warnings) = apply(None, body).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let data = role.read_data();
        assert_eq!(
            data["allowed_redirect_uris"],
            json!(["http://localhost:8250/oidc/callback"])
        );
        assert_eq!(data["oidc_scopes"], json!(["profile", "email"]));
        assert_eq!(data["verbose_oidc_logging"], json!(true));
        assert_eq!(data["max_age"], json!(300));
        assert_eq!(data["token_type"], json!("batch"));
        let mut body = minimal();
        body["token_type"] = json!("forever");
        assert!(apply(None, body).is_err());
        // An OIDC role needs redirect URIs (Vault's rule), not bound audiences.
        let oidc = json!({"role_type": "oidc", "user_claim": "sub"});
        assert!(apply(None, oidc.clone())
            .unwrap_err()
            .to_string()
            .contains("allowed_redirect_uris"));
        let mut oidc = oidc;
        oidc["allowed_redirect_uris"] = json!("https://app.example/cb");
        assert_eq!(apply(None, oidc).unwrap().0.role_type, "oidc");
    }

    #[test]
    fn a_write_changes_only_the_fields_it_names() {
        let (role, _) = apply(None, minimal()).unwrap();
        let (role, _) = apply(Some(role), json!({"ttl": "10m"})).unwrap();
        assert_eq!((role.token_ttl, role.user_claim.as_str()), (600, "sub"));
    }

    #[test]
    fn lifetimes_follow_ttl_max_ttl_and_period_within_the_server_cap() {
        let role = |ttl, max, period| JwtRole {
            token_ttl: ttl,
            token_max_ttl: max,
            token_period: period,
            ..JwtRole::default()
        };
        assert_eq!(role(0, 0, 0).lifetime(LIMITS).as_secs(), 1200);
        assert_eq!(role(300, 0, 0).lifetime(LIMITS).as_secs(), 300);
        assert_eq!(role(0, 600, 0).lifetime(LIMITS).as_secs(), 600);
        assert_eq!(role(7200, 0, 0).lifetime(LIMITS).as_secs(), 3600);
        assert_eq!(role(300, 0, 900).lifetime(LIMITS).as_secs(), 900);
    }

    #[test]
    fn role_names_are_lower_cased_and_checked() {
        assert_eq!(normalize_role_name("CI-Runner").unwrap(), "ci-runner");
        for bad in ["", "-x", "x-", "a b", "a/b", &"x".repeat(200)] {
            assert!(normalize_role_name(bad).is_err(), "{bad:?}");
        }
    }
}
