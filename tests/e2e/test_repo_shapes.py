"""Repositories that are not the usual shape: another default branch, no commits at all."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.support import only_run, pull_requests, run_in
from tests.emulators.harness import Stack


def test_a_repository_whose_default_branch_is_trunk_gets_a_pull_request_against_trunk(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(default_branch="trunk")
    stack.label_issue("Add subtraction", "Please add subtract(a, b).")
    run = stack.wait_for(lambda: run_in(stack, "verifying", "done", "needs_human", "failed"),
                         90, "the run to open its pull request")
    assert run["status"] in ("verifying", "done"), run.get("stop_reason")
    [pull] = pull_requests(stack)
    assert pull.base_ref == "trunk" and pull.head_ref == run["branch"]
    git = stack.state.git(stack.repo)
    trunk = git.out("rev-parse", "refs/heads/trunk").strip()
    assert run["base_sha"] == trunk
    assert git.out("merge-base", trunk, f"refs/heads/{run['branch']}").strip() == trunk


def test_an_empty_repository_gets_a_clear_answer_and_no_plan(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(files={})
    number = stack.label_issue("Add subtraction", "Please add subtract(a, b).")
    bot = stack.state.app.bot_login
    stopped = stack.wait_for(
        lambda: [c for c in stack.comments(number)
                 if c.user == bot and "stopped run" in c.body], 60,
        "the bot to say why it stopped")
    assert "has no commits" in stopped[0].body and "`main`" in stopped[0].body
    run = only_run(stack)
    assert run["status"] == "needs_human" and "has no commits" in run["stop_reason"]
    assert stack.model.calls == 0  # nothing to plan on, so no model was asked
    assert not pull_requests(stack)
    assert not [line for line in stack.worker_logs(0).splitlines() if "job deferred" in line]
