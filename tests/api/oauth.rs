//! The OAuth2 API as standard clients see it: the `oauth2` crate (v5) as a third-party
//! client for `client_credentials`, `refresh_token`, introspection and revocation; raw
//! form posts for token exchange (the `oauth2` crate has no RFC 8693 helper) and for
//! every error; and tokens crossing between `/oauth/token` and the Fleet API.

use std::collections::HashSet;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AccessToken, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, IntrospectionUrl,
    RequestTokenError, Scope, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use serde_json::{json, Value};

use crate::common::requests::pair_of;
use crate::helpers::{
    basic, jwt_parts, metric_value, pair_from, spawn_app, spawn_app_with, TestApp,
};
use fleetauth::api_keys::CreatedApiKey;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Form parameters, in order.
type Form<'a> = Vec<(&'a str, &'a str)>;

type Client = BasicClient<EndpointNotSet, EndpointNotSet, EndpointSet, EndpointNotSet, EndpointSet>;

/// An `oauth2` client for `key`, pointed at the server's endpoints.
fn oauth_client(app: &TestApp, key: &CreatedApiKey, auth: AuthType) -> Client {
    BasicClient::new(ClientId::new(key.id.clone()))
        .set_client_secret(ClientSecret::new(key.api_key.clone()))
        .set_auth_type(auth)
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(app.url("/oauth/introspect")).unwrap())
}

