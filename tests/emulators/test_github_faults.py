"""Faults on demand: 5xx, rate limits, 422, slow answers and dropped connections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import (
    GraphQLFailed,
    PrimaryRateLimitExceeded,
    RequestError,
    RequestFailed,
    SecondaryRateLimitExceeded,
)

from tests.emulators.github.testing import Env, fast, running_emulator


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


def test_server_error_then_recovery(gh: Env) -> None:
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("status", method="GET", path="/repos/*/widgets", status=503, count=1)
    with pytest.raises(RequestFailed) as info:
        client.rest.repos.get("acme", "widgets")
    assert info.value.response.status_code == 503
    assert client.rest.repos.get("acme", "widgets").status_code == 200
    statuses = [r.status for r in gh.state.requests if r.path == "/repos/acme/widgets"]
    assert statuses == [503, 200]
    assert gh.state.requests[-2].fault == "status"


def test_githubkit_retries_a_502(gh: Env) -> None:
    client = gh.user_client("alice")  # default retry policy: server errors are retried
    gh.state.add_fault("status", path="/repos/acme/widgets", status=502, count=1)
    assert client.rest.repos.get("acme", "widgets").status_code == 200
    assert [r.status for r in gh.state.requests if r.path == "/repos/acme/widgets"] == [502, 200]


def test_fault_matches_method_and_path_only(gh: Env) -> None:
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("status", method="POST", path="/repos/*/*/issues", count=None)
    assert client.rest.issues.list_for_repo("acme", "widgets").status_code == 200
    for _ in range(2):
        with pytest.raises(RequestFailed):
            client.rest.issues.create("acme", "widgets", title="x")
    gh.state.clear_faults()
    assert client.rest.issues.create("acme", "widgets", title="x").status_code == 201


def test_secondary_rate_limit(gh: Env) -> None:
    client = gh.installation_client(auto_retry=False)
    client.rest.repos.get("acme", "widgets")  # get a token first
    gh.state.add_fault("secondary_rate_limit", path="/repos/acme/widgets/issues", retry_after=7)
    with pytest.raises(SecondaryRateLimitExceeded) as info:
        client.rest.issues.create("acme", "widgets", title="x")
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["retry-after"] == "7"
    assert response.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert info.value.retry_after.total_seconds() == 7


def test_secondary_rate_limit_said_only_by_the_message(gh: Env) -> None:
    # GitHub does not always send retry-after: then only the message tells (and githubkit,
    # which looks at the headers, raises a plain RequestFailed).
    client = gh.installation_client(auto_retry=False)
    gh.state.add_fault("secondary_rate_limit", path="/repos/acme/widgets", retry_after=None)
    with pytest.raises(RequestFailed) as info:
        client.rest.repos.get("acme", "widgets")
    assert not isinstance(info.value, SecondaryRateLimitExceeded)
    assert info.value.response.status_code == 403
    assert "retry-after" not in info.value.response.headers
    assert "secondary rate limit" in info.value.response.json()["message"]


def test_a_lost_answer_does_the_write_and_then_fails(gh: Env) -> None:
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("lost_answer", method="POST", path="/repos/*/*/issues")
    with pytest.raises(RequestFailed) as info:
        client.rest.issues.create("acme", "widgets", title="Made anyway")
    assert info.value.response.status_code == 502
    assert [i.title for i in gh.state.issues.values()].count("Made anyway") == 1


def test_graphql_error_answers_200_with_errors(gh: Env) -> None:
    client = gh.installation_client(auto_retry=False)
    gh.state.add_fault("graphql_error", path="/graphql")
    query = "mutation { markPullRequestReadyForReview(input: {pullRequestId: \"x\"}) " \
        "{ clientMutationId } }"
    with pytest.raises(GraphQLFailed) as info:
        client.graphql(query)
    [error] = info.value.response.errors or []
    assert error.type == "FORBIDDEN"
    assert error.message == "Resource not accessible by integration"
    assert [r.status for r in gh.state.requests if r.path == "/graphql"] == [200]


def test_primary_rate_limit_fault(gh: Env) -> None:
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("primary_rate_limit", path="/repos/acme/widgets", status=429, retry_after=30)
    with pytest.raises(PrimaryRateLimitExceeded) as info:
        client.rest.repos.get("acme", "widgets")
    headers = info.value.response.headers
    assert info.value.response.status_code == 429
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) >= int(gh.state.now()) + 29


def test_validation_fault(gh: Env) -> None:
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("validation", path="/repos/acme/widgets/issues")
    with pytest.raises(RequestFailed) as info:
        client.rest.issues.create("acme", "widgets", title="x")
    assert info.value.response.status_code == 422
    assert info.value.response.json()["message"] == "Validation Failed"


def test_slow_response(gh: Env) -> None:
    client = gh.user_client("alice")
    gh.state.add_fault("delay", path="/repos/acme/widgets", delay=0.3)
    started = time.monotonic()
    assert client.rest.repos.get("acme", "widgets").status_code == 200
    assert time.monotonic() - started >= 0.3
    gh.state.add_fault("delay", path="/repos/acme/widgets", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(gh.url + "/repos/acme/widgets", timeout=0.1)


def test_dropped_connection(gh: Env) -> None:
    gh.state.add_fault("drop", path="/repos/acme/widgets")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(
            gh.url + "/repos/acme/widgets",
            headers={"Authorization": f"token {gh.state.user_token('alice')}"},
        )
    client = gh.user_client("alice", auto_retry=False)
    gh.state.add_fault("drop", path="/repos/acme/widgets")
    with pytest.raises(RequestError):
        client.rest.repos.get("acme", "widgets")
    assert client.rest.repos.get("acme", "widgets").status_code == 200


def test_faults_over_admin_http(gh: Env) -> None:
    created = httpx.post(
        gh.url + "/_admin/faults",
        json={"kind": "status", "path": "/rate_limit", "status": 500, "count": 2},
    )
    assert created.status_code == 201
    assert [f["id"] for f in httpx.get(gh.url + "/_admin/faults").json()] == [created.json()["id"]]
    assert httpx.get(gh.url + "/rate_limit").status_code == 500
    assert httpx.delete(gh.url + "/_admin/faults").status_code == 204
    assert httpx.get(gh.url + "/rate_limit").status_code == 200


def _token_client(gh: Env, token: str) -> GitHub[Any]:
    return GitHub(TokenAuthStrategy(token), base_url=gh.url, **fast({"auto_retry": False}))


def test_content_creation_is_limited_per_installation_across_its_tokens(gh: Env) -> None:
    gh.state.content_per_minute = 2
    first, second = (_token_client(gh, gh.state.create_installation_token(
        gh.installation.id).token) for _ in range(2))
    first.rest.issues.create("acme", "widgets", title="one")
    second.rest.issues.create("acme", "widgets", title="two")
    with pytest.raises(SecondaryRateLimitExceeded) as info:
        first.rest.issues.create("acme", "widgets", title="three")
    assert info.value.response.status_code == 403
    assert 55 <= info.value.retry_after.total_seconds() <= 60
    assert first.rest.issues.list_for_repo("acme", "widgets").status_code == 200  # reads go
    titles = [i.title for i in first.rest.issues.list_for_repo("acme", "widgets").parsed_data]
    assert "three" not in titles
    # A user's writes are their own, not the installation's.
    alice = gh.user_client("alice", auto_retry=False)
    assert alice.rest.issues.create("acme", "widgets", title="four").status_code == 201


def test_content_creation_limit_per_hour(gh: Env) -> None:
    gh.state.content_per_minute, gh.state.content_per_hour = 0, 1
    client = _token_client(gh, gh.state.create_installation_token(gh.installation.id).token)
    client.rest.issues.create("acme", "widgets", title="one")
    with pytest.raises(SecondaryRateLimitExceeded) as info:
        client.rest.issues.create("acme", "widgets", title="two")
    assert 3590 <= info.value.retry_after.total_seconds() <= 3600
