"""Repositories that are not the usual shape: another default branch, no commits at all."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.support import pull_requests, run_in
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