/// RFC 7009 revocation as the `oauth2` crate sends it (Basic authentication, `token`
/// and `token_type_hint`). The crate's own `revoke_token` refuses a non-https
/// revocation URL (RFC 7009 §2: clients MUST check for HTTPS), and the test server
/// speaks plain HTTP on loopback, so the request is posted directly.
async fn revoke_as_oauth2_does(app: &TestApp, key: &CreatedApiKey, token: &str, hint: &str) {
    let response = app
        .post_form(
            "/oauth/revoke",
            Some(&basic(key)),
            &[("token", token), ("token_type_hint", hint)],
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn http() -> reqwest::Client {
    // As the oauth2 crate recommends: never follow redirects from a token endpoint.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Status, `error` and the whole body of an RFC 6749 §5.2 error, after checking the
/// parts every OAuth2 answer must have.
async fn oauth_error(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "no-store", "{status}");
    assert_eq!(headers["pragma"], "no-cache", "{status}");
    if status == 401 {
        assert_eq!(headers["www-authenticate"], "Basic realm=\"fleetauth\"");
    }
    let body: Value = response.json().await.expect("a JSON error");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    (status, body["error"].as_str().unwrap().to_string(), body)
}

async fn token(app: &TestApp, authorization: Option<&str>, form: &[(&str, &str)]) -> Value {
    let response = app.post_form("/oauth/token", authorization, form).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    response.json().await.unwrap()
}

async fn introspect(app: &TestApp, caller: &CreatedApiKey, token: &str) -> Value {
    let response = app
        .post_form(
            "/oauth/introspect",
            Some(&basic(caller)),
            &[("token", token)],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn revoke(app: &TestApp, caller: &CreatedApiKey, token: &str) -> reqwest::Response {
    app.post_form("/oauth/revoke", Some(&basic(caller)), &[("token", token)])
        .await
}

#[tokio::test]
async fn client_credentials_with_the_oauth2_crate_gives_an_agent_a_pair_the_fleet_api_accepts() {
    let app = spawn_app().await;
    let key = app.enroll("oa-1").await;
    let client = oauth_client(&app, &key, AuthType::BasicAuth);
    let before = app.metrics().await;

    let response = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .expect("client_credentials succeeds");

    assert_eq!(response.token_type(), &BasicTokenType::Bearer);
    assert_eq!(response.expires_in().unwrap().as_secs(), 1200);
    assert!(
        response.refresh_token().is_some(),
        "agents get a refresh token"
    );
    let access = response.access_token().secret();
    let (header, claims) = jwt_parts(access);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("oa-1"), Some(key.id.as_str()))
    );
    let whoami: Value = app
        .whoami(&format!("Bearer {access}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["agent_id"], "oa-1");
    // Labelled apart from the Fleet door's exchange of an API key by `endpoint`.
    let series = r#"fleetauth_tokens_issued_total{endpoint="oauth",grant="client_credentials",credential="api_key",kind="access"}"#;
    assert!(metric_value(&app.metrics().await, series) >= metric_value(&before, series) + 1.0);
}

#[tokio::test]
async fn client_credentials_for_a_non_agent_client_gives_an_access_token_only() {
    let app = spawn_app().await;
    let key = app.client_key("reporting-service").await;
    // client_secret_post: the credentials in the form body.
    let client = oauth_client(&app, &key, AuthType::RequestBody);

    let response = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();

    assert!(response.refresh_token().is_none(), "RFC 6749 §4.4.3");
    let access = response.access_token().clone();
    let (_, claims) = jwt_parts(access.secret());
    assert_eq!(
        claims["sub"],
        key.id.as_str(),
        "RFC 9068 §2.2: sub is the client"
    );
    assert_eq!(claims["client_id"], key.id.as_str());
    let introspected = client
        .introspect(&access)
        .request_async(&http())
        .await
        .unwrap();
    assert!(introspected.active());
    assert_eq!(introspected.sub(), Some(key.id.as_str()));
    // Not an agent: the Fleet resource says so, as it does for the key itself.
    assert_eq!(app.whoami_status(access.secret()).await, 401);
    // Many instances of one client may each hold a token.
    let second = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();
    for token in [&access, second.access_token()] {
        assert!(client
            .introspect(token)
            .request_async(&http())
            .await
            .unwrap()
            .active());
    }
    // The tokens live as long as the client's key.
    app.invalidate_api_key(&key.id).await;
    let other = app.client_key("resource-server").await;
    assert_eq!(
        introspect(&app, &other, access.secret()).await,
        json!({ "active": false })
    );
}

#[tokio::test]
async fn refresh_with_the_oauth2_crate_follows_the_fleet_rotation_and_reuse_rules() {
    let app = spawn_app().await;
    let key = app.enroll("oa-2").await;
    let client = oauth_client(&app, &key, AuthType::BasicAuth);
    let first = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(app.whoami_status(first.access_token().secret()).await, 200);
    let first_refresh = first.refresh_token().unwrap().clone();

    let second = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&http())
        .await
        .expect("refresh succeeds");
    // `second` is pending until used; its use retires `first`.
    assert_eq!(app.whoami_status(second.access_token().secret()).await, 200);
    assert_eq!(app.whoami_status(first.access_token().secret()).await, 401);
    let reuse_before = metric_value(&app.metrics().await, "fleetauth_refresh_token_reuse_total");

    let replayed = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&http())
        .await;

    match replayed {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(e.error(), &BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    assert_eq!(
        app.whoami_status(second.access_token().secret()).await,
        401,
        "family revoked"
    );
    assert!(
        metric_value(&app.metrics().await, "fleetauth_refresh_token_reuse_total")
            >= reuse_before + 1.0
    );
}

#[tokio::test]
async fn tokens_cross_between_the_fleet_api_and_the_token_endpoint() {
    let app = spawn_app().await;
    let key = app.enroll("oa-3").await;
    let fleet = app.pair_with_api_key(&key).await;

    // A Fleet refresh token at /oauth/token, without client authentication.
    let from_fleet = token(
        &app,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &fleet.refresh_token),
        ],
    )
    .await;
    let oauth = pair_of(&from_fleet);
    assert_eq!(app.whoami_status(&oauth.access_token).await, 200);

    // And an /oauth/token refresh token at the Fleet API.
    let back = app.refresh(&oauth.refresh_token).await;
    assert_eq!(back.status(), 200);
    let back = pair_from(back).await;
    assert_eq!(app.whoami_status(&back.access_token).await, 200);
    // A Fleet JWT is a token-exchange subject token.
    let exchanged = token(
        &app,
        None,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &back.access_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
    )
    .await;
    assert_eq!(
        app.whoami_status(exchanged["access_token"].as_str().unwrap())
            .await,
        200
    );
}

#[tokio::test]
async fn token_exchange_trades_an_access_token_for_new_tokens() {
    // The oauth2 crate (v5) has no token-exchange request; a raw RFC 8693 form post.
    let app = spawn_app().await;
    let key = app.enroll("oa-4").await;
    let start = app.pair_with_api_key(&key).await;

    let body = token(
        &app,
        Some(&basic(&key)),
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &start.access_token),
            ("subject_token_type", JWT_TOKEN_TYPE),
            ("requested_token_type", JWT_TOKEN_TYPE),
        ],
    )
    .await;

    assert_eq!(body["issued_token_type"], JWT_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1200);
    let exchanged = pair_of(&body);
    let (_, claims) = jwt_parts(&exchanged.access_token);
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("oa-4"), Some(key.id.as_str()))
    );
    // The subject token was the pending pair: trading it promoted it to current, and
    // the new pair is pending; both work until the new one is used, as after a refresh.
    assert_eq!(app.whoami_status(&start.access_token).await, 200);
    assert_eq!(app.whoami_status(&exchanged.access_token).await, 200);
    assert_eq!(app.whoami_status(&start.access_token).await, 401);

    // By default the issued token type is access_token.
    let again = token(
        &app,
        None,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &exchanged.access_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
    )
    .await;
    assert_eq!(again["issued_token_type"], ACCESS_TOKEN_TYPE);
}

