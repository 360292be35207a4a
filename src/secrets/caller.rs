//! The address of the client whose request is being served, for the per-address
//! failure limits. The HTTP layer sets it once per request (`http::router` wraps every
//! request in [`with_caller_address`]); the secret verifier reads it. It is a property
//! of the request, not of the credential, so it travels beside the call rather than
//! through every flow between the HTTP layer and the verifier. Outside a request (the
//! CLI), there is none, and only the per-credential limits apply.

use std::future::Future;
use std::net::IpAddr;

tokio::task_local! {
    static CALLER_ADDRESS: Option<IpAddr>;
}

/// Runs `request` with `addr` as its caller's address.
pub async fn with_caller_address<F: Future>(addr: Option<IpAddr>, request: F) -> F::Output {
    CALLER_ADDRESS.scope(addr, request).await
}

/// The address of the caller of the request being served, if any.
pub fn caller_address() -> Option<IpAddr> {
    CALLER_ADDRESS.try_with(|addr| *addr).ok().flatten()
}
