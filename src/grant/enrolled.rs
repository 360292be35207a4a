//! The pair an agent gets when it enrolls accepting JWTs (`POST /api/fleet/agents/enroll`
//! with `X-Elastic-Agent-Accept-Auth: JWT`): issued exactly as the Fleet door issues an
//! API-key exchange's pair (stored as the agent's pending pair, promoted by its first
//! use), bound to the DPoP key the request proved, if any ([`GrantService::enrollment_binding`],
//! checked before the agent is created).

use std::time::Instant;

use super::{record_failure, DpopRequest, GrantError, GrantService};
use crate::telemetry::metrics::{self, Credential, Endpoint, Grant, Issuance};

/// The DPoP key an enrolling agent's pair will be bound to (if any), decided before
/// the agent is created.
#[derive(Debug, Clone)]
pub struct EnrollmentBinding(Option<String>);
use crate::tokens::{self, IssuedPair, Subject};

impl GrantService {
    /// Checks an enrolling agent's DPoP proof (if any) and the agents' DPoP policy.
    pub fn enrollment_binding(
        &self,
        dpop: &DpopRequest<'_>,
    ) -> Result<EnrollmentBinding, GrantError> {
        let result = self
            .dpop
            .binding(dpop)
            .and_then(|binding| binding.key_for(None, true));
        match result {
            Ok(key) => Ok(EnrollmentBinding(key)),
            Err(e) => {
                record_failure(&e);
                Err(e)
            }
        }
    }

    /// The first pair of `agent_id`, just enrolled through the enrollment token
    /// `client_id` (the pair's `client_id`).
    pub async fn issue_enrolled(
        &self,
        agent_id: &str,
        client_id: &str,
        binding: &EnrollmentBinding,
    ) -> Result<IssuedPair, GrantError> {
        let started = Instant::now();
        let result = async {
            let subject = Subject {
                agent_id,
                client_id,
                family: None,
                bound_key: binding.0.as_deref(),
            };
            Ok(self
                .tokens
                .exchange(subject, tokens::Presented::ApiKey)
                .await?)
        }
        .await;
        match &result {
            Ok(_) => metrics::tokens_issued(
                Endpoint::Fleet,
                Issuance {
                    grant: Grant::Enrollment,
                    credential: Credential::EnrollmentToken,
                },
                true,
                started,
            ),
            Err(e) => record_failure(e),
        }
        result
    }
}