#[tokio::test]
async fn token_exchange_of_a_non_agent_token_gives_an_access_token_only() {
    let app = spawn_app().await;
    let key = app.client_key("svc").await;
    let cc = token(
        &app,
        Some(&basic(&key)),
        &[("grant_type", "client_credentials")],
    )
    .await;

    let body = token(
        &app,
        None,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", cc["access_token"].as_str().unwrap()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
    )
    .await;

    assert!(body.get("refresh_token").is_none());
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], key.id.as_str());
}

/// The Fleet door hands out pairs only: one issuance policy decides that a client
/// without stored token state has none, so its token is refused there (with a pointer
/// to `/oauth/token`) before anything is minted, where token exchange gives it a new
/// access token.
#[tokio::test]
async fn the_fleet_door_refuses_a_stateless_client_token_that_token_exchange_trades() {
    let app = spawn_app().await;
    let key = app.client_key("svc").await;
    let cc = token(
        &app,
        Some(&basic(&key)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let access = cc["access_token"].as_str().unwrap();

    let response = app.authenticate(&format!("Bearer {access}")).await;

    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("/oauth/token"),
        "{body}"
    );
}

#[tokio::test]
async fn token_exchange_refusals_follow_rfc_8693() {
    let app = spawn_app().await;
    let key = app.enroll("oa-5").await;
    let pair = app.pair_with_api_key(&key).await;
    let subject = pair.access_token.as_str();
    let base = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut form = base.to_vec();
        form.push(extra);
        form
    };
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "actor_token",
            with(("actor_token", "x.y.z")),
            "invalid_request",
        ),
        (
            "refresh token requested",
            with((
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )),
            "invalid_request",
        ),
        (
            "audience",
            with(("audience", "https://elsewhere.example")),
            "invalid_target",
        ),
        (
            "resource",
            with(("resource", "https://api.example/")),
            "invalid_target",
        ),
        (
            "scope beyond the subject token",
            with(("scope", "fleet:admin")),
            "invalid_scope",
        ),
        (
            "unknown subject_token_type",
            vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", subject),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:saml2",
                ),
            ],
            "invalid_request",
        ),
        (
            "no subject_token",
            vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
            "invalid_request",
        ),
        (
            "garbage subject_token",
            vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", "a.b.c"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
            "invalid_request",
        ),
        (
            "a refresh token as subject_token",
            vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &pair.refresh_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
            "invalid_request",
        ),
    ];
    for (case, form, code) in cases {
        let (status, error, _) =
            oauth_error(app.post_form("/oauth/token", None, &form).await).await;
        assert_eq!((status, error.as_str()), (400, code), "{case}");
    }
    // A subject token that is no longer its agent's (replaced while pending) is invalid.
    app.pair_with_api_key(&key).await;
    let (status, error, _) = oauth_error(app.post_form("/oauth/token", None, &base).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_request"));
    // Presented client credentials must be valid.
    let wrong = "Basic d3Jvbmc6d3Jvbmc="; // wrong:wrong
    let (status, error, _) =
        oauth_error(app.post_form("/oauth/token", Some(wrong), &base).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"));
}

#[tokio::test]
async fn every_token_endpoint_error_is_rfc_6749_json_with_no_store() {
    let app = spawn_app().await;
    let agent = app.enroll("oa-6").await;
    let others_refresh = app
        .pair_with_api_key(&app.enroll("oa-6b").await)
        .await
        .refresh_token;
    let client = app.client_key("svc").await;
    let agent_basic = basic(&agent);
    let client_basic = basic(&client);
    let wrong_secret = basic(&CreatedApiKey {
        api_key: "not-the-secret".into(),
        ..agent.clone()
    });
    let unknown_client = "Basic dW5rbm93bjpzZWNyZXQ="; // unknown:secret
    let cc = [("grant_type", "client_credentials")];
    let url = app.url("/oauth/token");

    // (case, authorization, form, expected status, expected error)
    let cases: Vec<(&str, Option<&str>, Form, u16, &str)> = vec![
        (
            "no grant_type",
            Some(&agent_basic),
            vec![("scope", "x")],
            400,
            "invalid_request",
        ),
        (
            "repeated parameter",
            Some(&agent_basic),
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
        ),
        (
            "two client authentications",
            Some(&agent_basic),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &agent.id),
                ("client_secret", &agent.api_key),
            ],
            400,
            "invalid_request",
        ),
        (
            "refresh without refresh_token",
            None,
            vec![("grant_type", "refresh_token")],
            400,
            "invalid_request",
        ),
        (
            "wrong secret",
            Some(&wrong_secret),
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            Some(unknown_client),
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (
            "no client authentication",
            None,
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (
            "client_id without secret",
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &agent.id),
            ],
            401,
            "invalid_client",
        ),
        (
            "a bearer token as client authentication",
            Some("Bearer abc"),
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (
            "malformed Basic",
            Some("Basic !!!"),
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (
            "unknown refresh token",
            None,
            vec![
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    "fr1.YQ.Yg.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
            ],
            400,
            "invalid_grant",
        ),
        (
            "unknown client refresh token",
            None,
            vec![
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    "fr1.YQ.YQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
            ],
            400,
            "invalid_grant",
        ),
        (
            "another client's refresh token",
            Some(&agent_basic),
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &others_refresh),
            ],
            400,
            "invalid_grant",
        ),
        (
            "garbage refresh token",
            None,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
            ],
            400,
            "invalid_grant",
        ),
        (
            "refresh for a non-agent client",
            Some(&client_basic),
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
            ],
            400,
            "unauthorized_client",
        ),
        (
            "password grant",
            Some(&agent_basic),
            vec![
                ("grant_type", "password"),
                ("username", "u"),
                ("password", "p"),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            "authorization_code grant",
            Some(&agent_basic),
            vec![("grant_type", "authorization_code"), ("code", "c")],
            400,
            "unsupported_grant_type",
        ),
        (
            "a scope, none configured",
            Some(&agent_basic),
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "fleet:read"),
            ],
            400,
            "invalid_scope",
        ),
        (
            "a malformed scope",
            Some(&agent_basic),
            vec![("grant_type", "client_credentials"), ("scope", "a\"b")],
            400,
            "invalid_scope",
        ),
    ];
    for (case, authorization, form, status, code) in cases {
        let response = app.post_form("/oauth/token", authorization, &form).await;
        let (got_status, got_code, _) = oauth_error(response).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{case}");
    }

    // Bodies that are not a valid form.
    let raw: [(&str, &[u8]); 5] = [
        (
            "application/json",
            br#"{"grant_type":"client_credentials"}"#,
        ),
        ("text/plain", b"grant_type=client_credentials"),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client%zzcredentials",
        ),
        ("application/x-www-form-urlencoded", b"grant_type=%ff%fe"),
        ("application/x-www-form-urlencoded", b"grant_type=\xff"),
    ];
    for (content_type, body) in raw {
        let response = app
            .client
            .post(&url)
            .header("Content-Type", content_type)
            .header("Authorization", &agent_basic)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let (status, code, _) = oauth_error(response).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{content_type} {body:?}"
        );
    }
    let no_type = app
        .client
        .post(&url)
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(no_type).await.1, "invalid_request");
}

