//! The pair an agent gets when it enrolls accepting JWTs (`POST /api/fleet/agents/enroll`
//! with `X-Elastic-Agent-Accept-Auth: JWT`): issued through the one grant dispatch
//! ([`GrantRequest::Enrolled`]) exactly as the Fleet door issues an API-key exchange's
//! pair (stored as the agent's pending pair, promoted by its first use), bound to the
//! DPoP key the request proved, if any ([`GrantService::enrollment_binding`], checked
//! before the agent is created).

use super::dispatch::GrantRequest;
use super::dpop::Binding;
use super::{record_failure, DpopRequest, GrantError, GrantService};
use crate::telemetry::metrics::Endpoint;
use crate::tokens::IssuedPair;

/// The DPoP binding an enrolling agent's pair will get, checked against the agents'
/// DPoP policy before the agent is created.
#[derive(Debug, Clone)]
pub struct EnrollmentBinding(Binding);

impl EnrollmentBinding {
    pub(super) fn binding(&self) -> &Binding {
        &self.0
    }
}

impl GrantService {
    /// Checks an enrolling agent's DPoP proof (if any) and the agents' DPoP policy.
    pub fn enrollment_binding(
        &self,
        dpop: &DpopRequest<'_>,
    ) -> Result<EnrollmentBinding, GrantError> {
        let result = self.dpop.binding(dpop).and_then(|binding| {
            binding.key_for(None, true)?;
            Ok(binding)
        });
        match result {
            Ok(binding) => Ok(EnrollmentBinding(binding)),
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
        let request = GrantRequest::Enrolled {
            agent_id,
            client_id,
            binding,
        };
        self.grant(Endpoint::Fleet, request, &DpopRequest::NONE)
            .await?
            .into_pair()
    }
}
