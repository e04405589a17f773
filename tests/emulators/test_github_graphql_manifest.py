"""GraphQL ready-for-review and the app-manifest conversion flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.exception import GraphQLFailed, RequestFailed
from githubkit_schemas.latest import models

from tests.emulators.github.testing import Env, running_emulator

READY = """
mutation Ready($id: ID!) {
  markPullRequestReadyForReview(input: {pullRequestId: $id, clientMutationId: "c1"}) {
    clientMutationId
    pr: pullRequest { id number isDraft state }
  }
}
"""


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


def draft_pull(env: Env) -> models.PullRequest:
    env.state.commit_files("acme/widgets", "feature", {"f.txt": "f"}, "f")
    client = env.installation_client()
    return client.rest.pulls.create(
        "acme", "widgets", title="Draft", head="feature", base="main", draft=True
    ).parsed_data


def test_mark_ready_for_review(gh: Env) -> None:
    pull = draft_pull(gh)
    client = gh.installation_client()
    data = client.graphql(READY, {"id": pull.node_id})
    assert data == {
        "markPullRequestReadyForReview": {
            "clientMutationId": "c1",
            "pr": {"id": pull.node_id, "number": pull.number, "isDraft": False, "state": "OPEN"},
        }
    }
    assert client.rest.pulls.get("acme", "widgets", pull.number).parsed_data.draft is False
    [event] = gh.state.events_named("pull_request", "ready_for_review")
    assert event["pull_request"]["draft"] is False


def test_graphql_errors(gh: Env) -> None:
    client = gh.installation_client()
    with pytest.raises(GraphQLFailed) as info:
        client.graphql(READY, {"id": "PR_kwDOnope"})
    error = info.value.response.errors[0]
    assert error.type == "NOT_FOUND"
    assert error.message.startswith("Could not resolve to a node with the global id")

    with pytest.raises(GraphQLFailed) as info:
        client.graphql("query { viewer { login } }")
    assert "doesn't exist on type 'Query'" in info.value.response.errors[0].message

    with pytest.raises(GraphQLFailed) as info:
        client.graphql("mutation { markPullRequestReadyForReview(input: {")
    assert info.value.response.errors[0].message.startswith("Parse error")

    anonymous = httpx.post(gh.url + "/graphql", json={"query": "{ __typename }"})
    assert anonymous.status_code == 401


def test_graphql_ready_needs_pull_requests_write(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as env:
        pull = draft_pull(env)
        weak = env.state.install_app(
            "acme", permissions={"metadata": "read", "pull_requests": "read"}
        )
        client = env.installation_client(weak.id)
        with pytest.raises(GraphQLFailed) as info:
            client.graphql(READY, {"id": pull.node_id})
        assert info.value.response.errors[0].type == "FORBIDDEN"


def test_manifest_conversion(gh: Env) -> None:
    code = gh.state.register_manifest_code(
        manifest={
            "name": "Conductor Dev",
            "url": "https://conductor.example",
            "hook_attributes": {"url": "https://conductor.example/webhooks"},
            "default_permissions": {"issues": "write", "contents": "write"},
            "default_events": ["issues", "push"],
        },
        owner="acme",
    )
    client = GitHub(base_url=gh.url)
    response = client.rest.apps.create_from_manifest(code)
    assert response.status_code == 201
    app = response.parsed_data
    assert isinstance(app, models.AppManifestsCodeConversionsPostResponse201)
    assert app.slug == "conductor-dev" and app.name == "Conductor Dev"
    assert app.pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert app.webhook_secret and app.client_secret and app.client_id
    assert app.owner is not None and app.owner.login == "acme"
    assert app.html_url.endswith("/apps/conductor-dev")

    # The new App is real: it can authenticate with its key and be installed.
    new_app = GitHub(AppAuthStrategy(app.id, app.pem), base_url=gh.url)
    assert new_app.rest.apps.get_authenticated().parsed_data.slug == "conductor-dev"
    gh.state.install_app("acme", app=app.id)
    assert len(new_app.rest.apps.list_installations().parsed_data) == 1

    with pytest.raises(RequestFailed) as info:
        client.rest.apps.create_from_manifest(code)  # codes are single-use
    assert info.value.response.status_code == 404
    with pytest.raises(RequestFailed) as info:
        client.rest.apps.create_from_manifest("unknown")
    assert info.value.response.status_code == 404


def test_manifest_code_over_admin_http(gh: Env) -> None:
    code = httpx.post(
        gh.url + "/_admin/manifest-codes", json={"manifest": {"name": "From HTTP"}}
    ).json()["code"]
    converted = httpx.post(f"{gh.url}/app-manifests/{code}/conversions")
    assert converted.status_code == 201
    assert converted.json()["slug"] == "from-http"
