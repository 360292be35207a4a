"""The official Elasticsearch Python client (elasticsearch-py) against fleetauth's
Elasticsearch-compatible security APIs, as the client's documentation shows: basic
auth as elastic, then a second client authenticated by an API key and a third by a
bearer token. The client refuses any answer without `X-Elastic-Product:
Elasticsearch` (UnsupportedProductError), so every successful call below also checks
that interoperability choice."""

from elasticsearch import ApiError, AuthenticationException, Elasticsearch, NotFoundError

from common import URL, env, expect, run

PASSWORD = env("FLEETAUTH_ELASTIC_PASSWORD")

es = Elasticsearch(URL, basic_auth=("elastic", PASSWORD), request_timeout=30)
state = {}


def info_and_ping():
    info = es.info()
    expect(info["tagline"] == "You Know, for Search", info)
    expect(info["version"]["number"].split(".")[0] in ("8", "9"), info)
    expect(es.ping() is True, "ping")


def authenticate():
    me = es.security.authenticate()
    expect(me["username"] == "elastic", me)
    expect("superuser" in me["roles"], me)


def roles():
    answer = es.security.put_role(
        name="key_maker",
        cluster=["manage_own_api_key"],
        indices=[{"names": ["logs-*"], "privileges": ["read"]}],
    )
    expect(answer["role"]["created"] is True, answer)
    got = es.security.get_role(name="key_maker")
    expect(got["key_maker"]["cluster"] == ["manage_own_api_key"], got)
    expect("key_maker" in es.security.get_role(), "listed")


def users():
    answer = es.security.put_user(
        username="alice", password="alice-password-1", roles=["key_maker"], full_name="Alice"
    )
    expect(answer["created"] is True, answer)
    got = es.security.get_user(username="alice")
    expect(got["alice"]["roles"] == ["key_maker"], got)
    es.security.change_password(username="alice", password="alice-password-2")
    expect("alice" in es.security.get_user(), "listed among all users")
    alice = Elasticsearch(URL, basic_auth=("alice", "alice-password-2"), request_timeout=30)
    expect(alice.security.authenticate()["username"] == "alice", "alice logs in")
    # Her own password, without naming herself (PUT /_security/user/_password).
    alice.security.change_password(password="alice-password-3")
    alice = Elasticsearch(URL, basic_auth=("alice", "alice-password-3"), request_timeout=30)
    expect(alice.security.authenticate()["username"] == "alice", "the new password works")
    es.security.change_password(username="alice", password="alice-password-2")
    alice = Elasticsearch(URL, basic_auth=("alice", "alice-password-2"), request_timeout=30)
    state["alice"] = alice


def token_api():
    token = es.security.get_token(grant_type="password", username="alice", password="alice-password-2")
    expect(token["type"] == "Bearer", token)
    expect("refresh_token" in token, token)
    bearer = Elasticsearch(URL, bearer_auth=token["access_token"], request_timeout=30)
    expect(bearer.security.authenticate()["username"] == "alice", "bearer client")
    refreshed = es.security.get_token(grant_type="refresh_token", refresh_token=token["refresh_token"])
    expect(refreshed["access_token"] != token["access_token"], refreshed)
    cc = es.security.get_token(grant_type="client_credentials")
    expect("refresh_token" not in cc, cc)
    invalidated = es.security.invalidate_token(token=refreshed["access_token"])
    expect(invalidated["invalidated_tokens"] >= 1, invalidated)
    gone = Elasticsearch(URL, bearer_auth=refreshed["access_token"], request_timeout=30)
    try:
        gone.security.authenticate()
    except AuthenticationException:
        pass
    else:
        raise AssertionError("an invalidated token still authenticates")
    by_user = es.security.invalidate_token(username="alice")
    expect(by_user["error_count"] == 0, by_user)


def api_keys():
    alice = state["alice"]
    key = alice.security.create_api_key(
        name="ci-key", expiration="1d", metadata={"team": "blue"}
    )
    expect(key["name"] == "ci-key" and key["encoded"], key)
    # A second client authenticated by the API key, as documented: api_key=(id, key)
    # or the encoded form.
    for api_key in ((key["id"], key["api_key"]), key["encoded"]):
        by_key = Elasticsearch(URL, api_key=api_key, request_timeout=30)
        me = by_key.security.authenticate()
        expect(me["authentication_type"] == "api_key", me)
    got = es.security.get_api_key(id=key["id"])
    expect(got["api_keys"][0]["metadata"] == {"team": "blue"}, got)
    expect(len(es.security.get_api_key(name="ci-key")["api_keys"]) == 1, "by name")
    expect(len(alice.security.get_api_key(owner=True)["api_keys"]) == 1, "by owner")
    answer = es.security.invalidate_api_key(ids=[key["id"]])
    expect(answer["invalidated_api_keys"] == [key["id"]], answer)
    try:
        Elasticsearch(URL, api_key=key["encoded"], request_timeout=30).security.authenticate()
    except AuthenticationException:
        pass
    else:
        raise AssertionError("an invalidated API key still authenticates")
    second = es.security.create_api_key(name="by-name")
    answer = es.security.invalidate_api_key(name="by-name")
    expect(answer["invalidated_api_keys"] == [second["id"]], answer)


def service_tokens():
    token = es.security.create_service_token(namespace="elastic", service="fleet-server", name="ci")
    expect(token["created"] is True, token)
    fleet = Elasticsearch(URL, bearer_auth=token["token"]["value"], request_timeout=30)
    me = fleet.security.authenticate()
    expect(me["username"] == "elastic/fleet-server", me)
    creds = es.security.get_service_credentials(namespace="elastic", service="fleet-server")
    expect("ci" in creds["tokens"], creds)
    deleted = es.security.delete_service_token(namespace="elastic", service="fleet-server", name="ci")
    expect(deleted["found"] is True, deleted)
    unnamed = es.security.create_service_token(namespace="elastic", service="fleet-server")
    expect(unnamed["created"] is True and unnamed["token"]["name"], unnamed)
    fleet = Elasticsearch(URL, bearer_auth=unnamed["token"]["value"], request_timeout=30)
    expect(fleet.security.authenticate()["username"] == "elastic/fleet-server", "unnamed token")


def errors_are_elasticsearchs():
    try:
        es.security.get_user(username="nobody")
    except NotFoundError as error:
        expect(error.meta.status == 404, error)
    else:
        raise AssertionError("an unknown user was found")
    try:
        es.security.put_role(name="bad", cluster=["no_such_privilege"])
    except ApiError as error:
        expect(error.meta.status == 400, error)
        expect(isinstance(error.body, dict) and "error" in error.body, error.body)
    else:
        raise AssertionError("an unknown privilege was accepted")
    wrong = Elasticsearch(URL, basic_auth=("elastic", "wrong-password"), request_timeout=30)
    try:
        wrong.security.authenticate()
    except AuthenticationException as error:
        expect(error.meta.status == 401, error)
    else:
        raise AssertionError("a wrong password was accepted")


def cleanup():
    es.security.delete_user(username="alice")
    es.security.delete_role(name="key_maker")
    try:
        es.security.get_role(name="key_maker")
    except NotFoundError:
        pass
    else:
        raise AssertionError("a deleted role is still there")


if __name__ == "__main__":
    run([
        info_and_ping,
        authenticate,
        roles,
        users,
        token_api,
        api_keys,
        service_tokens,
        errors_are_elasticsearchs,
        cleanup,
    ])