#[tokio::test]
async fn bad_input_at_any_oauth_endpoint_is_a_4xx_never_a_5xx() {
    let app = spawn_app().await;
    let key = app.enroll("oa-7").await;
    let auth = basic(&key);
    let bodies: [&[u8]; 9] = [
        b"",
        b"&&&",
        b"=",
        b"token",
        b"token=%",
        b"token=a.b.c&token_type_hint=nonsense",
        b"token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        b"grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=%00&subject_token_type=urn:ietf:params:oauth:token-type:jwt",
        b"grant_type=refresh_token&refresh_token=fr1.%2F%2F.%2F%2F.%2F%2F",
    ];
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        for body in bodies {
            for authorization in [
                None,
                Some(auth.as_str()),
                Some("ApiKey ###"),
                Some("Basic Og=="),
            ] {
                let mut request = app
                    .client
                    .post(app.url(path))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.to_vec());
                if let Some(authorization) = authorization {
                    request = request.header("Authorization", authorization);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                assert!(status < 500, "{path} {body:?} {authorization:?}: {status}");
                assert_eq!(response.headers()["cache-control"], "no-store");
            }
        }
    }
    // GET is not a token request.
    assert_eq!(
        app.client
            .get(app.url("/oauth/token"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn scopes_are_granted_from_the_configured_list_and_kept_across_refresh() {
    let app =
        spawn_app_with(|s| s.oauth.scopes = vec!["fleet:read".into(), "fleet:write".into()]).await;
    let key = app.enroll("oa-8").await;
    let client = oauth_client(&app, &key, AuthType::BasicAuth);

    let granted = client
        .exchange_client_credentials()
        .add_scope(Scope::new("fleet:write".into()))
        .add_scope(Scope::new("fleet:read".into()))
        .request_async(&http())
        .await
        .unwrap();
    let scopes: HashSet<String> = granted
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        scopes,
        HashSet::from(["fleet:read".to_string(), "fleet:write".to_string()])
    );
    let (_, claims) = jwt_parts(granted.access_token().secret());
    assert_eq!(claims["scope"], "fleet:read fleet:write");

    // Omitted on refresh: the original scope (RFC 6749 §6).
    let kept = token(
        &app,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", granted.refresh_token().unwrap().secret()),
        ],
    )
    .await;
    assert_eq!(kept["scope"], "fleet:read fleet:write");
    // Narrowed on refresh, then never widened again.
    let narrowed = token(
        &app,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", kept["refresh_token"].as_str().unwrap()),
            ("scope", "fleet:read"),
        ],
    )
    .await;
    assert_eq!(narrowed["scope"], "fleet:read");
    assert_eq!(
        jwt_parts(narrowed["access_token"].as_str().unwrap()).1["scope"],
        "fleet:read"
    );
    let widened = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", narrowed["refresh_token"].as_str().unwrap()),
                ("scope", "fleet:read fleet:write"),
            ],
        )
        .await;
    assert_eq!(oauth_error(widened).await.1, "invalid_scope");
    // The scope survives the Fleet API too.
    let fleet = pair_from(
        app.refresh(narrowed["refresh_token"].as_str().unwrap())
            .await,
    )
    .await;
    assert_eq!(jwt_parts(&fleet.access_token).1["scope"], "fleet:read");
    // Outside the list.
    let refused = client
        .exchange_client_credentials()
        .add_scope(Scope::new("admin".into()))
        .request_async(&http())
        .await;
    match refused {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(e.error(), &BasicErrorResponseType::InvalidScope)
        }
        other => panic!("expected invalid_scope, got {other:?}"),
    }
}

