"""The smoke test of the whole system: real processes, real git, real Redis, stand-ins for
GitHub and the model."""

from __future__ import annotations

import json

from app.constants import EVENT_LOG_KEY
from tests.emulators.harness import REPO, Stack


def test_a_labeled_issue_reaches_a_worker_that_clones_and_comments(stack: Stack) -> None:
    state = stack.state
    bot = state.app.bot_login
    number = stack.label_issue("Add subtraction", "Please add `subtract(a, b)` to widgets.core.",
                               as_user="alice")
    issue = state.find_issue(stack.repo, number)
    assert issue is not None

    labeled = stack.hooks.wait_for(lambda d: d.event == "issues" and d.action == "labeled", 30)
    assert labeled.status_code == 202, labeled.response_body
    assert labeled.response_json()["accepted"] is True

    stack.wait_for(
        lambda: [r for r in state.reactions.values()
                 if r.subject == "issue" and r.subject_id == issue.id
                 and r.content == "eyes" and r.user == bot],
        60, "the bot's 👀 reaction on the issue",
    )
    stack.wait_for(lambda: [c for c in stack.comments(number) if c.user == bot],
                   60, "a comment by the bot on the issue")
    fetches = stack.wait_for(
        lambda: [r for r in state.requests
                 if r.path == f"/{REPO}.git/git-upload-pack" and r.status == 200],
        60, "a clone or fetch of the repository",
    )
    assert {(r.auth, r.login) for r in fetches} == {("installation", bot)}


def test_a_user_push_runs_ci_and_the_check_suite_reaches_the_bot(stack: Stack) -> None:
    sha = stack.state.as_user("alice").push(
        REPO, "conductor/issue-9-extra", {"widgets/extra.py": "ANSWER = 42\n"}, "Add extra"
    )
    suite = stack.hooks.wait_for(
        lambda d: d.event == "check_suite" and d.action == "completed"
        and d.payload["check_suite"]["head_sha"] == sha,
        60,
    )
    assert suite.payload["check_suite"]["conclusion"] == "success"
    assert suite.payload["check_suite"]["app"]["slug"] == "github-actions"
    (result,) = [r for r in stack.ci.results if r.head_sha == sha]
    assert result.command == "python -m pytest -q" and "1 passed" in result.output
    assert suite.status_code == 202, suite.response_body
    assert suite.response_json()["accepted"] is True

    events = stack.redis_client()
    logged = stack.wait_for(
        lambda: [entry for entry in map(json.loads, events.lrange(EVENT_LOG_KEY, 0, -1))
                 if entry["delivery"] == suite.guid],
        30, "the check_suite delivery in the bot's event log",
    )
    assert len(logged) == 1
    assert (logged[0]["event"], logged[0]["kind"]) == ("check_suite", "ci_result")
    # No run pushed that commit, so the worker leaves it alone, and says so.
    assert logged[0]["outcome"] == f"ignored: {sha[:7]} is no run's head"
