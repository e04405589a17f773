"""Routing is a pure function of the raw payload: what is acted on, and why the rest is not."""

from __future__ import annotations

from typing import Any

import pytest

from app.routing import Identity, route
from tests.conftest import fixture_names, load_fixture

ME = Identity(app_id=4242, bot_login="conductor[bot]", trigger_label="agent:implement")


def labeled(label: str = "agent:implement", **issue: Any) -> dict[str, Any]:
    payload = load_fixture("issues.labeled.0.json")
    payload["label"]["name"] = label
    payload["issue"].pop("pull_request", None)
    payload["issue"].update({"state": "open", **issue})
    return payload


def comment(body: str) -> dict[str, Any]:
    payload = load_fixture("issue_comment.created.0.json")
    payload["comment"]["body"] = body
    return payload


def test_trigger_label_starts_a_run() -> None:
    assert route("issues", labeled(), ME).kind == "start_run"


def test_custom_trigger_label() -> None:
    me = Identity(app_id=1, trigger_label="bot:go")
    assert route("issues", labeled("bot:go"), me).kind == "start_run"
    assert route("issues", labeled("agent:implement"), me).ignored is not None


def test_label_on_a_closed_issue_or_a_pull_request_goes_to_the_worker_to_be_answered() -> None:
    assert route("issues", labeled(state="closed"), ME).kind == "start_run"
    pr = labeled(pull_request={"url": "https://api.github.com/repos/o/r/pulls/1"})
    assert route("issues", pr, ME).kind == "start_run"
    pull = {**load_fixture("pull_request.opened.0.json"), "action": "labeled",
            "label": {"name": "agent:implement"}}
    assert route("pull_request", pull, ME).kind == "start_run"
    pull["label"] = {"name": "bug"}
    assert route("pull_request", pull, ME).ignored == (
        "pull request is not on a conductor/ branch")


@pytest.mark.parametrize(
    ("body", "is_command"),
    [
        ("/agent retry", True),
        ("/AGENT approve", True),
        ("  /agent help", True),
        ("/agent", True),
        ("please /agent retry", False),
        ("> /agent retry", False),
        ("```\n/agent retry\n```", False),
        ("/agentx retry", False),
        ("", False),
    ],
)
def test_only_comments_starting_with_the_command_are_accepted(body: str, is_command: bool) -> None:
    assert route("issue_comment", comment(body), ME).accepted is is_command


def test_edited_comments_do_not_run_commands() -> None:
    payload = comment("/agent retry")
    payload["action"] = "edited"
    assert route("issue_comment", payload, ME).ignored == (
        "issue_comment.edited does not run commands"
    )


def test_a_persons_comment_on_the_bots_pull_request_is_not_the_bots() -> None:
    payload = comment("/agent retry")
    # The pull request was opened by the App; the comment was not.
    payload["issue"]["performed_via_github_app"] = {"id": 4242, "slug": "conductor"}
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/o/r/pulls/2"}
    assert route("issue_comment", payload, ME).kind == "command"
    payload["comment"]["performed_via_github_app"] = {"id": 4242, "slug": "conductor"}
    assert route("issue_comment", payload, ME).ignored == "sent by this app"


def test_own_events_are_ignored_but_the_retry_button_is_not() -> None:
    payload = comment("/agent retry")
    payload["sender"]["login"] = "conductor[bot]"
    assert route("issue_comment", payload, ME).ignored == "sent by this app"

    own_check = load_fixture("check_run.completed.1.json")
    own_check["check_run"]["app"]["id"] = 4242
    assert route("check_run", own_check, ME).ignored == "check from this app"

    button = load_fixture("check_run.requested_action.0.json")
    button["check_run"]["app"]["id"] = 4242
    assert route("check_run", button, ME).kind == "command"


def _on_branch(payload: dict[str, Any], key: str, branch: str) -> dict[str, Any]:
    if key == "check_run":
        payload["check_run"]["check_suite"]["head_branch"] = branch
    elif key == "status":
        payload["branches"] = [{"name": branch, "commit": {"sha": payload["sha"]}}]
    else:
        payload[key]["head_branch"] = branch
    return payload


def test_ci_results_of_the_bots_own_pushes_are_accepted() -> None:
    run = _on_branch(load_fixture("workflow_run.completed.0.json"), "workflow_run",
                     "conductor/issue-1-x")
    run["sender"]["login"] = "conductor[bot]"
    assert route("workflow_run", run, ME).kind == "ci_result"


def test_ci_results_from_other_apps_are_accepted_on_conductor_branches() -> None:
    actions = load_fixture("check_run.completed.0.json")
    assert actions["check_run"]["app"]["slug"] == "github-actions"
    for event, name in [("check_run", "check_run.completed.0.json"),
                        ("check_suite", "check_suite.completed.0.json"),
                        ("workflow_run", "workflow_run.completed.0.json"),
                        ("status", "status.0.json")]:
        elsewhere = load_fixture(name)
        assert route(event, elsewhere, ME).ignored == (
            f"{event} is not for a conductor/ branch"), event
        ours = _on_branch(load_fixture(name), event, "conductor/issue-7-add-sub")
        assert route(event, ours, ME).kind == "ci_result", event
    # A status on a commit no branch points at yet cannot be placed: the worker decides.
    unplaced = load_fixture("status.0.json")
    unplaced["branches"] = []
    assert route("status", unplaced, ME).kind == "ci_result"
    status = load_fixture("status.0.json")
    status["state"] = "pending"
    assert route("status", status, ME).ignored == "status is still pending"


def test_pull_requests_matter_only_on_conductor_branches() -> None:
    payload = load_fixture("pull_request.closed.0.json")
    assert route("pull_request", payload, ME).ignored == (
        "pull request is not on a conductor/ branch"
    )
    payload["pull_request"]["head"]["ref"] = "conductor/issue-7-fix-login"
    assert route("pull_request", payload, ME).kind == "pull_request"


def _places(value: Any) -> Any:
    """Every (container, key) in a JSON value, lists sampled at their first two items."""
    items = value.items() if isinstance(value, dict) else enumerate(value[:2])
    for key, inner in list(items):
        yield value, key
        if isinstance(inner, dict | list):
            yield from _places(inner)


@pytest.mark.parametrize("name", fixture_names())
def test_any_value_anywhere_in_a_real_payload_routes_without_raising(name: str) -> None:
    # A webhook handler that raises answers 500; GitHub's payloads change shape over time.
    payload = load_fixture(name)
    event = name.split(".")[0]
    for container, key in list(_places(payload)):
        original = container[key]
        for odd in (None, True, -1, 1.5, "", "\ud83d", [], {}, [None], "conductor/x"):
            container[key] = odd
            decision = route(event, payload, ME)
            assert (decision.kind is None) != (decision.ignored is None), (key, odd)
        container[key] = original
