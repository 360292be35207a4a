//! Row mapping: the statements, how records are read from rows and written to them
//! (the retired refresh hashes as a compact blob).

use super::*;

// The hot statements are `concat!`ed at compile time rather than `format!`ed per
// call: `prepare_cached` then finds them without building the SQL text first.
macro_rules! agent_columns {
    () => {
        "agent_id, active, current_jti, current_refresh_hash, current_access_expires_at, \
         current_refresh_expires_at, pending_jti, pending_refresh_hash, pending_access_expires_at, \
         pending_refresh_expires_at, retired, updated_at"
    };
}
pub(super) const SELECT_AGENT: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE agent_id = ?1"
);
/// The agent's row without its retired refresh hashes ([`Store::agent_pairs`]).
pub(super) const SELECT_AGENT_PAIRS: &str =
    "SELECT agent_id, active, current_jti, current_refresh_hash, \
     current_access_expires_at, current_refresh_expires_at, pending_jti, pending_refresh_hash, \
     pending_access_expires_at, pending_refresh_expires_at, updated_at \
     FROM agents WHERE agent_id = ?1";
pub(super) const UPSERT_AGENT: &str = concat!(
    "INSERT INTO agents (",
    agent_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (agent_id) DO UPDATE SET active = ?2, current_jti = ?3, \
     current_refresh_hash = ?4, current_access_expires_at = ?5, \
     current_refresh_expires_at = ?6, pending_jti = ?7, pending_refresh_hash = ?8, \
     pending_access_expires_at = ?9, pending_refresh_expires_at = ?10, retired = ?11, \
     updated_at = ?12"
);

pub(super) fn pair_from(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<TokenPairRecord>> {
    let jti: Option<String> = row.get(first)?;
    Ok(match jti {
        None => None,
        Some(jti) => Some(TokenPairRecord {
            jti,
            refresh_hash: row.get(first + 1)?,
            access_expires_at: row.get(first + 2)?,
            refresh_expires_at: row.get(first + 3)?,
        }),
    })
}

/// Bytes per retired refresh token in the `retired` column: the SHA-256 and the
/// expiry (big-endian seconds). Compact, because the column is rewritten on every
/// issuance.
pub(super) const RETIRED_ENTRY: usize = 32 + 8;

pub(super) fn encode_retired(retired: &[RetiredRefresh]) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(retired.len() * RETIRED_ENTRY);
    for r in retired {
        let hash = r.refresh_hash.as_bytes();
        if hash.len() != 64 {
            return Err(StoreError::Corrupt(
                "a refresh hash is not 64 hex digits".into(),
            ));
        }
        for pair in hash.chunks_exact(2) {
            match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                _ => return Err(StoreError::Corrupt("a refresh hash is not hex".into())),
            }
        }
        bytes.extend_from_slice(&r.expires_at.to_be_bytes());
    }
    Ok(bytes)
}

/// The value of one hex digit (either case), by a table: this runs for every digit of
/// every retired hash of every issuance (1,024 per write of a long-running agent).
pub(super) fn hex_value(digit: u8) -> Option<u8> {
    const INVALID: u8 = 0xff;
    const VALUES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    match VALUES[usize::from(digit)] {
        INVALID => None,
        value => Some(value),
    }
}

