"""Events published for scripted user flows, webhook-shaped and parseable by githubkit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from githubkit import GitHub, TokenAuthStrategy
from githubkit.webhooks import parse_obj

from tests.emulators.github import ApiError, GitHubServer, GitHubState
from tests.emulators.github.testing import Env, running_emulator


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


def test_scripted_flow_publishes_parseable_events(gh: Env) -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    start = len(gh.state.events)
    gh.state.subscribe(lambda name, payload: received.append((name, payload)))
    state = gh.state
    alice = state.as_user("alice")
    issue = alice.open_issue("acme/widgets", "Add subtraction", "Please", labels=["bug"])
    state.as_user("tina").add_labels("acme/widgets", issue.number, "conductor")
    state.as_user("tina").remove_label("acme/widgets", issue.number, "bug")
    comment = alice.comment("acme/widgets", issue.number, "/plan")
    alice.edit_comment("acme/widgets", comment.id, "/plan please")
    first = alice.push("acme/widgets", "feature", {"sub.py": "def sub(a, b): ...\n"})
    pull = alice.open_pull(
        "acme/widgets", title="Subtraction", head="feature", body="Closes #1", draft=True
    )
    alice.push("acme/widgets", "feature", {"sub.py": "def sub(a, b):\n    return a - b\n"})
    alice.mark_ready("acme/widgets", pull.number)
    state.create_status("acme/widgets", first, "pending", "ci/external")
    run = state.create_workflow_run("acme/widgets", head_sha=first, jobs=["test"])
    state.complete_job(state.workflow_jobs(run.id)[0].id, "success")
    alice.merge_pull("acme/widgets", pull.number)

    names = [(name, payload.get("action")) for name, payload in received]
    for expected in [
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("issue_comment", "created"),
        ("issue_comment", "edited"),
        ("push", None),
        ("pull_request", "opened"),
        ("pull_request", "synchronize"),
        ("pull_request", "ready_for_review"),
        ("status", None),
        ("workflow_run", "requested"),
        ("workflow_run", "completed"),
        ("check_run", "created"),
        ("check_run", "completed"),
        ("check_suite", "completed"),
        ("workflow_job", "completed"),
        ("pull_request", "closed"),
        ("issues", "closed"),
    ]:
        assert expected in names, expected
    assert received == state.events[start:]

    for name, payload in received:
        parse_obj(name, payload)  # raises if githubkit cannot read it
        assert payload["installation"]["id"] == gh.installation.id
        assert payload["repository"]["full_name"] == "acme/widgets"
        assert "login" in payload["sender"]

    labeled = state.events_named("issues", "labeled")
    assert [p["label"]["name"] for p in labeled] == ["bug", "conductor"]
    assert labeled[1]["sender"]["login"] == "tina"
    edited = state.events_named("issue_comment", "edited")[0]
    assert edited["changes"] == {"body": {"from": "/plan"}}
    closed = state.events_named("pull_request", "closed")[0]
    assert closed["pull_request"]["merged"] is True
    assert state.events_named("issues", "closed")[0]["issue"]["number"] == issue.number


def test_deleting_a_pull_requests_head_branch_closes_it(gh: Env) -> None:
    alice = gh.state.as_user("alice")
    alice.push("acme/widgets", "feature", {"sub.py": "def sub(a, b): ...\n"})
    alice.push("acme/widgets", "other", {"mul.py": "def mul(a, b): ...\n"})
    pull = alice.open_pull("acme/widgets", title="Subtraction", head="feature")
    kept = alice.open_pull("acme/widgets", title="Multiplication", head="other")
    start = len(gh.state.events)

    alice.delete_branch("acme/widgets", "feature")

    client = gh.installation_client()
    closed = client.rest.pulls.get("acme", "widgets", pull.number).parsed_data
    assert (closed.state, closed.merged) == ("closed", False)
    assert client.rest.pulls.get("acme", "widgets", kept.number).parsed_data.state == "open"
    events = [(name, payload) for name, payload in gh.state.events[start:]
              if name == "pull_request"]
    assert [(p["action"], p["number"], p["sender"]["login"]) for _, p in events] == [
        ("closed", pull.number, "alice")]
    assert events[0][1]["pull_request"]["merged"] is False
    with pytest.raises(ApiError) as refused:  # the branch must be restored first
        alice.reopen_pull("acme/widgets", pull.number)
    assert refused.value.status == 422
    alice.push("acme/widgets", "feature", {"sub.py": "def sub(a, b): ...\n"})
    assert alice.reopen_pull("acme/widgets", pull.number).number == pull.number


def test_bot_actions_are_marked_as_the_app(gh: Env) -> None:
    client = gh.installation_client()
    issue = client.rest.issues.create("acme", "widgets", title="From the app").parsed_data
    client.rest.issues.create_comment("acme", "widgets", issue.number, body="Planning…")
    comment = gh.state.events_named("issue_comment", "created")[0]
    assert comment["sender"]["login"] == gh.state.app.bot_login
    assert comment["sender"]["type"] == "Bot"
    assert comment["comment"]["performed_via_github_app"]["id"] == gh.state.app_id


def test_permission_checks_for_scripted_users(gh: Env) -> None:
    issue = gh.state.as_user("alice").open_issue("acme/widgets", "x")
    rita = gh.state.as_user("rita")
    with pytest.raises(ApiError) as info:
        rita.add_labels("acme/widgets", issue.number, "bug")
    assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        rita.close_issue("acme/widgets", issue.number)
    assert info.value.status == 403
    rita.comment("acme/widgets", issue.number, "me too")
    with pytest.raises(ApiError) as info:
        gh.state.as_user("mallory").comment("acme/widgets", issue.number, "hi")
    assert info.value.status == 404
    # Labels from someone who cannot triage are dropped silently, as on GitHub.
    quiet = rita.open_issue("acme/widgets", "labels?", labels=["bug"])
    assert quiet.labels == []
    other = gh.state.as_user("alice").comment("acme/widgets", issue.number, "alice says")
    with pytest.raises(ApiError):
        rita.edit_comment("acme/widgets", other.id, "rewritten")


def test_installation_created_event(gh: Env) -> None:
    gh.state.create_repo("acme/gadgets", files={"a": "a"})
    inst = gh.state.install_app("acme", repositories=["gadgets"])
    payload = gh.state.events_named("installation", "created")[-1]
    parse_obj("installation", payload)
    assert payload["installation"]["id"] == inst.id
    assert [r["full_name"] for r in payload["repositories"]] == ["acme/gadgets"]


def test_wait_for_event_from_another_thread(gh: Env) -> None:
    start = len(gh.state.events)
    worker = threading.Thread(
        target=lambda: gh.state.as_user("alice").open_issue("acme/widgets", "async")
    )
    worker.start()
    _, payload = gh.state.wait_for_event(
        lambda n, p: n == "issues" and p["issue"]["title"] == "async", timeout=10, start=start
    )
    worker.join()
    assert payload["action"] == "opened"


def test_subscriber_errors_do_not_break_calls(gh: Env) -> None:
    def broken(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    gh.state.subscribe(broken)
    gh.state.as_user("alice").open_issue("acme/widgets", "still works")
    assert gh.state.subscriber_errors


def test_state_persists_across_restarts(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as env:
        env.state.as_user("alice").open_issue("acme/widgets", "remember me")
        token = env.state.create_installation_token(env.installation.id).token
        app_id = env.state.app_id
    reloaded = GitHubState(tmp_path / "github")
    assert reloaded.app_id == app_id
    with GitHubServer(reloaded) as server:
        client = GitHub(TokenAuthStrategy(token), base_url=server.url)
        titles = [i.title for i in client.rest.issues.list_for_repo("acme", "widgets").parsed_data]
        assert titles == ["remember me"]
        assert client.rest.repos.get("acme", "widgets").parsed_data.clone_url.startswith(server.url)
