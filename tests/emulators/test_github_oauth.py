"""The OAuth web flow of GitHub Apps (user access tokens) and ``GET /user``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from githubkit import GitHub, OAuthWebAuthStrategy
from githubkit.exception import AuthExpiredError, RequestError, RequestFailed
from githubkit_schemas.latest.models import Issue, PrivateUser

from tests.emulators.github import GitHubState
from tests.emulators.github.oauth import USER_TOKEN_TTL
from tests.emulators.github.testing import Env, fast, running_emulator

CALLBACK = "http://127.0.0.1:8000/auth/callback"
SECOND = "https://conductor.example.com/auth/github"
DOCS = "https://docs.github.com/apps/managing-oauth-apps/"
BAD_CODE = {
    "error": "bad_verification_code",
    "error_description": "The code passed is incorrect or expired.",
    "error_uri": DOCS
    + "troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
}
BAD_CREDENTIALS = {
    "error": "incorrect_client_credentials",
    "error_description": "The client_id and/or client_secret passed are incorrect.",
    "error_uri": DOCS
    + "troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
}
MISMATCH = {
    "error": "redirect_uri_mismatch",
    "error_description": "The redirect_uri MUST match the registered callback URL for this "
    "application.",
    "error_uri": DOCS + "troubleshooting-authorization-request-errors/#redirect-uri-mismatch2",
}
NOT_ASSOCIATED = "The redirect_uri is not associated with this application."
USER_DOCS = "https://docs.github.com/rest/users/users#get-the-authenticated-user"


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path, app_callback_urls=[CALLBACK, SECOND]) as env:
        yield env


def authorize(
    env: Env, login: str | None = "alice", *, token: str | None = None, **params: str
) -> httpx.Response:
    """The browser's visit to the authorize page, signed in as ``login`` (or with ``token``)."""
    query = {"client_id": env.state.app.client_id, **params}
    token = token or (env.state.user_token(login) if login else None)
    headers = {"Authorization": f"token {token}"} if token else {}
    return httpx.get(env.url + "/login/oauth/authorize", params=query, headers=headers, timeout=10)


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, (response.status_code, response.text)
    [code] = parse_qs(urlsplit(response.headers["location"]).query)["code"]
    return code


def exchange(env: Env, accept: str = "application/json", **params: str) -> httpx.Response:
    """The App server's POST, with its own credentials unless ``params`` say otherwise."""
    app = env.state.app
    body = {"client_id": app.client_id, "client_secret": app.client_secret, **params}
    headers = {"Accept": accept} if accept else {}
    return httpx.post(env.url + "/login/oauth/access_token", json=body, headers=headers, timeout=10)


