"""A repository taken out of Conductor's installation while a run works on it.

GitHub sends `installation_repositories.removed`; from then on the installation's tokens
cannot read, push or comment there. The run stops at once with the reason on its record (the
dashboard and `conductor trace` show it; nothing can be written on the issue), its running
step is aborted, and nothing more is pushed. If that event never arrives, the next git call
that cannot find the repository stops the run with the same advice after one more try, not
after minutes of retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.git import REPOSITORY_GONE
from tests.e2e.support import (
    plan,
    pull_requests,
    reviews_accept,
    run_in,
    step,
    steps,
    submits,
    timeline,
    writes,
)
from tests.emulators.anthropic_api import Rule
from tests.emulators.harness import REPO, Stack

FILES_PLAN = plan(step("a", "implementer", "Add a", ["widgets/a.py"]),
                  step("b", "implementer", "Add b", ["widgets/b.py"]))


def _branch_exists(stack: Stack, branch: str) -> bool:
    heads = stack.state.git(stack.repo).out("for-each-ref", "--format=%(refname)", "refs/heads")
    return f"refs/heads/{branch}" in heads.split()


def _slow_steps() -> list[Rule]:
    # Both steps' workers take a while, so the removal comes while they run.
    return [submits(FILES_PLAN), reviews_accept(),
            *writes("a", "widgets/a.py", "A = 1\n", delay=10.0),
            *writes("b", "widgets/b.py", "B = 1\n", delay=10.0)]


def _wait_for_a_running_step(stack: Stack) -> dict[str, Any]:
    run: dict[str, Any] = stack.wait_for(lambda: (r := run_in(stack, "running")) and any(
        s["state"] == "running" for s in steps(stack, r["id"]).values()) and r, 60,
        "a step to run")
    return run


def test_a_repository_removed_from_the_installation_stops_its_run_at_once(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(script=_slow_steps())
    number = stack.label_issue("Add a and b", "")
    run = _wait_for_a_running_step(stack)

    stack.state.remove_repositories(stack.installation.id, [REPO], sender="maggie")

    stopped = stack.wait_for(lambda: run_in(stack, "needs_human"), 30, "the run to stop")
    assert stopped["id"] == run["id"]
    assert stopped["stop_reason"] == ("Conductor lost access to acme/widgets: it was removed "
                                      "from the App's installation by @maggie")
    removal = stack.hooks.wait_for(lambda d: d.event == "installation_repositories", 30)
    assert removal.status_code == 202
    # The workers were still writing: their steps never finished, and nothing was pushed.
    records = stack.wait_for(lambda: (r := steps(stack, run["id"])) and all(
        s["state"] != "running" for s in r.values()) and r, 30, "the running steps to end")
    assert all(s["state"] == "failed" and s["error"] == "aborted: the run stopped"
               for s in records.values()), records
    assert not _branch_exists(stack, run["branch"])
    assert not pull_requests(stack)
    # What could not be written on GitHub is on the run's timeline, with what to do.
    said = [e["message"] for e in timeline(stack, run["id"])]
    assert any("could not write the stop notice" in m and "404" in m for m in said), said
    assert any("/agent retry" in m and "Repository access" in m for m in said), said
    bot = stack.state.app.bot_login
    assert not [c for c in stack.comments(number) if c.user == bot and "stopped" in c.body]
    for worker in range(len(stack.workers)):
        assert " 500 " not in stack.worker_logs(worker)


def test_without_the_removal_event_the_push_that_cannot_find_it_stops_the_run(
        make_stack: Callable[..., Stack]) -> None:
    # The removal's webhook is lost (GitHub does not deliver it again by itself): the steps'
    # pushes are what find access gone.
    stack = make_stack(script=_slow_steps())
    stack.label_issue("Add a and b", "")
    run = _wait_for_a_running_step(stack)

    stack.hooks.drop_next("installation_repositories")
    stack.state.remove_repositories(stack.installation.id, [REPO], sender="maggie")

    stopped = stack.wait_for(lambda: run_in(stack, "needs_human"), 60, "the run to stop")
    assert stopped["id"] == run["id"]
    assert stopped["stop_reason"] == REPOSITORY_GONE
    assert "/agent retry" in stopped["stop_reason"]
    # The run is stopped first, then the step that found out is recorded, then the others.
    records = stack.wait_for(lambda: (r := steps(stack, run["id"])) and all(
        s["state"] != "running" for s in r.values()) and r, 30, "the running steps to end")
    assert any(s["error"] == REPOSITORY_GONE for s in records.values()), records
    assert all(s["state"] == "failed" for s in records.values()), records
    assert not _branch_exists(stack, run["branch"])
    assert not pull_requests(stack)
    # Stopped on the first refusal, not after minutes of retrying what cannot succeed.
    logs = "\n".join(stack.worker_logs(w) for w in range(len(stack.workers)))
    assert "job deferred" not in logs
