"""Deciding, from the raw payload alone, whether a webhook is something Conductor acts on.

Pure: no I/O. The webhook handler calls `route()` and either enqueues the event or answers
202 with the reason it is ignored. githubkit's typed webhook models reject some real payloads,
so this reads the raw JSON defensively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# What the bot does with each (event, action) it accepts; the worker dispatches on `kind`.
START_RUN = "start_run"
COMMAND = "command"
CI_RESULT = "ci_result"
PULL_REQUEST = "pull_request"
ISSUE = "issue"  # closed, deleted or transferred: stops the issue's run
INSTALLATION = "installation"

BRANCH_PREFIX = "conductor/"
_COMMAND = re.compile(r"\A[ \t]*/agent\b", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """Either `kind` (accepted) or `ignored` (a reason a person can read)."""

    kind: str | None = None
    ignored: str | None = None

    @property
    def accepted(self) -> bool:
        return self.kind is not None


@dataclass(frozen=True)
class Identity:
    """Who this installation of Conductor is, to recognise its own events."""

    app_id: int | None = None
    bot_login: str | None = None
    trigger_label: str = "agent:implement"


def _get(payload: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def is_own_event(payload: dict[str, Any], me: Identity) -> bool:
    """Whether this App caused the event: its bot sent it, or it is a comment the App wrote.
    (An issue or pull request the App opened says so too, but events on it, such as a
    person's comment on the bot's pull request, are not the App's.)"""
    sender_login = _get(payload, "sender", "login")
    if me.bot_login and sender_login == me.bot_login:
        return True
    if me.app_id is None:
        return False
    return bool(_get(payload, "comment", "performed_via_github_app", "id") == me.app_id)


# CI results of the bot's own pushes carry the bot as sender; they are filtered by the app
# that owns the check (its `app.id`), not by who caused them.
_CI_EVENTS = frozenset({"check_run", "check_suite", "workflow_run", "status"})


def route(event: str, payload: dict[str, Any], me: Identity) -> Route:
    action = payload.get("action")
    if event not in _CI_EVENTS and is_own_event(payload, me):
        return Route(ignored="sent by this app")
    handler = _ROUTES.get(event)
    if handler is None:
        return Route(ignored=f"event '{event}' is not handled")
    return handler(payload, action, me)


def _issues(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    if action in ("closed", "deleted", "transferred"):
        return Route(kind=ISSUE)
    if action != "labeled":
        return Route(ignored=f"issues.{action} is not handled")
    label = _get(payload, "label", "name")
    if label != me.trigger_label:
        return Route(ignored=f"label '{label}' is not the trigger label '{me.trigger_label}'")
    # On a pull request or a closed issue no run starts, but the labeler is told why.
    return Route(kind=START_RUN)


def is_command(body: Any) -> bool:
    return isinstance(body, str) and bool(_COMMAND.match(body))


def _issue_comment(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    if action != "created":
        return Route(ignored=f"issue_comment.{action} does not run commands")
    if not is_command(_get(payload, "comment", "body")):
        return Route(ignored="comment does not start with /agent")
    return Route(kind=COMMAND)


def _is_conductor_branch(payload: dict[str, Any]) -> bool:
    ref = _get(payload, "pull_request", "head", "ref")
    return isinstance(ref, str) and ref.startswith(BRANCH_PREFIX)


def _pull_request(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    if action == "labeled" and _get(payload, "label", "name") == me.trigger_label:
        return Route(kind=START_RUN)  # answered: the label works on issues
    if not _is_conductor_branch(payload):
        return Route(ignored="pull request is not on a conductor/ branch")
    if action not in ("closed", "reopened", "synchronize"):
        return Route(ignored=f"pull_request.{action} is not handled")
    return Route(kind=PULL_REQUEST)


def _pull_request_review(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    if not _is_conductor_branch(payload):
        return Route(ignored="pull request is not on a conductor/ branch")
    return Route(ignored=f"pull_request_review.{action} is not acted on")


def _ci_branches(payload: dict[str, Any], key: str) -> list[str]:
    """The branches a CI event names (none when it does not say)."""
    if key == "status":
        listed = payload.get("branches")
        names = [_get(b, "name") for b in listed] if isinstance(listed, list) else []
    elif key == "check_run":
        names = [_get(payload, key, "check_suite", "head_branch")]
    else:
        names = [_get(payload, key, "head_branch")]
    return [n for n in names if isinstance(n, str) and n]


def _ci(payload: dict[str, Any], action: Any, me: Identity, key: str) -> Route:
    app_id = _get(payload, key, "app", "id")
    if me.app_id is not None and app_id == me.app_id:
        if key == "check_run" and action == "requested_action":
            return Route(kind=COMMAND)
        return Route(ignored="check from this app")
    if action != "completed":
        return Route(ignored=f"{key}.{action} is not a result")
    return _ci_result(payload, key)


def _ci_result(payload: dict[str, Any], key: str) -> Route:
    branches = _ci_branches(payload, key)
    if branches and not any(b.startswith(BRANCH_PREFIX) for b in branches):
        return Route(ignored=f"{key} is not for a {BRANCH_PREFIX} branch")
    return Route(kind=CI_RESULT)


def _check_run(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    return _ci(payload, action, me, "check_run")


def _check_suite(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    return _ci(payload, action, me, "check_suite")


def _workflow_run(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    return _ci(payload, action, me, "workflow_run")


def _status(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    if payload.get("state") == "pending":
        return Route(ignored="status is still pending")
    return _ci_result(payload, "status")


def _installation(payload: dict[str, Any], action: Any, me: Identity) -> Route:
    return Route(kind=INSTALLATION)


_ROUTES = {
    "issues": _issues,
    "issue_comment": _issue_comment,
    "pull_request": _pull_request,
    "pull_request_review": _pull_request_review,
    "check_run": _check_run,
    "check_suite": _check_suite,
    "workflow_run": _workflow_run,
    "status": _status,
    "installation": _installation,
    "installation_repositories": _installation,
}
