//! HTTPS over loopback with certificates from `fleetauth tls self-signed` and rcgen:
//! HTTP/2 and HTTP/1.1 by ALPN, certificate reload without dropping connections, and
//! client certificates (mTLS). The clients are reqwest with rustls, trusting only the
//! generated certificate (no switch that disables verification).

use std::path::Path;
use std::time::Duration;

use fleetauth::config::{ClientAuth, TlsSettings};
use serde_json::Value;

use crate::common::process;
use crate::common::requests::get_status;
use crate::helpers::{spawn_app_with, TestApp};

/// Runs `fleetauth tls self-signed --out DIR` and returns its JSON answer.
fn generate(dir: &Path) -> Value {
    let output = process::command()
        .args(["tls", "self-signed", "--out", dir.to_str().unwrap()])
        .output()
        .expect("fleetauth runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn tls_settings(dir: &Path) -> TlsSettings {
    TlsSettings {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: None,
        client_auth: ClientAuth::Required,
        reload_interval: Duration::from_millis(200),
    }
}

/// A client that trusts exactly this certificate (and no built-in roots).
fn client_trusting(cert_pem: &[u8]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem).expect("PEM"))
        .timeout(Duration::from_secs(10))
}

async fn https_app(dir: &Path, configure: impl FnOnce(&mut TlsSettings)) -> TestApp {
    let mut tls = tls_settings(dir);
    configure(&mut tls);
    spawn_app_with(|s| s.tls = Some(tls)).await
}

/// The base URL by name (the certificate is for localhost, 127.0.0.1 and ::1).
fn localhost(app: &TestApp) -> String {
    app.base.replace("127.0.0.1", "localhost")
}

#[tokio::test]
async fn the_generated_certificate_serves_https_with_http2_and_http1_by_alpn() {
    let certs = tempfile::tempdir().unwrap();
    let generated = generate(certs.path());
    assert_eq!(
        generated["subject_alt_names"],
        serde_json::json!(["localhost", "127.0.0.1", "::1"])
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
    }
    // A second run does not overwrite the pair without --force.
    let again = process::command()
        .args([
            "tls",
            "self-signed",
            "--out",
            certs.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let app = https_app(certs.path(), |_| {}).await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    let cert = std::fs::read(certs.path().join("cert.pem")).unwrap();

    let h2 = client_trusting(&cert).build().unwrap();
    let h1 = client_trusting(&cert).http1_only().build().unwrap();
    for base in [app.base.clone(), localhost(&app)] {
        let response = h2.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN h2");
        let response = h1.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.version(),
            reqwest::Version::HTTP_11,
            "ALPN http/1.1"
        );
    }

    // A real exchange over HTTP/2: the OAuth2 metadata and a token request.
    let metadata: Value = h2
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(metadata["token_endpoint"].as_str().is_some());
    let key = app.enroll("tls-agent").await;
    let response = h2
        .post(app.url("/api/fleet/authenticate"))
        .header("Authorization", format!("ApiKey {}", key.encoded))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-fleet-access-token").is_some());

    // A client that does not trust the certificate is refused in the handshake, and
    // plain HTTP on the TLS port gets no HTTP answer.
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(stranger.get(app.url("/healthz")).send().await.is_err());
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let plain_url = app.url("/healthz").replace("https://", "http://");
    assert!(plain.get(plain_url).send().await.is_err());
    // The server still answers.
    assert_eq!(get_status(&h2, app.url("/healthz")).await, 200);
}

#[tokio::test]
async fn a_new_certificate_is_used_for_new_connections_while_old_ones_stay_usable() {
    let certs = tempfile::tempdir().unwrap();
    generate(certs.path());
    let app = https_app(certs.path(), |_| {}).await;
    let old_cert = std::fs::read(certs.path().join("cert.pem")).unwrap();
    // Both protocols: one client per protocol, each keeping its connection open.
    let old_h2 = client_trusting(&old_cert).build().unwrap();
    let old_h1 = client_trusting(&old_cert)
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for client in [&old_h2, &old_h1] {
        assert_eq!(get_status(client, app.url("/healthz")).await, 200);
    }

    // Replace the pair on disk (as a certificate renewal would).
    let fresh = fleetauth::http::tls::self_signed(&["127.0.0.1".to_string()]).unwrap();
    std::fs::write(certs.path().join("key.pem"), &fresh.key_pem).unwrap();
    std::fs::write(certs.path().join("cert.pem"), &fresh.cert_pem).unwrap();

    // A client that trusts only the new certificate gets through once it is loaded.
    let new_client = client_trusting(fresh.cert_pem.as_bytes())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match new_client.get(app.url("/healthz")).send().await {
            Ok(response) if response.status() == 200 => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("the new certificate was not picked up: {other:?}"),
        }
    }
    // A new connection trusting only the old certificate is now refused...
    let old_only = client_trusting(&old_cert).build().unwrap();
    assert!(old_only.get(app.url("/healthz")).send().await.is_err());
    // ...but the connections opened before the reload still work (a new connection
    // could not: it would be refused like the one above).
    for client in [&old_h2, &old_h1] {
        let response = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// A CA and a client certificate it signed, PEM.
struct ClientPki {
    ca_pem: String,
    client_cert_and_key_pem: String,
}

fn client_pki() -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test client CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "agent-7");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &issuer).unwrap();
    ClientPki {
        ca_pem: ca_cert.pem(),
        client_cert_and_key_pem: format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
    }
}

