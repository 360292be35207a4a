//! Every metric series, in one place: one function per series (call sites never name
//! a metric), each described for `/metrics` ([`describe`]), with its histogram buckets
//! ([`buckets`]). Labels are typed: [`Endpoint`] (the front door), [`Grant`] (the OAuth
//! grant type, or the Vault login) and [`Credential`] (what the caller presented) are
//! separate labels, and refusals have one [`FailureReason`] vocabulary.
//!
//! | series | labels |
//! |---|---|
//! | `fleetauth_tokens_issued_total` | endpoint, grant, credential, kind (`access`/`refresh`) |
//! | `fleetauth_token_issue_seconds` | endpoint, grant, credential |
//! | `fleetauth_auth_failures_total` | reason ([`FailureReason`]), detail |
//! | `fleetauth_refresh_token_reuse_total` | — |
//! | `fleetauth_credential_checks_throttled_total` | credential, reason (`busy`, `client_address`, `credential`) |
//! | `fleetauth_argon2_seconds` | — |
//! | `fleetauth_store_batch_size` | — |
//! | `fleetauth_store_cas_conflicts_total` | record |
//! | `fleetauth_store_rejections_total` | outcome (`resent`, `gave_up`) |
//! | `fleetauth_enrollments_total` | result (`created`, `replaced`, `refused`), auth |
//! | `fleetauth_enrollment_tokens_total` | event (`created`, `revoked`) |
//! | `fleetauth_dpop_proof_failures_total` | reason |
//! | `fleetauth_signing_key_rotations_total` | trigger (`scheduled`, `manual`, `algorithm_changed`, `revoked`) |
//! | `fleetauth_bulk_revocations_total` | by (`agent`, `client`, `kid`, `issued_before`) |
//! | `fleetauth_revoked_pairs_total` | by |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};

use crate::secrets::{SecretKind, ThrottleReason};

const TOKENS_ISSUED: &str = "fleetauth_tokens_issued_total";
const TOKEN_ISSUE_SECONDS: &str = "fleetauth_token_issue_seconds";
const AUTH_FAILURES: &str = "fleetauth_auth_failures_total";
const REFRESH_TOKEN_REUSE: &str = "fleetauth_refresh_token_reuse_total";
const CREDENTIAL_CHECKS_THROTTLED: &str = "fleetauth_credential_checks_throttled_total";
const ARGON2_SECONDS: &str = "fleetauth_argon2_seconds";
const STORE_BATCH_SIZE: &str = "fleetauth_store_batch_size";
const STORE_CAS_CONFLICTS: &str = "fleetauth_store_cas_conflicts_total";
const STORE_REJECTIONS: &str = "fleetauth_store_rejections_total";
const ENROLLMENTS: &str = "fleetauth_enrollments_total";
const ENROLLMENT_TOKENS: &str = "fleetauth_enrollment_tokens_total";
const DPOP_PROOF_FAILURES: &str = "fleetauth_dpop_proof_failures_total";
const SIGNING_KEY_ROTATIONS: &str = "fleetauth_signing_key_rotations_total";
const BULK_REVOCATIONS: &str = "fleetauth_bulk_revocations_total";
const REVOKED_PAIRS: &str = "fleetauth_revoked_pairs_total";
const HTTP_CONNECTIONS: &str = "fleetauth_http_connections";
const HTTP_ACCEPT_PAUSES: &str = "fleetauth_http_accept_pauses_total";

/// Histogram buckets, by series.
pub fn buckets() -> [(&'static str, &'static [f64]); 3] {
    [
        (
            TOKEN_ISSUE_SECONDS,
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        ),
        (
            ARGON2_SECONDS,
            &[0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0],
        ),
        (
            STORE_BATCH_SIZE,
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
        ),
    ]
}