pub(super) fn decode_retired(
    agent_id: &str,
    bytes: &[u8],
) -> Result<Vec<RetiredRefresh>, StoreError> {
    if !bytes.len().is_multiple_of(RETIRED_ENTRY) {
        return Err(StoreError::Corrupt(format!(
            "agent {agent_id}: retired tokens: {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(RETIRED_ENTRY)
        .map(|entry| {
            let (hash, expires_at) = entry.split_at(32);
            RetiredRefresh {
                refresh_hash: lower_hex(hash),
                expires_at: i64::from_be_bytes(expires_at.try_into().unwrap_or_default()),
            }
        })
        .collect())
}

/// `bytes` as lowercase hex, written into one exactly sized buffer (this runs for
/// every retired hash of every agent read, 16 per issuance of a long-running agent).
pub(super) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = vec![0u8; bytes.len() * 2];
    for (out, b) in hex.chunks_exact_mut(2).zip(bytes) {
        out[0] = DIGITS[usize::from(b >> 4)];
        out[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII digits were written.
    String::from_utf8(hex).unwrap_or_default()
}

pub(super) fn agent_from(row: &Row<'_>) -> rusqlite::Result<(TokenStateRecord, Vec<u8>)> {
    let record = TokenStateRecord {
        agent_id: row.get(0)?,
        active: row.get(1)?,
        current: pair_from(row, 2)?,
        pending: pair_from(row, 6)?,
        retired: Vec::new(),
        updated_at: row.get(11)?,
    };
    Ok((record, row.get(10)?))
}

pub(super) fn read_agent(
    conn: &Connection,
    agent_id: &str,
) -> Result<Option<TokenStateRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(SELECT_AGENT).map_err(unavailable)?;
    let found = stmt
        .query_row([agent_id], agent_from)
        .optional()
        .map_err(unavailable)?;
    found
        .map(|(mut record, retired)| {
            record.retired = decode_retired(agent_id, &retired)?;
            Ok(record)
        })
        .transpose()
}

/// The agent's record with an empty `retired` list, without reading the list.
pub(super) fn read_agent_pairs(
    conn: &Connection,
    agent_id: &str,
) -> Result<Option<TokenStateRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(SELECT_AGENT_PAIRS)
        .map_err(unavailable)?;
    stmt.query_row([agent_id], |row| {
        Ok(TokenStateRecord {
            agent_id: row.get(0)?,
            active: row.get(1)?,
            current: pair_from(row, 2)?,
            pending: pair_from(row, 6)?,
            retired: Vec::new(),
            updated_at: row.get(10)?,
        })
    })
    .optional()
    .map_err(unavailable)
}

pub(super) fn write_agent(conn: &Connection, r: &TokenStateRecord) -> Result<(), StoreError> {
    let retired = encode_retired(&r.retired)?;
    let (c, p) = (r.current.as_ref(), r.pending.as_ref());
    let mut stmt = conn.prepare_cached(UPSERT_AGENT).map_err(unavailable)?;
    stmt.execute(params![
        r.agent_id,
        r.active,
        c.map(|c| &c.jti),
        c.map(|c| &c.refresh_hash),
        c.map(|c| c.access_expires_at),
        c.map(|c| c.refresh_expires_at),
        p.map(|p| &p.jti),
        p.map(|p| &p.refresh_hash),
        p.map(|p| p.access_expires_at),
        p.map(|p| p.refresh_expires_at),
        retired,
        r.updated_at,
    ])
    .map_err(unavailable)?;
    Ok(())
}

macro_rules! api_key_columns {
    () => {
        "id, name, agent_id, hash, created_at, expires_at, invalidated_at, owner"
    };
}
pub(super) const API_KEY_COLUMNS: &str = api_key_columns!();
pub(super) const SELECT_API_KEY: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE id = ?1"
);

pub(super) fn api_key_from(row: &Row<'_>) -> rusqlite::Result<(ApiKeyRecord, Option<String>)> {
    Ok((
        ApiKeyRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            agent_id: row.get(2)?,
            hash: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            invalidated_at: row.get(6)?,
            owner: None,
        },
        row.get(7)?,
    ))
}

/// The key with its owner (kept as JSON) decoded.
pub(super) fn with_owner(
    (mut key, owner): (ApiKeyRecord, Option<String>),
) -> Result<ApiKeyRecord, StoreError> {
    key.owner = owner
        .map(|text| serde_json::from_str::<ApiKeyOwner>(&text))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("api key {}: owner: {e}", key.id)))?;
    Ok(key)
}

pub(super) fn record_from(
    row: &Row<'_>,
) -> rusqlite::Result<(String, Option<String>, Option<i64>, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

pub(super) fn decode_record(
    kind: RecordKind,
    (id, owner, purge_after, body): (String, Option<String>, Option<i64>, String),
) -> Result<StoredRecord, StoreError> {
    let body = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("{} record {id}: {e}", kind.as_str())))?;
    Ok(StoredRecord {
        id,
        owner,
        purge_after,
        body,
    })
}

pub(super) fn read_record(
    conn: &Connection,
    kind: RecordKind,
    id: &str,
) -> Result<Option<StoredRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, owner, purge_after, body FROM security_records WHERE kind = ?1 AND id = ?2",
        )
        .map_err(unavailable)?;
    stmt.query_row(params![kind.as_str(), id], record_from)
        .optional()
        .map_err(unavailable)?
        .map(|row| decode_record(kind, row))
        .transpose()
}

pub(super) fn signing_key_from(row: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.get(0)?,
        algorithm: row.get(1)?,
        private_der: row.get(2)?,
        created_at: row.get(3)?,
        retired_at: row.get(4)?,
        verify_until: row.get(5)?,
    })
}

pub(super) const SIGNING_KEY_COLUMNS: &str =
    "kid, algorithm, private_der, created_at, retired_at, verify_until";

pub(super) fn insert_signing_key(
    conn: &Connection,
    k: &SigningKeyRecord,
) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        params![
            k.kid,
            k.algorithm,
            k.private_der,
            k.created_at,
            k.retired_at,
            k.verify_until
        ],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::Conflict(format!("signing key {}", k.kid))
        }
        _ => unavailable(e),
    })?;
    Ok(())
}
