//! Elasticsearch role descriptors (roles, and the `role_descriptors` of API keys),
//! Elasticsearch time values, and the fields of the Vault-compatible JWT auth method's
//! roles and config.
//!
//! Input: a JSON document, given to every parser (libFuzzer finds the field names; see
//! fuzz/dicts/json.dict). Properties checked besides "no panic":
//! - an accepted role descriptor, written out in Elasticsearch's form, parses back to
//!   the same descriptor, and its cluster privileges are known names;
//! - an accepted Vault role survives the store's JSON round trip, an empty update
//!   changes nothing, its normalized `bound_cidrs` all parse, and no token of it
//!   outlives the server's cap;
//! - an accepted Vault config checks again from its stored form.

#![no_main]

use std::time::Duration;

use fleetauth::es_api::api_keys::parse_time_value;
use fleetauth::identity::roles::{check_role_name, RoleDescriptor};
use fleetauth::vault::config::ConfigDoc;
use fleetauth::vault::role::{normalize_role_name, JwtRole, TtlLimits};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const LIMITS: TtlLimits = TtlLimits {
    default_ttl: Duration::from_secs(1200),
    max_ttl: Duration::from_secs(3600),
};

fn check_descriptor(name: &str, value: &Value) {
    let Ok(descriptor) = RoleDescriptor::parse(name, value) else {
        return;
    };
    let again = RoleDescriptor::parse(name, &descriptor.to_json())
        .expect("a descriptor written out parses again");
    assert_eq!(again, descriptor);
    let _ = descriptor.privileges();
}

fn check_vault_role(fields: &Map<String, Value>) {
    let Ok((role, _warnings)) = JwtRole::apply(None, fields, LIMITS) else {
        return;
    };
    let stored = serde_json::to_value(&role).expect("a role serializes");
    let loaded: JwtRole = serde_json::from_value(stored).expect("a stored role loads");
    assert_eq!(loaded, role);
    let (unchanged, _) = JwtRole::apply(Some(role.clone()), &Map::new(), LIMITS)
        .expect("an empty update of a valid role is valid");
    assert_eq!(unchanged, role);
    assert_eq!(role.bound_networks().len(), role.token_bound_cidrs.len());
    assert!(role.lifetime(LIMITS) <= LIMITS.max_ttl);
    let _ = role.policies();
    let _ = role.read_data();
}

fn check_vault_config(fields: &Map<String, Value>) {
    let Ok((doc, _ignored)) = ConfigDoc::from_request(fields) else {
        return;
    };
    let stored = serde_json::to_value(&doc).expect("a config serializes");
    let loaded: ConfigDoc = serde_json::from_value(stored).expect("a stored config loads");
    assert_eq!(loaded, doc);
    loaded.check().expect("a config accepted once checks again");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_time_value(text);
        if check_role_name(text).is_ok() {
            assert!(!text.is_empty());
        }
        if let Ok(name) = normalize_role_name(text) {
            assert_eq!(
                normalize_role_name(&name).ok().as_deref(),
                Some(name.as_str())
            );
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_descriptor("fuzz", &value);
    if let Value::Object(fields) = &value {
        // An API key's `role_descriptors`: a descriptor per name.
        for (name, descriptor) in fields {
            check_descriptor(name, descriptor);
        }
        check_vault_role(fields);
        check_vault_config(fields);
    }
});