/// Describes every series to the installed recorder (`# HELP` lines).
pub fn describe() {
    describe_counter!(
        TOKENS_ISSUED,
        "Tokens issued, by front door, grant type, presented credential and token kind"
    );
    describe_histogram!(
        TOKEN_ISSUE_SECONDS,
        Unit::Seconds,
        "Time to issue a token pair, including the durable commit"
    );
    describe_counter!(
        AUTH_FAILURES,
        "Refused credentials and grant requests, by reason and detail"
    );
    describe_counter!(
        SIGNING_KEY_ROTATIONS,
        "Signing keys this process put in the store, by trigger (scheduled: automatic \
         rotation won by this instance)"
    );
    describe_counter!(
        BULK_REVOCATIONS,
        "Bulk revocations this process carried out, by criterion"
    );
    describe_counter!(
        REVOKED_PAIRS,
        "Token pairs dropped by bulk revocations of this process, by criterion"
    );
    describe_counter!(
        REFRESH_TOKEN_REUSE,
        "Retired refresh tokens presented again (each revoked its holder's tokens)"
    );
    describe_counter!(
        CREDENTIAL_CHECKS_THROTTLED,
        "Credential checks answered 429: the argon2 budget was spent (busy) or too many failures came from a client address or for a credential"
    );
    describe_histogram!(
        ARGON2_SECONDS,
        Unit::Seconds,
        "Time of one argon2 hash or verification on the blocking pool"
    );
    describe_histogram!(STORE_BATCH_SIZE, "Writes per SQLite commit (group commit)");
    describe_counter!(
        STORE_CAS_CONFLICTS,
        "Elasticsearch store: compare-and-set attempts lost to a concurrent writer (each retried)"
    );
    describe_counter!(
        STORE_REJECTIONS,
        "Elasticsearch store: requests the cluster rejected with 429 (resent, or given up: 503)"
    );
    describe_counter!(
        ENROLLMENTS,
        "Agent enrollments, by result (created, replaced, refused) and requested auth"
    );
    describe_counter!(ENROLLMENT_TOKENS, "Enrollment tokens created and revoked");
    describe_counter!(DPOP_PROOF_FAILURES, "DPoP proofs refused, by reason");
    describe_gauge!(HTTP_CONNECTIONS, "Client connections open now");
    describe_counter!(
        HTTP_ACCEPT_PAUSES,
        "Failed accept calls that paused the accept loop (out of file descriptors)"
    );
}

/// The front door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/fleet/*`.
    Fleet,
    /// `/oauth/*`.
    OAuth,
    /// `/_security/*`.
    Elasticsearch,
    /// `/v1/auth/jwt/*`.
    Vault,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fleet => "fleet",
            Self::OAuth => "oauth",
            Self::Elasticsearch => "elasticsearch",
            Self::Vault => "vault",
        }
    }
}

/// The grant that issued a token (RFC 6749 grant types; the Vault JWT login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    RefreshToken,
    /// RFC 8693 (the Fleet door's exchange of an access token is one too).
    TokenExchange,
    /// The Elasticsearch token API's `password` grant.
    Password,
    /// `POST /v1/auth/jwt/login`.
    JwtLogin,
    /// An agent's first pair, at enrollment (`POST /api/fleet/agents/enroll`).
    Enrollment,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => "token_exchange",
            Self::Password => "password",
            Self::JwtLogin => "jwt_login",
            Self::Enrollment => "enrollment",
        }
    }
}

/// What the caller presented to obtain a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    RefreshToken,
    /// An access token of this server.
    AccessToken,
    /// A JWT of another issuer (the Vault JWT auth method).
    ExternalJwt,
    Password,
    ServiceToken,
    /// A Fleet enrollment token (an API key marked as one).
    EnrollmentToken,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::RefreshToken => "refresh_token",
            Self::AccessToken => "access_token",
            Self::ExternalJwt => "external_jwt",
            Self::Password => "password",
            Self::ServiceToken => "service_token",
            Self::EnrollmentToken => "enrollment_token",
        }
    }
}

