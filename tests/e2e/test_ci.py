"""CI decides: the emulator's CI runs the repository's tests on every push, the bot reads the
results from webhooks and the API, fixes failures within its budget, re-runs flaky ones,
hands over to a human, and takes `/agent retry` and the Retry button.

Everything real but GitHub and the model, as in test_conductor.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.support import (
    branch_commits,
    issue_record,
    plan,
    pull_requests,
    reviews_accept,
    run_in,
    step,
    submits,
    timeline,
    writes,
)
from tests.emulators.anthropic_api import Match, Rule, use_tool
from tests.emulators.harness import REPO, Stack

FAST_CI = {"CONDUCTOR_CI_SETTLE_SECONDS": "1", "CONDUCTOR_NO_CI_TIMEOUT": "4",
           "CONDUCTOR_RECONCILE_SECONDS": "2"}
SUBTRACT_PLAN = plan(
    step("impl", "implementer", "Add widgets.ops.subtract", ["widgets/ops.py"]),
    step("tests", "test_engineer", "Test subtract", ["tests/test_ops.py"]),
)
BUGGY = "def subtract(a: int, b: int) -> int:\n    return a + b\n"
TEST = ("from widgets.ops import subtract\n\n\n"
        "def test_subtract() -> None:\n    assert subtract(5, 3) == 2\n")
FAILING_TEST = "tests/test_ops.py::test_subtract"


def fix_plan(summary: str = "Make subtract subtract.") -> dict[str, Any]:
    return {"summary": summary, "rationale": "subtract adds its arguments instead of "
            "subtracting them, so test_subtract fails.",
            "steps": [step("sub", "implementer", "Subtract in subtract", ["widgets/ops.py"])]}


def edits(step_id: str, old: str, new: str) -> list[Rule]:
    """The worker of `step_id` replaces `old` with `new` in widgets/ops.py, then finishes."""
    # Only the worker offers str_replace (the reviewer of the step reads its id too).
    match = Match(system=f"Step `{step_id}`", tool="str_replace")
    return [
        use_tool("str_replace", {"path": "widgets/ops.py", "old": old, "new": new},
                 match=match, times=1, rule_name=f"{step_id}-edit"),
        use_tool("finish_step", {"summary": f"Changed {old.strip()} to {new.strip()}.",
                                 "rationale": "CI showed the arithmetic was wrong.",
                                 "uncertainties": ""}, match=match,
                 rule_name=f"{step_id}-finish"),
    ]


def first_run(*fix_rules: Rule) -> list[Rule]:
    return [
        *fix_rules,
        submits(SUBTRACT_PLAN),
        reviews_accept(),
        *writes("impl", "widgets/ops.py", BUGGY),
        *writes("tests", "tests/test_ops.py", TEST),
    ]


def requests_text(stack: Stack, needle: str) -> list[str]:
    """Bodies of model requests that contain `needle`."""
    found = []
    for exchange in stack.model.message_requests():
        text = json.dumps(exchange.body)
        if needle in text:
            found.append(text)
    return found


def labels(stack: Stack, number: int) -> set[str]:
    return set(issue_record(stack, number).labels)


def conductor_checks(stack: Stack) -> list[Any]:
    return [c for c in stack.state.check_runs.values()
            if c.repo_id == stack.repo.id and c.name == "Conductor"]


def test_a_red_ci_is_fixed_from_the_job_log_and_the_pr_becomes_ready(tmp_path: Path) -> None:
    script = first_run(
        use_tool("submit_plan", fix_plan(), match=Match(tool="submit_plan", user="failed CI"),
                 rule_name="fix-plan"),
        *edits("fix1-sub", "return a + b", "return a - b"),
    )
    with Stack(tmp_path, script=script, env=FAST_CI) as stack:
        number = stack.label_issue("Add subtract", "We need subtract(a, b).")
        run = stack.wait_for(lambda: run_in(stack, "done", "needs_human", "failed"), 120,
                             "the run to end")
        assert run["status"] == "done", run.get("stop_reason")

        # CI failed once, on the first push; the fixer saw the failing job's log.
        verified = {a["sha"] for a in run["ci"]}
        conclusions = [r.conclusion for r in stack.ci.results
                       if r.repo == REPO and r.head_sha in verified]
        assert conclusions == ["failure", "success"], conclusions
        [fix_request] = requests_text(stack, "failed CI")
        assert FAILING_TEST in fix_request and "assert 8 == 2" in fix_request
        assert [a["verdict"] for a in run["ci"]] == ["red", "green"]
        assert run["ci"][0]["kind"] == "test failure"

        commits = branch_commits(stack, run["branch"])
        assert [m.splitlines()[-1] for m in commits][-1] == "Conductor-Step: fix1-sub"
        assert len(commits) == 3

        [pull] = pull_requests(stack)
        assert not pull.draft  # marked ready for review through GraphQL
        assert "alice" in pull.requested_reviewers
        assert "agent:done" in labels(stack, number) and "agent:done" in labels(stack, pull.number)
        assert "agent:needs-human" not in labels(stack, number)
        # The body is rendered once more after the run ends, with the whole CI story.
        body = stack.wait_for(lambda: (b := issue_record(stack, pull.number).body)
                              and "✅ passed" in b and b, 10, "the final PR body")
        assert "## CI" in body and "❌ failed" in body
        assert "section CI" in body  # both CI attempts in the Gantt chart
        assert "fix1-sub" in body

        [check] = [c for c in conductor_checks(stack) if c.head_sha == run["head_sha"]]
        assert (check.status, check.conclusion) == ("completed", "success")
        superseded = [c for c in conductor_checks(stack) if c.head_sha != run["head_sha"]]
        assert all(c.status == "completed" and c.conclusion == "neutral" for c in superseded)

        def tracking() -> str:
            return next(c.body for c in stack.comments(number) if "conductor:tracking" in c.body)

        stack.wait_for(lambda: "**Done**" in tracking(), 10, "the tracking comment to say done")
        kinds = [e["message"] for e in timeline(stack, run["id"]) if e["kind"] == "ci"]
        assert any("CI attempt 1" in k and "failed" in k for k in kinds), kinds
        assert any("CI attempt 2" in k and "passed" in k for k in kinds), kinds