#[tokio::test]
async fn a_setting_gives_non_agent_clients_refresh_tokens_with_the_same_rotation() {
    let app = spawn_app_with(|s| s.oauth.client_credentials_refresh = true).await;
    let key = app.client_key("svc").await;
    let client = oauth_client(&app, &key, AuthType::BasicAuth);

    let first = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();
    let refresh = first
        .refresh_token()
        .expect("the setting allows a refresh token")
        .clone();
    let second = client
        .exchange_refresh_token(&refresh)
        .request_async(&http())
        .await
        .unwrap();

    let introspected = client
        .introspect(second.access_token())
        .request_async(&http())
        .await
        .unwrap();
    assert!(introspected.active());
    // Its token state is kept: an access token can be revoked on its own.
    revoke_as_oauth2_does(&app, &key, second.access_token().secret(), "access_token").await;
    assert!(!client
        .introspect(second.access_token())
        .request_async(&http())
        .await
        .unwrap()
        .active());
}

#[tokio::test]
async fn introspection_requires_a_client_and_reports_an_access_tokens_claims() {
    let app = spawn_app().await;
    let key = app.enroll("oa-9").await;
    let resource_server = app.client_key("resource-server").await;
    let pair = app.pair_with_api_key(&key).await;

    let anonymous = app
        .post_form("/oauth/introspect", None, &[("token", &pair.access_token)])
        .await;
    assert_eq!(oauth_error(anonymous).await.1, "invalid_client");
    let wrong = basic(&CreatedApiKey {
        api_key: "nope".into(),
        ..resource_server.clone()
    });
    let wrong = app
        .post_form(
            "/oauth/introspect",
            Some(&wrong),
            &[("token", &pair.access_token)],
        )
        .await;
    assert_eq!(oauth_error(wrong).await.0, 401);
    let missing = app
        .post_form("/oauth/introspect", Some(&basic(&resource_server)), &[])
        .await;
    assert_eq!(oauth_error(missing).await.1, "invalid_request");

    let active = introspect(&app, &resource_server, &pair.access_token).await;

    let (_, claims) = jwt_parts(&pair.access_token);
    assert_eq!(
        active,
        json!({
            "active": true,
            "sub": "oa-9",
            "client_id": key.id,
            "exp": claims["exp"],
            "iat": claims["iat"],
            "iss": claims["iss"],
            "aud": claims["iss"],
            "jti": claims["jti"],
            "token_type": "Bearer",
            "token_use": "access_token",
        })
    );
    for garbage in [
        "garbage",
        "a.b.c",
        "fr1.YQ.YQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            introspect(&app, &resource_server, garbage).await,
            json!({ "active": false })
        );
    }
    app.clock.advance(20 * 60 + 31);
    assert_eq!(
        introspect(&app, &resource_server, &pair.access_token).await,
        json!({ "active": false })
    );
}

