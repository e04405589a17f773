"""Two issues of one repository, labeled together, with the same title and plans editing
the same file: two runs at once, each with its own branch, commits and pull request."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.support import (
    branch_commits,
    plan,
    pull_requests,
    reviews_accept,
    runs,
    step,
    steps,
    writes,
)
from tests.emulators.anthropic_api import Match, use_tool
from tests.emulators.harness import Stack


def test_two_runs_on_one_repository_each_push_their_own_branch_and_pr(tmp_path: Path) -> None:
    script = [reviews_accept()]
    for number, step_id in ((1, "first"), (2, "second")):
        script.append(use_tool(
            "submit_plan", plan(step(step_id, "implementer", "Add div", ["widgets/div.py"])),
            match=Match(tool="submit_plan", user=f"(#{number} in"), rule_name=f"plan-{number}"))
        # Each worker takes a while, so that the two steps overlap if nothing serialises them.
        script += writes(step_id, "widgets/div.py", f"# {step_id}\n", delay=2.0)
    with Stack(tmp_path, script=script, workers=1, worker_concurrency=4) as stack:
        first = stack.label_issue("Add div", "We need div().")
        second = stack.label_issue("Add div", "We need div(), too.")
        stack.wait_for(lambda: len(runs(stack)) == 2 and all(
            r.get("status") in ("verifying", "needs_human", "failed") for r in runs(stack)),
            120, "both runs to open their pull requests")

        by_issue = {r["issue_number"]: r for r in runs(stack)}
        assert {n: r["status"] for n, r in by_issue.items()} == {
            first: "verifying", second: "verifying"}, [r.get("stop_reason") for r in runs(stack)]
        one, two = by_issue[first], by_issue[second]
        assert one["branch"] != two["branch"]
        # The two steps ran at the same time: no run waited for the other's file.
        a, b = steps(stack, one["id"])["first"], steps(stack, two["id"])["second"]
        assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]

        for run, step_id in ((one, "first"), (two, "second")):
            [message] = branch_commits(stack, run["branch"])
            assert f"Conductor-Run: {run['id']}" in message
            assert message.endswith(f"Conductor-Step: {step_id}")
            content = stack.state.git(stack.repo).out("show", f"{run['branch']}:widgets/div.py")
            assert content.strip() == f"# {step_id}"
        heads = sorted(p.head_ref for p in pull_requests(stack))
        assert heads == sorted([one["branch"], two["branch"]])
