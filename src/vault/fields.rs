//! Vault's request field types, read from a JSON object the way Vault's `framework`
//! reads them: comma-separated strings or arrays for lists, integer seconds or
//! duration strings (`"90"`, `"1h"`, `"1h30m"`) for durations, `"true"` for booleans.
//! Each reader names the field in its error, so a bad value is a clear 400.

use serde_json::{Map, Value};

use super::VaultError;

/// A request body: a JSON object, field name to value.
pub type Fields = Map<String, Value>;

fn invalid(field: &str, why: impl std::fmt::Display) -> VaultError {
    VaultError::invalid(
        "invalid_field",
        format!("invalid value for {field:?}: {why}"),
    )
}

/// A string (a number is taken as its decimal text, as Vault does).
pub fn string(field: &str, value: &Value) -> Result<String, VaultError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Null => Ok(String::new()),
        _ => Err(invalid(field, "expected a string")),
    }
}

/// A list of strings: an array, or one comma-separated string. Items are trimmed and
/// empty items dropped.
pub fn string_list(field: &str, value: &Value) -> Result<Vec<String>, VaultError> {
    let items: Vec<String> = match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(invalid(field, "expected a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        _ => Err(invalid(
            field,
            "expected a list of strings or a comma-separated string",
        ))?,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A list of strings that may contain commas themselves (PEM documents): an array, or
/// one string taken whole.
pub fn text_list(field: &str, value: &Value) -> Result<Vec<String>, VaultError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .filter(|item| !item.as_str().is_some_and(|s| s.trim().is_empty()))
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(field, "expected a list of strings"))
            })
            .collect(),
        _ => Err(invalid(field, "expected a list of strings")),
    }
}

/// A boolean: `true`/`false`, or the strings Go's `strconv.ParseBool` accepts.
pub fn boolean(field: &str, value: &Value) -> Result<bool, VaultError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        Value::String(s) => match s.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
            _ => Err(invalid(field, "expected a boolean")),
        },
        _ => Err(invalid(field, "expected a boolean")),
    }
}

/// A signed integer, given as a number or a decimal string.
pub fn integer(field: &str, value: &Value) -> Result<i64, VaultError> {
    match value {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid(field, "expected an integer")),
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| invalid(field, "expected an integer")),
        _ => Err(invalid(field, "expected an integer")),
    }
}

/// A duration in whole seconds, possibly negative: an integer number of seconds, or a
/// string of seconds or a duration like `"1h30m"`, `"90s"`, `"-1s"`.
pub fn signed_seconds(field: &str, value: &Value) -> Result<i64, VaultError> {
    match value {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid(field, "expected whole seconds")),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(0);
            }
            if let Ok(n) = s.parse::<i64>() {
                return Ok(n);
            }
            let (negative, unsigned) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.strip_prefix('+').unwrap_or(s)),
            };
            let duration = humantime::parse_duration(unsigned).map_err(|_| {
                invalid(
                    field,
                    format!("{s:?} is not a number of seconds or a duration like \"1h\""),
                )
            })?;
            let secs = i64::try_from(duration.as_secs())
                .map_err(|_| invalid(field, "the duration is too long"))?;
            Ok(if negative { -secs } else { secs })
        }
        _ => Err(invalid(field, "expected seconds or a duration string")),
    }
}

/// A duration in whole seconds that must not be negative.
pub fn seconds(field: &str, value: &Value) -> Result<u64, VaultError> {
    let secs = signed_seconds(field, value)?;
    u64::try_from(secs).map_err(|_| invalid(field, "must not be negative"))
}

/// A JSON object (`null` is an empty one).
pub fn object(field: &str, value: &Value) -> Result<Map<String, Value>, VaultError> {
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map.clone()),
        _ => Err(invalid(field, "expected an object")),
    }
}

/// Key/value pairs of strings: an object, or a list of `"key=value"` strings.
pub fn string_pairs(field: &str, value: &Value) -> Result<Vec<(String, String)>, VaultError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(field, v)?)))
            .collect(),
        Value::Array(_) | Value::String(_) => string_list(field, value)?
            .into_iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| invalid(field, format!("{pair:?} is not key=value")))
            })
            .collect(),
        _ => Err(invalid(field, "expected an object of strings")),
    }
}

/// Whether a value is its type's empty value (for parameters this server accepts only
/// when they ask for nothing).
pub fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_come_as_arrays_or_comma_separated_strings() {
        assert_eq!(
            string_list("f", &json!("a, b,,c")).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            string_list("f", &json!(["a", " b "])).unwrap(),
            vec!["a", "b"]
        );
        assert!(string_list("f", &json!([{}])).is_err());
        assert!(string_list("f", &json!(true)).is_err());
    }

    #[test]
    fn durations_are_seconds_or_duration_strings() {
        assert_eq!(seconds("ttl", &json!(90)).unwrap(), 90);
        assert_eq!(seconds("ttl", &json!("90")).unwrap(), 90);
        assert_eq!(seconds("ttl", &json!("1h")).unwrap(), 3600);
        assert_eq!(seconds("ttl", &json!("1h30m")).unwrap(), 5400);
        assert_eq!(signed_seconds("l", &json!(-1)).unwrap(), -1);
        assert_eq!(signed_seconds("l", &json!("-1s")).unwrap(), -1);
        let err = seconds("ttl", &json!("soon")).unwrap_err().to_string();
        assert!(err.contains("\"ttl\""), "{err}");
        assert!(seconds("ttl", &json!(-5)).is_err());
        assert!(seconds("ttl", &json!(1.5)).is_err());
    }

    #[test]
    fn booleans_and_pairs() {
        assert!(boolean("b", &json!("true")).unwrap());
        assert!(!boolean("b", &json!(false)).unwrap());
        assert!(boolean("b", &json!("maybe")).is_err());
        assert_eq!(
            string_pairs("m", &json!(["a=b", "c = d"])).unwrap(),
            vec![("a".into(), "b".into()), ("c".into(), "d".into())]
        );
        assert!(string_pairs("m", &json!(["nope"])).is_err());
    }
}
