"""hvac (the Python Vault client) against fleetauth's Vault-compatible JWT auth method,
as hvac's documentation shows: configure, create/read/list/delete roles, and log in
with a self-signed JWT (PEM validation keys) and with a JWT of a local OIDC provider
(OIDC discovery). The administrator authenticates as every Vault client does, with
X-Vault-Token: first the static vault.admin_token, then an access token of the
elastic superuser (a manage_security principal) from the token API."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hvac
import requests
from hvac.exceptions import Forbidden, InvalidRequest
from joserfc import jwt
from joserfc.jwk import ECKey

from common import URL, env, expect, run

ADMIN_TOKEN = env("FLEETAUTH_VAULT_ADMIN_TOKEN")
PASSWORD = env("FLEETAUTH_ELASTIC_PASSWORD")
ISSUER = "https://ci.example"

state = {}


def signed(key, claims, kid=None):
    header = {"alg": "ES256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return jwt.encode(header, claims, key)


def ci_claims(iss=ISSUER, aud="fleet"):
    now = int(time.time())
    return {
        "iss": iss,
        "sub": "repo:org/app:ref:main",
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "repo": "org/app",
        "env": "prod",
    }


def admin_token_configures():
    client = hvac.Client(url=URL, token=ADMIN_TOKEN)
    key = ECKey.generate_key("P-256")
    pem = key.as_pem(private=False).decode()
    client.auth.jwt.configure(jwt_validation_pubkeys=[pem], bound_issuer=ISSUER)
    config = client.auth.jwt.read_config()
    expect(config["data"]["bound_issuer"] == ISSUER, config)
    state["key"] = key


def elastic_access_token_administers():
    # The elastic superuser's access token (Elasticsearch token API) as X-Vault-Token.
    answer = requests.post(
        f"{URL}/_security/oauth2/token",
        json={"grant_type": "password", "username": "elastic", "password": PASSWORD},
        auth=("elastic", PASSWORD),
        timeout=10,
    )
    expect(answer.status_code == 200, answer.text)
    client = hvac.Client(url=URL, token=answer.json()["access_token"])
    expect(client.auth.jwt.read_config()["data"]["bound_issuer"] == ISSUER, "read config")
    state["admin"] = client
    nobody = hvac.Client(url=URL, token="not-a-token")
    try:
        nobody.auth.jwt.read_config()
    except Forbidden:
        pass
    else:
        raise AssertionError("an unknown token administers")


def roles():
    client = state["admin"]
    # As hvac documents create_role: allowed_redirect_uris is a required argument.
    client.auth.jwt.create_role(
        name="ci",
        role_type="jwt",
        user_claim="sub",
        allowed_redirect_uris=["http://localhost:8250/oidc/callback"],
        bound_audiences=["fleet"],
        bound_claims={"repo": ["org/app", "org/lib"]},
        claim_mappings={"repo": "repository", "env": "environment"},
        oidc_scopes=["profile"],
        verbose_oidc_logging=True,
        clock_skew_leeway=30,
        expiration_leeway=30,
        not_before_leeway=30,
        token_ttl="10m",
        token_max_ttl="30m",
        token_policies=["deploy"],
        token_bound_cidrs=["127.0.0.1/32"],
        token_type="default",
    )
    role = client.auth.jwt.read_role(name="ci")["data"]
    expect(role["allowed_redirect_uris"] == ["http://localhost:8250/oidc/callback"], role)
    expect(role["oidc_scopes"] == ["profile"], role)
    expect(role["verbose_oidc_logging"] is True, role)
    expect(role["bound_claims"] == {"repo": ["org/app", "org/lib"]}, role)
    expect(role["claim_mappings"] == {"repo": "repository", "env": "environment"}, role)
    expect(role["token_ttl"] == 600 and role["token_max_ttl"] == 1800, role)
    expect(role["clock_skew_leeway"] == 30, role)
    client.auth.jwt.create_role(
        name="scratch", user_claim="sub", allowed_redirect_uris=[], bound_audiences=["x"]
    )
    listed = client.auth.jwt.list_roles()["data"]["keys"]
    expect(sorted(listed) == ["ci", "scratch"], listed)
    client.auth.jwt.delete_role(name="scratch")
    expect(client.auth.jwt.list_roles()["data"]["keys"] == ["ci"], "deleted")


def login_with_a_self_signed_jwt():
    client = hvac.Client(url=URL)
    answer = client.auth.jwt.jwt_login(role="ci", jwt=signed(state["key"], ci_claims()))
    auth = answer["auth"]
    expect(auth["metadata"] == {"role": "ci", "repository": "org/app", "environment": "prod"}, auth)
    expect(auth["policies"] == ["default", "deploy"], auth)
    expect(0 < auth["lease_duration"] <= 600, auth)
    # use_token=True (the default): the client now holds our access token.
    expect(client.token == auth["client_token"], "the client holds the token")
    looked_up = client.lookup_token()
    expect(looked_up["data"]["meta"] == {"role": "ci"}, looked_up)
    expect(looked_up["data"]["policies"] == ["default", "deploy"], looked_up)
    # A JWT outside bound_claims is refused.
    bad = dict(ci_claims(), repo="org/other")
    try:
        hvac.Client(url=URL).auth.jwt.jwt_login(role="ci", jwt=signed(state["key"], bad))
    except InvalidRequest as error:
        expect("claim" in str(error), error)
    else:
        raise AssertionError("a JWT outside bound_claims logged in")
    # Expired beyond the role's leeways (30 s + 30 s clock skew) is refused.
    late = dict(ci_claims(), exp=int(time.time()) - 90)
    try:
        hvac.Client(url=URL).auth.jwt.jwt_login(role="ci", jwt=signed(state["key"], late))
    except InvalidRequest:
        pass
    else:
        raise AssertionError("an expired JWT logged in")


class Provider(BaseHTTPRequestHandler):
    """A minimal OIDC provider: its discovery document and its JWKS."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        issuer = self.server.issuer
        if self.path == "/.well-known/openid-configuration":
            body = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
        elif self.path == "/jwks":
            body = {"keys": [self.server.jwk]}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def login_with_oidc_discovery():
    key = ECKey.generate_key("P-256", parameters={"kid": "provider-key-1", "use": "sig", "alg": "ES256"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    server.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    server.jwk = key.as_dict(private=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        admin = state["admin"]
        admin.auth.jwt.configure(oidc_discovery_url=server.issuer, bound_issuer=server.issuer)
        client = hvac.Client(url=URL)
        token = signed(key, ci_claims(iss=server.issuer), kid="provider-key-1")
        auth = client.auth.jwt.jwt_login(role="ci", jwt=token)["auth"]
        expect(auth["metadata"]["repository"] == "org/app", auth)
        # The PEM key of the previous config no longer validates.
        try:
            hvac.Client(url=URL).auth.jwt.jwt_login(role="ci", jwt=signed(state["key"], ci_claims(iss=server.issuer)))
        except InvalidRequest:
            pass
        else:
            raise AssertionError("a key outside the provider's JWKS logged in")
    finally:
        server.shutdown()


if __name__ == "__main__":
    run([
        admin_token_configures,
        elastic_access_token_administers,
        roles,
        login_with_a_self_signed_jwt,
        login_with_oidc_discovery,
    ])