/// How a token was obtained: the three labels of an issuance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuance {
    pub grant: Grant,
    pub credential: Credential,
}

/// Why a request was refused: one vocabulary for every front door (RFC 6749 §5.2's
/// codes, plus what the Elasticsearch and Vault families add).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    InvalidRequest,
    /// Bad or missing credentials (client authentication, or a user's password).
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    UnsupportedTokenType,
    /// Authenticated, but not allowed.
    Forbidden,
    NotFound,
    Conflict,
    /// 429: busy, or too many failed credential checks.
    Throttled,
    /// RFC 9449: a missing, malformed or replayed DPoP proof.
    InvalidDpopProof,
    /// RFC 9449 §8: a proof without the server's nonce.
    UseDpopNonce,
    /// The store (or a key source) could not be reached.
    Unavailable,
    Internal,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Throttled => "throttled",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// Set once this module's recorder is the process's global one ([`recorder_installed`]):
/// from then on the hot series below keep their registered handles instead of building
/// their key and looking it up in the recorder on every call. Before (or when an
/// embedding program installed its own recorder) they take the macros' path.
static OWN_RECORDER: AtomicBool = AtomicBool::new(false);

/// Called by [`super::metrics_handle`] after it installed the global recorder.
pub(super) fn recorder_installed() {
    OWN_RECORDER.store(true, Ordering::Release);
}

const ENDPOINTS: usize = 4;
const GRANTS: usize = 6;
const CREDENTIALS: usize = 7;
const ISSUANCES: usize = ENDPOINTS * GRANTS * CREDENTIALS;
// The label enums' last variants bound the indexes (a variant added at the end still
// works: its index is out of the tables and it takes the macros' path).
const _: () = assert!(Endpoint::Vault as usize == ENDPOINTS - 1);
const _: () = assert!(Grant::Enrollment as usize == GRANTS - 1);
const _: () = assert!(Credential::EnrollmentToken as usize == CREDENTIALS - 1);

/// `fleetauth_tokens_issued_total` handles: `[issuance][kind]` (0 access, 1 refresh),
/// each registered on its first use, so a label set never used is never exported.
static TOKENS_ISSUED_HANDLES: [[OnceLock<Counter>; 2]; ISSUANCES] =
    [const { [const { OnceLock::new() }, const { OnceLock::new() }] }; ISSUANCES];
/// `fleetauth_token_issue_seconds` handles, by issuance, registered on first use.
static TOKEN_ISSUE_SECONDS_HANDLES: [OnceLock<Histogram>; ISSUANCES] =
    [const { OnceLock::new() }; ISSUANCES];
static STORE_BATCH_SIZE_HANDLE: OnceLock<Histogram> = OnceLock::new();

/// The handle in `slot`, registered by `register` on first use once our recorder is
/// installed; before that (or without a slot), `register`'s handle of the moment.
fn kept<H: Clone>(slot: Option<&OnceLock<H>>, register: impl FnOnce() -> H) -> H {
    match slot {
        Some(slot) if OWN_RECORDER.load(Ordering::Acquire) => slot.get_or_init(register).clone(),
        _ => register(),
    }
}

/// A pair (or an access token alone) was issued.
pub fn tokens_issued(endpoint: Endpoint, how: Issuance, refresh_token: bool, started: Instant) {
    let index =
        (endpoint as usize * GRANTS + how.grant as usize) * CREDENTIALS + how.credential as usize;
    let (endpoint, grant, credential) = (
        endpoint.as_str(),
        how.grant.as_str(),
        how.credential.as_str(),
    );
    let issued = |slot: usize, kind: &'static str| {
        kept(
            TOKENS_ISSUED_HANDLES.get(index).map(|kinds| &kinds[slot]),
            || {
                counter!(
                    TOKENS_ISSUED,
                    "endpoint" => endpoint,
                    "grant" => grant,
                    "credential" => credential,
                    "kind" => kind
                )
            },
        )
        .increment(1)
    };
    issued(0, "access");
    if refresh_token {
        issued(1, "refresh");
    }
    kept(TOKEN_ISSUE_SECONDS_HANDLES.get(index), || {
        histogram!(
            TOKEN_ISSUE_SECONDS,
            "endpoint" => endpoint,
            "grant" => grant,
            "credential" => credential
        )
    })
    .record(started.elapsed().as_secs_f64());
}

