//! Minting: the claims and signature of new access tokens, and new pairs (an access
//! token and a refresh token of the subject's format), before any of it is stored.

use super::*;

impl TokenService {
    /// Signs an access token for `subject` with the current signing key; `scope` (if
    /// any) becomes its `scope` claim.
    pub(super) fn mint_access(
        &self,
        subject: &Subject<'_>,
        scope: Option<&str>,
        now: UnixTime,
    ) -> IssuedAccess {
        let claims = self.access_claims(subject, scope, self.settings.access_ttl, now);
        self.sign_access(claims)
    }

    /// The claims of a new access token living `ttl`.
    pub(super) fn access_claims(
        &self,
        subject: &Subject<'_>,
        scope: Option<&str>,
        ttl: Duration,
        now: UnixTime,
    ) -> AccessClaims {
        AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.sub.to_string(),
            // A UUIDv7: the issue time (what bulk revocation reads), then 74 random bits.
            jti: revocation::new_jti(now),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            client_id: subject.client_id.to_string(),
            aud: Some(self.audience.clone()),
            scope: scope.filter(|s| !s.is_empty()).map(str::to_string),
            groups: None,
            vault_role: None,
            max_uses: None,
            sid: subject.family.map(str::to_string),
            cnf: subject.bound_key.map(|jkt| Confirmation {
                jkt: jkt.to_string(),
            }),
        }
    }

    pub(super) fn sign_access(&self, claims: AccessClaims) -> IssuedAccess {
        let ring = self.ring();
        IssuedAccess {
            access_token: jwt::sign(ring.signer(claims.iat), &claims),
            expires_in: (claims.exp - claims.iat).max(0) as u64,
            jti: claims.jti,
            bound_key: claims.cnf.map(|c| c.jkt),
        }
    }

    /// Mints a pair for `subject` with the current signing key.
    pub(super) fn mint(
        &self,
        subject: &Subject<'_>,
        scope: Option<&str>,
        now: UnixTime,
    ) -> (IssuedPair, TokenPairRecord) {
        let access = self.mint_access(subject, scope, now);
        let refresh = match subject.family {
            Some(family) => refresh::mint_family(family, subject.sub),
            None => refresh::mint_bound(subject.sub, subject.client_id, scope, subject.bound_key),
        };
        let record = TokenPairRecord {
            jti: access.jti.clone(),
            refresh_hash: refresh.hash,
            access_expires_at: now + access.expires_in as i64,
            refresh_expires_at: now + self.settings.refresh_ttl.as_secs() as i64,
        };
        let issued = IssuedPair {
            access_token: access.access_token,
            refresh_token: refresh.token,
            expires_in: access.expires_in,
            jti: access.jti,
            bound_key: access.bound_key,
        };
        (issued, record)
    }

    /// An access token alone, recorded nowhere: it is valid by its signature and
    /// claims until it expires (the caller decides who may have one).
    pub fn issue_access_only(&self, subject: Subject<'_>, scope: Option<&str>) -> IssuedAccess {
        self.mint_access(&subject, scope, self.clock.now())
    }
}