#[tokio::test]
async fn introspection_is_a_look_not_a_use() {
    let app = spawn_app().await;
    let key = app.enroll("oa-10").await;
    let resource_server = app.client_key("rs").await;
    let current = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&current.access_token).await, 200);
    let pending = pair_from(app.refresh(&current.refresh_token).await).await;

    assert_eq!(
        introspect(&app, &resource_server, &pending.access_token).await["active"],
        true
    );
    assert_eq!(
        introspect(&app, &resource_server, &pending.refresh_token).await["token_use"],
        "refresh_token"
    );

    // Nothing was promoted: the current pair is still current.
    assert_eq!(app.whoami_status(&current.access_token).await, 200);
    assert_eq!(
        introspect(&app, &resource_server, &current.refresh_token).await["active"],
        true
    );
    // The agent's own use promotes; the retired refresh token is then inactive, and
    // looking at it is not a reuse: nothing is revoked. (The reuse counter is
    // process-wide, shared with tests that trigger reuse, so it is not asserted here.)
    assert_eq!(app.whoami_status(&pending.access_token).await, 200);
    assert_eq!(
        introspect(&app, &resource_server, &current.refresh_token).await,
        json!({ "active": false })
    );
    assert_eq!(
        introspect(&app, &resource_server, &current.access_token).await,
        json!({ "active": false })
    );
    assert_eq!(app.whoami_status(&pending.access_token).await, 200);
    let refreshed = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &pending.refresh_token),
            ],
        )
        .await;
    assert_eq!(refreshed.status(), 200, "the family was not revoked");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_whole_family() {
    let app = spawn_app().await;
    let key = app.enroll("oa-11").await;
    let current = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&current.access_token).await, 200);
    let pending = pair_from(app.refresh(&current.refresh_token).await).await;

    revoke_as_oauth2_does(&app, &key, &pending.refresh_token, "refresh_token").await;

    for access in [&current.access_token, &pending.access_token] {
        assert_eq!(app.whoami_status(access).await, 401);
    }
    let (status, code, _) = oauth_error(
        app.post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &current.refresh_token),
            ],
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_grant"));
    // The agent starts over with its key.
    let fresh = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&fresh.access_token).await, 200);
}