def answer(response: httpx.Response) -> dict[str, Any]:
    """GitHub answers the exchange with 200, errors included."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    return data


def web_client(
    env: Env, code: str, redirect_uri: str | None = None
) -> GitHub[OAuthWebAuthStrategy]:
    app = env.state.app
    strategy = OAuthWebAuthStrategy(app.client_id, app.client_secret, code, redirect_uri)
    return GitHub(strategy, base_url=env.url, **fast({}))


# -- the happy path ----------------------------------------------------------------------------


def test_web_flow_signs_a_user_in_through_githubkit(gh: Env) -> None:
    redirect = authorize(gh, state="xyz 1/2")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert re.fullmatch(re.escape(CALLBACK) + r"\?code=[0-9a-f]{20}&state=xyz\+1%2F2", location)
    assert parse_qs(urlsplit(location).query)["state"] == ["xyz 1/2"]

    client = web_client(gh, code_of(redirect))
    me = client.rest.users.get_authenticated().parsed_data
    assert isinstance(me, PrivateUser)
    assert me.login == "alice" and me.email == "alice@example.com"
    account = gh.state.find_account("alice")
    assert account is not None and me.id == account.id

    token = client.auth.token
    assert re.fullmatch(r"ghu_[A-Za-z0-9]{36}", token)
    record = gh.state.tokens[token]
    assert (record.kind, record.user, record.app_id) == ("user", "alice", gh.state.app_id)
    assert record.expires_at is not None
    assert abs(record.expires_at - (gh.state.now() + USER_TOKEN_TTL)) < 60

    # The token acts as alice everywhere, as her own token does.
    issue = client.rest.issues.create("acme", "widgets", title="Signed in").parsed_data
    assert isinstance(issue, Issue) and issue.user is not None and issue.user.login == "alice"

    gh.state.wait_for_requests(lambda seen: any(r.path == "/user" for r in seen))
    seen = {(r.method, r.path): r for r in gh.state.requests}
    assert seen["GET", "/login/oauth/authorize"].status == 302
    assert seen["GET", "/login/oauth/authorize"].auth == "user"
    assert seen["POST", "/login/oauth/access_token"].status == 200
    assert (seen["GET", "/user"].login, seen["GET", "/user"].auth) == ("alice", "user")


def test_token_answer_as_json(gh: Env) -> None:
    response = exchange(gh, code=code_of(authorize(gh)))
    data = answer(response)
    assert set(data) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "token_type",
        "scope",
    }
    assert re.fullmatch(r"ghu_[A-Za-z0-9]{36}", data["access_token"])
    assert data["refresh_token"].startswith("ghr_")
    assert (data["expires_in"], data["refresh_token_expires_in"]) == (28800, 15897600)
    assert (data["token_type"], data["scope"]) == ("bearer", "")
    # github.com's pages are not the REST API: no API rate-limit headers.
    assert "x-ratelimit-limit" not in response.headers


def test_token_answer_form_encoded_without_json_accept(gh: Env) -> None:
    app = gh.state.app
    code = code_of(authorize(gh))
    response = httpx.post(
        gh.url + "/login/oauth/access_token",
        data={"client_id": app.client_id, "client_secret": app.client_secret, "code": code},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
    fields = parse_qs(response.text, keep_blank_values=True)
    assert fields["access_token"][0].startswith("ghu_")
    assert fields["token_type"] == ["bearer"] and fields["scope"] == [""]
    assert fields["expires_in"] == ["28800"]

    again = exchange(gh, "", code=code)
    assert again.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert {k: v[0] for k, v in parse_qs(again.text).items()} == BAD_CODE


def test_parameters_in_the_query_string(gh: Env) -> None:
    app = gh.state.app
    params = {
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "code": code_of(authorize(gh)),
    }
    response = httpx.post(
        gh.url + "/login/oauth/access_token",
        params=params,
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer(response)["access_token"].startswith("ghu_")


def test_personal_token_gets_the_private_user(gh: Env) -> None:
    client = gh.user_client("rita")
    me = client.rest.users.get_authenticated().parsed_data
    assert isinstance(me, PrivateUser)
    assert me.login == "rita" and me.type == "User" and me.user_view_type == "private"
    assert me.total_private_repos == 0 and me.two_factor_authentication is False


# -- the authorize page ------------------------------------------------------------------------


def test_unknown_or_missing_client_id_is_a_404_page(gh: Env) -> None:
    for query in ({"client_id": "Iv1.0000000000000000"}, {}):
        response = httpx.get(
            gh.url + "/login/oauth/authorize",
            params=query,
            headers={"Authorization": f"token {gh.state.user_token('alice')}"},
            timeout=10,
        )
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "Page not found" in response.text
    assert not gh.state.oauth_codes


def test_signed_out_browser_is_asked_to_sign_in(gh: Env) -> None:
    installation_token = gh.state.create_installation_token(gh.installation.id).token
    for token in (None, "ghp_notarealtoken", installation_token):
        response = authorize(gh, None, token=token)
        assert response.status_code == 200, token
        assert response.headers["content-type"].startswith("text/html")
        assert "Sign in to GitHub" in response.text
        assert "location" not in response.headers
    assert not gh.state.oauth_codes


@pytest.mark.parametrize(
    "redirect_uri",
    [
        CALLBACK,
        CALLBACK + "/",
        CALLBACK + "/deeper/still",
        SECOND,
        "http://127.0.0.1:8000/auth/callback?next=%2Fdash",
    ],
)
def test_redirect_uri_at_or_under_a_callback_url(gh: Env, redirect_uri: str) -> None:
    response = authorize(gh, redirect_uri=redirect_uri, state="s")
    code = code_of(response)
    location = response.headers["location"]
    joiner = "&" if "?" in redirect_uri else "?"
    assert location == f"{redirect_uri}{joiner}code={code}&state=s"
    assert gh.state.oauth_codes[code].redirect_uri == redirect_uri


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example/auth/callback",
        "http://localhost:8000/auth/callback",
        "http://127.0.0.1:8001/auth/callback",
        "https://127.0.0.1:8000/auth/callback",
        "http://127.0.0.1:8000/auth/callbackx",
        "http://127.0.0.1:8000/auth",
        "http://127.0.0.1:8000/auth/callback/../../admin",
        "https://evil.conductor.example.com/auth/github",
        "not a url",
    ],
)
def test_redirect_uri_elsewhere_is_refused(gh: Env, redirect_uri: str) -> None:
    response = authorize(gh, redirect_uri=redirect_uri)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert NOT_ASSOCIATED in response.text
    assert "location" not in response.headers
    assert not gh.state.oauth_codes


def test_default_redirect_is_the_first_callback_url_and_state_is_optional(gh: Env) -> None:
    response = authorize(gh)
    code = code_of(response)
    assert response.headers["location"] == f"{CALLBACK}?code={code}"


def test_app_without_callback_urls_refuses(gh: Env) -> None:
    gh.state.set_callback_urls([])
    for params in ({}, {"redirect_uri": CALLBACK}):
        response = authorize(gh, **params)
        assert response.status_code == 400 and NOT_ASSOCIATED in response.text


# -- the exchange ------------------------------------------------------------------------------


def test_wrong_client_credentials(gh: Env) -> None:
    code = code_of(authorize(gh))
    other = gh.state.apps[gh.state.github_actions.id]
    for params in (
        {"client_secret": "0" * 40},
        {"client_id": "Iv1.0000000000000000"},
        {"client_id": "", "client_secret": ""},
        {"client_id": other.client_id, "client_secret": other.client_secret + "x"},
    ):
        assert answer(exchange(gh, code=code, **params)) == BAD_CREDENTIALS, params
    # Refused exchanges leave the code usable.
    assert answer(exchange(gh, code=code))["access_token"].startswith("ghu_")


def test_unknown_or_missing_code(gh: Env) -> None:
    assert answer(exchange(gh, code="0123456789abcdef0123")) == BAD_CODE
    assert answer(exchange(gh)) == BAD_CODE


def test_code_is_single_use(gh: Env) -> None:
    code = code_of(authorize(gh))
    assert answer(exchange(gh, code=code))["access_token"].startswith("ghu_")
    assert answer(exchange(gh, code=code)) == BAD_CODE
    client = web_client(gh, code)
    with pytest.raises(RequestError) as info:  # githubkit's wrapping of a refused exchange
        client.rest.users.get_authenticated()
    assert isinstance(info.value.__cause__, AuthExpiredError)
    assert "bad_verification_code" in str(info.value)


def test_code_expires_after_ten_minutes(gh: Env) -> None:
    stale, fresh = code_of(authorize(gh)), code_of(authorize(gh, "tina"))
    gh.state.advance_clock(599)
    client = web_client(gh, fresh)
    assert client.rest.users.get_authenticated().parsed_data.login == "tina"
    gh.state.advance_clock(2)
    assert answer(exchange(gh, code=stale)) == BAD_CODE


def test_code_is_bound_to_its_app(gh: Env) -> None:
    conversion = gh.state.convert_manifest(
        gh.state.register_manifest_code(manifest={"name": "Other", "callback_urls": [SECOND]})
    )
    other = gh.state.apps[conversion["id"]]
    assert other.callback_urls == [SECOND]
    response = authorize(gh, client_id=other.client_id)
    assert response.headers["location"].startswith(SECOND + "?code=")
    code = code_of(response)
    assert answer(exchange(gh, code=code)) == BAD_CODE
    granted = answer(
        exchange(gh, code=code, client_id=other.client_id, client_secret=other.client_secret)
    )
    assert gh.state.tokens[granted["access_token"]].app_id == other.id


def test_redirect_uri_must_be_the_one_the_code_was_issued_for(gh: Env) -> None:
    deeper = CALLBACK + "/deeper"
    code = code_of(authorize(gh, redirect_uri=deeper))
    assert answer(exchange(gh, code=code, redirect_uri=CALLBACK)) == MISMATCH
    assert answer(exchange(gh, code=code, redirect_uri=SECOND)) == MISMATCH
    client = web_client(gh, code, deeper)
    assert client.rest.users.get_authenticated().parsed_data.login == "alice"
    # Omitted, it is not checked.
    assert answer(exchange(gh, code=code_of(authorize(gh))))["access_token"]


def test_refresh_grant_is_not_emulated(gh: Env) -> None:
    refresh = answer(exchange(gh, code=code_of(authorize(gh))))["refresh_token"]
    data = answer(exchange(gh, grant_type="refresh_token", refresh_token=refresh))
    assert data["error"] == "unsupported_grant_type"


def test_user_token_expires_after_eight_hours(gh: Env) -> None:
    token = answer(exchange(gh, code=code_of(authorize(gh))))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    gh.state.advance_clock(USER_TOKEN_TTL - 60)
    assert httpx.get(gh.url + "/user", headers=headers).json()["login"] == "alice"
    gh.state.advance_clock(61)
    expired = httpx.get(gh.url + "/user", headers=headers)
    assert expired.status_code == 401 and expired.json()["message"] == "Bad credentials"


# -- GET /user refusals ------------------------------------------------------------------------


def test_get_user_refuses_installation_tokens_and_apps(gh: Env) -> None:
    refusal = {
        "message": "Resource not accessible by integration",
        "documentation_url": USER_DOCS,
        "status": "403",
    }
    client = gh.installation_client()
    with pytest.raises(RequestFailed) as info:
        client.rest.users.get_authenticated()
    assert info.value.response.status_code == 403
    assert info.value.response.json() == refusal
    # githubkit will not send an App JWT to /user; GitHub refuses it the same way.
    headers = {"Authorization": f"Bearer {gh.state.make_jwt()}"}
    response = httpx.get(gh.url + "/user", headers=headers, timeout=10)
    assert response.status_code == 403 and response.json() == refusal


def test_get_user_anonymous_needs_authentication(gh: Env) -> None:
    client = GitHub(base_url=gh.url, **fast({}))
    with pytest.raises(RequestFailed) as info:
        client.rest.users.get_authenticated()
    assert info.value.response.status_code == 401
    assert info.value.response.json() == {
        "message": "Requires authentication",
        "documentation_url": USER_DOCS,
        "status": "401",
    }


# -- setup -------------------------------------------------------------------------------------


def test_callback_urls_and_codes_persist(tmp_path: Path) -> None:
    state = GitHubState(tmp_path / "github", app_callback_urls=[CALLBACK])
    state.create_user("alice")
    code = state.oauth_code("alice")
    again = GitHubState(tmp_path / "github")
    assert again.app.callback_urls == [CALLBACK]
    assert again.oauth_codes[code].user == "alice"
    assert again.oauth_codes[code].redirect_uri == CALLBACK


def test_admin_sets_callback_urls(gh: Env) -> None:
    response = httpx.patch(gh.url + "/_admin/app", json={"callback_urls": [SECOND]}, timeout=10)
    assert response.status_code == 200 and response.json()["callback_urls"] == [SECOND]
    assert httpx.get(gh.url + "/_admin/app").json()["callback_urls"] == [SECOND]
    assert authorize(gh).headers["location"].startswith(SECOND + "?code=")
    bad = httpx.patch(gh.url + "/_admin/app", json={"callback_urls": "x"}, timeout=10)
    assert bad.status_code == 422
