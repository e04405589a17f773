"""App authentication, installation tokens, user tokens and permission errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed
from githubkit_schemas.latest.models import (
    Installation,
    InstallationToken,
    Integration,
    RepositoryCollaboratorPermission,
)

from tests.emulators.github.auth import generate_private_key
from tests.emulators.github.testing import Env, running_emulator


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


def raw(
    env: Env, method: str, path: str, token: str | None = None, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, env.url + path, headers=headers, timeout=10, **kwargs)


def test_app_endpoints_with_githubkit(gh: Env) -> None:
    app = gh.app_client()
    me = app.rest.apps.get_authenticated().parsed_data
    assert isinstance(me, Integration)
    assert me.id == gh.state.app_id and me.slug == gh.state.app.slug

    installations = app.rest.apps.list_installations().parsed_data
    assert [i.id for i in installations] == [gh.installation.id]
    assert isinstance(installations[0], Installation)
    assert installations[0].account is not None

    found = app.rest.apps.get_repo_installation("acme", "widgets").parsed_data
    assert found.id == gh.installation.id and found.app_slug == gh.state.app.slug

    token = app.rest.apps.create_installation_access_token(gh.installation.id)
    assert token.status_code == 201
    parsed = token.parsed_data
    assert isinstance(parsed, InstallationToken)
    assert parsed.token.startswith("ghs_")
    assert parsed.repository_selection == "all"
    assert parsed.permissions.issues == "write"
    assert parsed.expires_at.endswith("Z")


def test_installation_client_reaches_repo_and_lists_repositories(gh: Env) -> None:
    client = gh.installation_client()
    repo = client.rest.repos.get("acme", "widgets").parsed_data
    assert repo.default_branch == "main" and repo.full_name == "acme/widgets"
    listing = client.rest.apps.list_repos_accessible_to_installation().parsed_data
    assert listing.total_count == 1
    assert listing.repositories[0].full_name == "acme/widgets"


def test_narrowed_token_carries_requested_permissions(gh: Env) -> None:
    app = gh.app_client()
    token = app.rest.apps.create_installation_access_token(
        gh.installation.id, permissions={"issues": "read"}, repositories=["widgets"]
    ).parsed_data
    assert token.permissions.issues == "read"
    assert token.repository_selection == "selected"
    client = GitHub(TokenAuthStrategy(token.token), base_url=gh.url)
    with pytest.raises(RequestFailed) as info:
        client.rest.issues.create("acme", "widgets", title="nope")
    assert info.value.response.status_code == 403
    assert info.value.response.json()["message"] == "Resource not accessible by integration"

    too_much = raw(
        gh,
        "POST",
        f"/app/installations/{gh.installation.id}/access_tokens",
        gh.state.make_jwt(),
        json={"permissions": {"administration": "write"}},
    )
    assert too_much.status_code == 422


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "'Expiration time' claim ('exp') must be a numeric value"),
        ("too_long", "'Expiration time' claim ('exp') is too far in the future"),
        ("future_iat", "'Issued at' claim ('iat') must be an Integer"),
        ("wrong_key", "A JSON web token could not be decoded"),
        ("garbage", "A JSON web token could not be decoded"),
    ],
)
def test_bad_jwts_are_refused(gh: Env, case: str, message: str) -> None:
    now = int(gh.state.now())
    app_id = str(gh.state.app_id)
    key = gh.state.private_key()
    claims = {"iss": app_id, "iat": now - 60, "exp": now + 540}
    if case == "expired":
        claims = {"iss": app_id, "iat": now - 900, "exp": now - 300}
    elif case == "too_long":
        claims = {"iss": app_id, "iat": now - 60, "exp": now + 3600}
    elif case == "future_iat":
        claims = {"iss": app_id, "iat": now + 300, "exp": now + 600}
    elif case == "wrong_key":
        key = generate_private_key()
    token = "not.a.jwt" if case == "garbage" else jwt.encode(claims, key, algorithm="RS256")
    response = raw(gh, "GET", "/app", token)
    assert response.status_code == 401
    body = response.json()
    assert body["message"].startswith(message)
    assert body["documentation_url"].startswith("https://docs.github.com/")


def test_jwt_within_clock_drift_is_accepted(gh: Env) -> None:
    now = int(gh.state.now())
    token = jwt.encode(
        {"iss": str(gh.state.app_id), "iat": now + 30, "exp": now + 600},
        gh.state.private_key(),
        algorithm="RS256",
    )
    assert raw(gh, "GET", "/app", token).status_code == 200


def test_wrong_key_with_githubkit_fails(gh: Env) -> None:
    client = GitHub(AppAuthStrategy(gh.state.app_id, generate_private_key()), base_url=gh.url)
    with pytest.raises(RequestFailed) as info:
        client.rest.apps.get_authenticated()
    assert info.value.response.status_code == 401


def test_app_endpoints_need_a_jwt(gh: Env) -> None:
    token = gh.state.create_installation_token(gh.installation.id).token
    response = httpx.get(gh.url + "/app", headers={"Authorization": f"token {token}"})
    assert response.status_code == 401


def test_tokens_expire(gh: Env) -> None:
    token = gh.state.create_installation_token(gh.installation.id).token
    client = GitHub(TokenAuthStrategy(token), base_url=gh.url)
    assert client.rest.repos.get("acme", "widgets").status_code == 200
    gh.state.advance_clock(3601)
    with pytest.raises(RequestFailed) as info:
        client.rest.repos.get("acme", "widgets")
    assert info.value.response.status_code == 401
    body = info.value.response.json()
    assert body["message"] == "Bad credentials"
    assert body["documentation_url"].startswith("https://docs.github.com/")


def test_expire_tokens_makes_cached_githubkit_token_fail(gh: Env) -> None:
    client = gh.installation_client()
    client.rest.repos.get("acme", "widgets")
    gh.state.expire_tokens()
    with pytest.raises(RequestFailed) as info:
        client.rest.repos.get("acme", "widgets")
    assert info.value.response.status_code == 401


def test_unknown_token_and_anonymous(gh: Env) -> None:
    response = httpx.get(
        gh.url + "/repos/acme/widgets", headers={"Authorization": "token ghs_doesnotexist"}
    )
    assert response.status_code == 401 and response.json()["message"] == "Bad credentials"
    assert httpx.get(gh.url + "/repos/acme/widgets").status_code == 404  # private repo


def test_under_permitted_installation_gets_403(tmp_path: Path) -> None:
    with running_emulator(tmp_path, permissions={"metadata": "read", "issues": "read"}) as env:
        client = env.installation_client()
        assert client.rest.issues.list_for_repo("acme", "widgets").status_code == 200
        with pytest.raises(RequestFailed) as info:
            client.rest.issues.create("acme", "widgets", title="x")
        assert info.value.response.status_code == 403
        assert info.value.response.json()["message"] == "Resource not accessible by integration"
        with pytest.raises(RequestFailed) as info:
            client.rest.pulls.list("acme", "widgets")
        assert info.value.response.status_code == 403


def test_repo_outside_selected_installation_is_404(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as env:
        env.state.create_repo("acme/secret", files={"a.txt": "a"})
        inst = env.state.install_app("acme", repositories=["widgets"])
        client = env.installation_client(inst.id)
        assert client.rest.repos.get("acme", "widgets").status_code == 200
        with pytest.raises(RequestFailed) as info:
            client.rest.repos.get("acme", "secret")
        assert info.value.response.status_code == 404


def test_user_tokens_and_roles(gh: Env) -> None:
    rita = gh.user_client("rita")
    repo = rita.rest.repos.get("acme", "widgets").parsed_data
    assert repo.permissions is not None and repo.permissions.pull and not repo.permissions.push
    issue = rita.rest.issues.create("acme", "widgets", title="from rita").parsed_data
    with pytest.raises(RequestFailed) as info:
        rita.rest.issues.add_labels("acme", "widgets", issue.number, labels=["bug"])
    assert info.value.response.status_code == 403
    tina = gh.user_client("tina")
    labels = tina.rest.issues.add_labels(
        "acme", "widgets", issue.number, labels=["bug"]
    ).parsed_data
    assert [label.name for label in labels] == ["bug"]
    mallory = gh.user_client("mallory")
    with pytest.raises(RequestFailed) as info:
        mallory.rest.repos.get("acme", "widgets")
    assert info.value.response.status_code == 404


@pytest.mark.parametrize(
    ("login", "permission", "role"),
    [
        ("alice", "write", "write"),
        ("tina", "read", "triage"),
        ("rita", "read", "read"),
        ("mallory", "none", "none"),
        ("ada", "admin", "admin"),
    ],
)
def test_collaborator_permission_levels(gh: Env, login: str, permission: str, role: str) -> None:
    gh.state.set_collaborator("acme/widgets", "maia", "maintain")
    gh.state.set_collaborator("acme/widgets", "ada", "admin")
    client = gh.installation_client()
    result = client.rest.repos.get_collaborator_permission_level("acme", "widgets", login)
    parsed = result.parsed_data
    assert isinstance(parsed, RepositoryCollaboratorPermission)
    assert (parsed.permission, parsed.role_name) == (permission, role)
    maia = client.rest.repos.get_collaborator_permission_level("acme", "widgets", "maia")
    assert (maia.parsed_data.permission, maia.parsed_data.role_name) == ("write", "maintain")
