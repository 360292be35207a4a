"""Authlib (https://docs.authlib.org) against fleetauth, as Authlib's documentation shows:
an OAuth2Session for client_credentials, refresh, introspection (RFC 7662) and
revocation (RFC 7009); RFC 8414 metadata; and a resource server validating the access
token with JWTBearerTokenValidator (RFC 9068) and the server's JWKS."""

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.integrations.base_client import OAuthError
from joserfc.jwk import KeySet

from common import URL, env, expect, run

CLIENT_ID = env("FLEETAUTH_CLIENT_ID")
CLIENT_SECRET = env("FLEETAUTH_CLIENT_SECRET")

state = {}


def metadata():
    # RFC 8414 §3: the metadata of issuer URL at /.well-known/oauth-authorization-server;
    # §3.3: its issuer must be exactly that URL.
    answer = requests.get(f"{URL}/.well-known/oauth-authorization-server", timeout=10)
    expect(answer.status_code == 200, answer.text)
    meta = AuthorizationServerMetadata(answer.json())
    expect(meta["issuer"] == URL, f"issuer {meta['issuer']!r} is not {URL!r}")
    for check in (
        meta.validate_issuer,
        meta.validate_token_endpoint,
        meta.validate_jwks_uri,
        meta.validate_grant_types_supported,
        meta.validate_token_endpoint_auth_methods_supported,
        meta.validate_introspection_endpoint,
        meta.validate_revocation_endpoint,
    ):
        check()
    expect(
        "ES256" in meta["access_token_signing_alg_values_supported"],
        meta["access_token_signing_alg_values_supported"],
    )
    state["meta"] = meta


def session():
    return OAuth2Session(
        CLIENT_ID,
        CLIENT_SECRET,
        token_endpoint_auth_method="client_secret_basic",
    )


def client_credentials():
    client = session()
    token = client.fetch_token(state["meta"]["token_endpoint"], grant_type="client_credentials")
    expect(token["token_type"].lower() == "bearer", token)
    expect(token["expires_in"] > 0, token)
    expect("refresh_token" in token, "an agent's key gets a refresh token")
    state["token"] = token


def refresh():
    client = session()
    old = state["token"]
    token = client.refresh_token(
        state["meta"]["token_endpoint"], refresh_token=old["refresh_token"]
    )
    expect(token["access_token"] != old["access_token"], "a new access token")
    expect(token["refresh_token"] != old["refresh_token"], "refresh tokens rotate")
    state["token"] = token


def introspection():
    client = session()
    answer = client.introspect_token(
        state["meta"]["introspection_endpoint"], token=state["token"]["access_token"]
    )
    expect(answer.status_code == 200, answer.text)
    body = answer.json()
    expect(body["active"] is True, body)
    expect(body["client_id"] == CLIENT_ID, body)
    expect(body["iss"] == URL, body)
    answer = client.introspect_token(
        state["meta"]["introspection_endpoint"], token="not-a-token"
    )
    expect(answer.json() == {"active": False}, answer.text)


class FleetauthTokenValidator(JWTBearerTokenValidator):
    """The resource server's validator, with the JWKS from the metadata's jwks_uri
    (as Authlib's documentation shows)."""

    def get_jwks(self):
        return KeySet.import_key_set(requests.get(state["meta"]["jwks_uri"], timeout=10).json())


def rfc9068_validation():
    validator = FleetauthTokenValidator(issuer=URL, resource_server=URL)
    claims = validator.authenticate_token(state["token"]["access_token"])
    validator.validate_token(claims, scopes=None, request=None)
    expect(claims.header["typ"].lower() in ("at+jwt", "application/at+jwt"), claims.header)
    expect(claims.header["alg"] == "ES256", claims.header)
    for name in ("iss", "exp", "aud", "sub", "client_id", "iat", "jti"):
        expect(name in claims, f"claim {name} missing: {dict(claims)}")
    expect(claims["client_id"] == CLIENT_ID, dict(claims))
    # Another resource server (audience) must refuse it.
    other = FleetauthTokenValidator(issuer=URL, resource_server="https://other.example")
    try:
        other.validate_token(other.authenticate_token(state["token"]["access_token"]), None, None)
    except InvalidTokenError:
        pass
    else:
        raise AssertionError("a token for another audience was accepted")
    # A tampered token must be refused.
    head, body, signature = state["token"]["access_token"].split(".")
    tampered = ".".join([head, body, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    try:
        validator.validate_token(validator.authenticate_token(tampered), None, None)
    except InvalidTokenError:
        pass
    else:
        raise AssertionError("a tampered token was accepted")


def revocation():
    client = session()
    token = state["token"]
    answer = client.revoke_token(
        state["meta"]["revocation_endpoint"],
        token=token["refresh_token"],
        token_type_hint="refresh_token",
    )
    expect(answer.status_code == 200, answer.text)
    try:
        client.refresh_token(state["meta"]["token_endpoint"], refresh_token=token["refresh_token"])
    except OAuthError as error:
        expect(error.error == "invalid_grant", error.error)
    else:
        raise AssertionError("a revoked refresh token still refreshes")
    answer = client.introspect_token(
        state["meta"]["introspection_endpoint"], token=token["access_token"]
    )
    expect(answer.json()["active"] is False, answer.text)


def wrong_secret():
    client = OAuth2Session(CLIENT_ID, "wrong-secret", token_endpoint_auth_method="client_secret_basic")
    try:
        client.fetch_token(state["meta"]["token_endpoint"], grant_type="client_credentials")
    except OAuthError as error:
        expect(error.error == "invalid_client", error.error)
    else:
        raise AssertionError("a wrong secret was accepted")


if __name__ == "__main__":
    run([metadata, client_credentials, refresh, introspection, rfc9068_validation, revocation, wrong_secret])