#[tokio::test]
async fn revoking_an_access_token_makes_it_unusable_at_once() {
    let app = spawn_app().await;
    let key = app.enroll("oa-12").await;
    let client = oauth_client(&app, &key, AuthType::BasicAuth);
    let current = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&current.access_token).await, 200);
    let pending = pair_from(app.refresh(&current.refresh_token).await).await;

    revoke_as_oauth2_does(&app, &key, &current.access_token, "access_token").await;

    assert_eq!(app.whoami_status(&current.access_token).await, 401);
    assert!(!client
        .introspect(&AccessToken::new(current.access_token.clone()))
        .request_async(&http())
        .await
        .unwrap()
        .active());
    // The other pair is untouched.
    assert_eq!(app.whoami_status(&pending.access_token).await, 200);
}

#[tokio::test]
async fn revocation_of_unknown_foreign_and_stateless_tokens() {
    let app = spawn_app().await;
    let agent = app.enroll("oa-13").await;
    let other = app.enroll("oa-14").await;
    let service = app.client_key("svc").await;
    let others_pair = app.pair_with_api_key(&other).await;

    // RFC 7009 §2.2: an invalid token is answered 200.
    for unknown in [
        "garbage",
        "a.b.c",
        "fr1.YQ.YQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let response = revoke(&app, &agent, unknown).await;
        assert_eq!(response.status(), 200, "{unknown}");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    // Another client's tokens are not this client's to revoke.
    for foreign in [&others_pair.access_token, &others_pair.refresh_token] {
        let (status, code, _) = oauth_error(revoke(&app, &agent, foreign).await).await;
        assert_eq!((status, code.as_str()), (400, "unauthorized_client"));
    }
    assert_eq!(app.whoami_status(&others_pair.access_token).await, 200);
    // Client authentication is required.
    let anonymous = app
        .post_form("/oauth/revoke", None, &[("token", "garbage")])
        .await;
    assert_eq!(oauth_error(anonymous).await.0, 401);
    // A non-agent client's access token is stateless: it cannot be revoked alone.
    let cc = token(
        &app,
        Some(&basic(&service)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let (status, code, _) =
        oauth_error(revoke(&app, &service, cc["access_token"].as_str().unwrap()).await).await;
    assert_eq!((status, code.as_str()), (400, "unsupported_token_type"));
}

#[tokio::test]
async fn metadata_names_the_endpoints_with_absolute_urls() {
    let app = spawn_app().await;
    let key = app.enroll("oa-15").await;
    let pair = app.pair_with_api_key(&key).await;

    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;

    let (_, claims) = jwt_parts(&pair.access_token);
    assert_eq!(
        metadata["issuer"], claims["iss"],
        "the issuer of our tokens"
    );
    for (field, path) in [
        ("token_endpoint", "/oauth/token"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(metadata[field], app.url(path), "{field}");
    }
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials", "refresh_token", TOKEN_EXCHANGE])
    );
    assert_eq!(metadata["response_types_supported"], json!([]));
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        metadata["revocation_endpoint_auth_methods_supported"],
        metadata["token_endpoint_auth_methods_supported"]
    );
    assert_eq!(
        metadata["introspection_endpoint_auth_methods_supported"],
        metadata["token_endpoint_auth_methods_supported"]
    );
    assert_eq!(
        metadata["access_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    let jwks = app
        .client
        .get(metadata["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);

    let configured =
        spawn_app_with(|s| s.public_url = Some("https://auth.example.com".into())).await;
    let metadata: Value = configured
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["token_endpoint"],
        "https://auth.example.com/oauth/token"
    );
}

#[tokio::test]
async fn public_url_is_the_issuer_and_the_default_audience_unless_configured() {
    // SPEC §7 / RFC 8414 §3.3: metadata fetched from the public URL names exactly it.
    let public = "https://auth.example.com/fleet";
    let app = spawn_app_with(|s| s.public_url = Some(public.into())).await;
    let metadata = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(metadata["issuer"], public);
    assert_eq!(
        metadata["jwks_uri"],
        format!("{public}/.well-known/jwks.json")
    );
    let key = app.enroll("oa-iss-1").await;
    let pair = app.pair_with_api_key(&key).await;
    let (header, claims) = jwt_parts(&pair.access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["iss"], public);
    // RFC 9068 §2.2: aud always present; by default the issuer.
    assert_eq!(claims["aud"], public);
    for claim in ["sub", "client_id", "iat", "exp", "jti"] {
        assert!(!claims[claim].is_null(), "{claim}: {claims}");
    }
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);

    // jwt.issuer and jwt.audience win over public_url.
    let app = spawn_app_with(|s| {
        s.public_url = Some(public.into());
        s.jwt.issuer = Some("https://issuer.example".into());
        s.jwt.audience = Some("fleet-resources".into());
    })
    .await;
    let metadata = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(metadata["issuer"], "https://issuer.example");
    assert_eq!(metadata["token_endpoint"], format!("{public}/oauth/token"));
    let key = app.enroll("oa-iss-2").await;
    let pair = app.pair_with_api_key(&key).await;
    let (_, claims) = jwt_parts(&pair.access_token);
    assert_eq!(
        (&claims["iss"], &claims["aud"]),
        (&json!("https://issuer.example"), &json!("fleet-resources"))
    );
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);

    // Without public_url the issuer stays the deployment fingerprint, and is the aud.
    let app = spawn_app().await;
    let key = app.enroll("oa-iss-3").await;
    let pair = app.pair_with_api_key(&key).await;
    let (_, claims) = jwt_parts(&pair.access_token);
    assert!(
        claims["iss"].as_str().unwrap().starts_with("fleetauth:"),
        "{claims}"
    );
    assert_eq!(claims["aud"], claims["iss"]);
}

#[tokio::test]
async fn concurrent_refreshes_at_the_token_endpoint_leave_one_usable_pair_and_no_5xx() {
    let app = spawn_app().await;
    let key = app.enroll("oa-16").await;
    let start = app.pair_with_api_key(&key).await;
    assert_eq!(app.whoami_status(&start.access_token).await, 200);
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", start.refresh_token.as_str()),
    ];

    let responses =
        futures::future::join_all((0..10).map(|_| app.post_form("/oauth/token", None, &form)))
            .await;

    let mut pairs = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            200 => pairs.push(pair_of(&response.json::<Value>().await.unwrap())),
            status => {
                let (status_seen, code, _) = oauth_error(response).await;
                assert_eq!(
                    (status, status_seen, code.as_str()),
                    (400, 400, "invalid_grant")
                );
            }
        }
    }
    assert!(!pairs.is_empty());
    let mut usable = 0;
    for pair in &pairs {
        if app.whoami_status(&pair.access_token).await == 200 {
            usable += 1;
        }
    }
    assert_eq!(usable, 1, "exactly one returned pair is usable");
}
