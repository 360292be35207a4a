//! Bad input gets a 4xx in the endpoint's format, never a 5xx or a hang, and the
//! server keeps answering afterwards.

use serde_json::Value;

use crate::common::requests::get_status;
use crate::helpers::spawn_app;

#[tokio::test]
async fn malformed_authorization_headers_get_401_with_a_json_error() {
    let app = spawn_app().await;
    for value in [
        "ApiKey !!!not-base64!!!",
        "ApiKey bm9jb2xvbg==", // "nocolon"
        "ApiKey",
        "Basic Og==", // ":"
        "Bearer",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.AAAA",
        "Bearer fr1.AAAA.BBBB.CCCC",
        "Digest username=x",
        "",
    ] {
        for response in [app.authenticate(value).await, app.whoami(value).await] {
            assert_eq!(response.status(), 401, "{value:?}");
            let body: Value = response.json().await.expect("a JSON error body");
            assert_eq!(body["statusCode"], 401);
        }
    }
}

#[tokio::test]
async fn non_utf8_and_oversized_headers_are_refused() {
    let app = spawn_app().await;
    let bytes = reqwest::header::HeaderValue::from_bytes(b"ApiKey \xff\xfe\xfd").unwrap();
    let response = app
        .client
        .post(app.url("/api/fleet/authenticate"))
        .header("Authorization", bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let huge = format!("Bearer {}", "a".repeat(20_000));
    let response = app.whoami(&huge).await;
    assert!(response.status().is_client_error(), "{}", response.status());
}

#[tokio::test]
async fn bodies_of_the_wrong_type_or_shape_are_refused() {
    let app = spawn_app().await;
    let url = app.url("/api/fleet/authenticate");
    let cases: [(&str, &str, u16); 5] = [
        ("text/plain", "refresh_token=abc", 415),
        (
            "application/x-www-form-urlencoded",
            "refresh_token=abc",
            415,
        ),
        ("application/json", "{not json", 400),
        ("application/json", r#"{"refresh_token": 42}"#, 400),
        (
            "application/json",
            r#"{"refresh_token": "not-a-token"}"#,
            401,
        ),
    ];
    for (content_type, body, expected) in cases {
        let response = app
            .client
            .post(&url)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{content_type} {body}");
        let json: Value = response.json().await.expect("a JSON error body");
        assert_eq!(json["statusCode"], expected);
    }
}

#[tokio::test]
async fn a_10_mb_body_is_refused_and_the_server_keeps_answering() {
    let app = spawn_app().await;
    let body = vec![b'a'; 10 * 1024 * 1024];

    let response = app
        .client
        .post(app.url("/api/fleet/authenticate"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;

    // The server answers 413 as soon as it sees the length; the client may see the
    // connection closed while it is still sending. Either way: no 2xx, no 5xx.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    assert_eq!(get_status(&app.client, app.url("/healthz")).await, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_4xx() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .client
        .get(app.url("/api/fleet/authenticate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn two_credentials_at_once_are_refused() {
    let app = spawn_app().await;
    let key = app.enroll("b1").await;
    let pair = app.pair_with_api_key(&key).await;

    let response = app
        .client
        .post(app.url("/api/fleet/authenticate"))
        .header("Authorization", format!("ApiKey {}", key.encoded))
        .json(&serde_json::json!({ "refresh_token": pair.refresh_token }))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
}