#[tokio::test]
async fn client_certificates_are_required_or_optional_as_configured() {
    let certs = tempfile::tempdir().unwrap();
    generate(certs.path());
    let pki = client_pki();
    std::fs::write(certs.path().join("client-ca.pem"), &pki.ca_pem).unwrap();
    let server_cert = std::fs::read(certs.path().join("cert.pem")).unwrap();
    let identity = reqwest::Identity::from_pem(pki.client_cert_and_key_pem.as_bytes()).unwrap();
    // A client certificate signed by another CA is not accepted.
    let stranger_pki = client_pki();
    let stranger =
        reqwest::Identity::from_pem(stranger_pki.client_cert_and_key_pem.as_bytes()).unwrap();

    let required = https_app(certs.path(), |tls| {
        tls.client_ca = Some(certs.path().join("client-ca.pem"));
        tls.client_auth = ClientAuth::Required;
    })
    .await;
    let anonymous = client_trusting(&server_cert).build().unwrap();
    assert!(
        anonymous
            .get(required.url("/healthz"))
            .send()
            .await
            .is_err(),
        "no client certificate: refused"
    );
    let wrong = client_trusting(&server_cert)
        .identity(stranger.clone())
        .build()
        .unwrap();
    assert!(
        wrong.get(required.url("/healthz")).send().await.is_err(),
        "a certificate of another CA: refused"
    );
    let with_cert = client_trusting(&server_cert)
        .identity(identity.clone())
        .build()
        .unwrap();
    let response = with_cert
        .get(required.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let optional = https_app(certs.path(), |tls| {
        tls.client_ca = Some(certs.path().join("client-ca.pem"));
        tls.client_auth = ClientAuth::Optional;
    })
    .await;
    for client in [&anonymous, &with_cert] {
        let response = client.get(optional.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        wrong.get(optional.url("/healthz")).send().await.is_err(),
        "a presented certificate must still verify"
    );
}

#[test]
fn tls_settings_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut command = process::command();
        command.args([
            "config",
            "check",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        command.envs(env.iter().copied());
        command.output().unwrap()
    };
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (env, setting) in [
        (vec![("FLEETAUTH_TLS__CERT", missing)], "tls.key"),
        (
            vec![
                ("FLEETAUTH_TLS__CERT", missing),
                ("FLEETAUTH_TLS__KEY", missing),
            ],
            "tls.cert",
        ),
        (vec![("FLEETAUTH_TLS__CLIENT_CA", missing)], "tls.client_ca"),
        (
            vec![("FLEETAUTH_CONNECTIONS__MAX_CONNECTIONS", "0")],
            "connections.max_connections",
        ),
        (
            vec![("FLEETAUTH_CONNECTIONS__IDLE_TIMEOUT", "soon")],
            "connections.idle_timeout",
        ),
    ] {
        let output = run(&env);
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    generate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let output = run(&[
        ("FLEETAUTH_TLS__CERT", cert.to_str().unwrap()),
        ("FLEETAUTH_TLS__KEY", key.to_str().unwrap()),
    ]);
    assert!(output.status.success());
    let described: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(described["tls"]["client_auth"], "required");
    assert_eq!(described["connections"]["max_connections"], 4096);
}