/// A request was refused; `detail` is the refusing layer's finer reason
/// (e.g. `api_key_wrong_secret`, `jwt_expired`).
pub fn auth_failure(reason: FailureReason, detail: &'static str) {
    counter!(
        AUTH_FAILURES,
        "reason" => reason.as_str(),
        "detail" => detail
    )
    .increment(1);
}

/// A retired refresh token was presented again.
pub fn refresh_token_reuse() {
    counter!(REFRESH_TOKEN_REUSE).increment(1);
}

/// This process stored a new signing key (`trigger`: why).
pub fn signing_key_rotated(trigger: &'static str) {
    counter!(SIGNING_KEY_ROTATIONS, "trigger" => trigger).increment(1);
}

/// A bulk revocation by `by` dropped `pairs` token pairs.
pub fn bulk_revocation(by: &'static str, pairs: u64) {
    counter!(BULK_REVOCATIONS, "by" => by).increment(1);
    counter!(REVOKED_PAIRS, "by" => by).increment(pairs);
}

/// A credential check was refused for now (answered 429).
pub fn credential_check_throttled(credential: SecretKind, reason: ThrottleReason) {
    counter!(
        CREDENTIAL_CHECKS_THROTTLED,
        "credential" => credential.as_str(),
        "reason" => reason.as_str()
    )
    .increment(1);
}

/// One argon2 job took `took`.
pub fn argon2_seconds(took: Duration) {
    histogram!(ARGON2_SECONDS).record(took.as_secs_f64());
}

/// A SQLite commit carried `writes` writes.
pub fn store_batch_size(writes: usize) {
    kept(Some(&STORE_BATCH_SIZE_HANDLE), || {
        histogram!(STORE_BATCH_SIZE)
    })
    .record(writes as f64);
}

/// The Elasticsearch store lost a compare-and-set on a `record` kind.
pub fn store_cas_conflict(record: &'static str) {
    counter!(STORE_CAS_CONFLICTS, "record" => record).increment(1);
}

/// The cluster answered 429 (overloaded): `outcome` = `resent` (tried again after a
/// pause) or `gave_up` (the resends ran out; the caller sees the store unavailable).
pub fn store_rejection(outcome: &'static str) {
    counter!(STORE_REJECTIONS, "outcome" => outcome).increment(1);
}

/// An enrollment ended: `result` = `created`, `replaced` or `refused`; `auth` = what the
/// agent asked for (`api_key`, `jwt`).
pub fn enrollment(result: &'static str, auth: &'static str) {
    counter!(ENROLLMENTS, "result" => result, "auth" => auth).increment(1);
}

/// An enrollment token was `created` or `revoked`.
pub fn enrollment_token(event: &'static str) {
    counter!(ENROLLMENT_TOKENS, "event" => event).increment(1);
}

/// A DPoP proof was refused for `reason`.
pub fn dpop_proof_failure(reason: &'static str) {
    counter!(DPOP_PROOF_FAILURES, "reason" => reason).increment(1);
}

/// A client connection was accepted (the open-connections gauge).
pub fn connection_opened() {
    gauge!(HTTP_CONNECTIONS).increment(1.0);
}

/// A client connection closed.
pub fn connection_closed() {
    gauge!(HTTP_CONNECTIONS).decrement(1.0);
}

/// A failed `accept` paused the accept loop (`EMFILE` and friends).
pub fn accept_paused() {
    counter!(HTTP_ACCEPT_PAUSES).increment(1);
}
