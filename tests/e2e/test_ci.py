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
from tests.emulators.harness import PROJECT_FILES, REPO, Stack

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


def label_and_wait(stack: Stack, timeout: float, what: str) -> tuple[int, dict[str, Any]]:
    """Label the subtract issue; its number and the run once it has ended."""
    number = stack.label_issue("Add subtract", "We need subtract(a, b).")
    run = stack.wait_for(lambda: run_in(stack, "done", "needs_human", "failed"), timeout, what)
    return number, run


def passing_run() -> list[Rule]:
    """A run whose first push is right: subtract subtracts."""
    return [submits(SUBTRACT_PLAN), reviews_accept(),
            *writes("impl", "widgets/ops.py", BUGGY.replace("+", "-")),
            *writes("tests", "tests/test_ops.py", TEST)]


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
        number, run = label_and_wait(stack, 120, "the run to end")
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
                              and "✅ passed" in b and b, 30, "the final PR body")
        assert "## CI" in body and "❌ failed" in body
        assert "section CI" in body  # both CI attempts in the Gantt chart
        assert "fix1-sub" in body

        check = stack.wait_for(lambda: next(
            (c for c in conductor_checks(stack) if c.head_sha == run["head_sha"]
             and c.conclusion == "success"), None), 30, "the check run to succeed")
        assert check.status == "completed"
        superseded = [c for c in conductor_checks(stack) if c.head_sha != run["head_sha"]]
        assert all(c.status == "completed" and c.conclusion == "neutral" for c in superseded)

        def tracking() -> str:
            return next(c.body for c in stack.comments(number) if "conductor:tracking" in c.body)

        stack.wait_for(lambda: "**Done**" in tracking(), 30, "the tracking comment to say done")
        kinds = [e["message"] for e in timeline(stack, run["id"]) if e["kind"] == "ci"]
        assert any("CI attempt 1" in k and "failed" in k for k in kinds), kinds
        assert any("CI attempt 2" in k and "passed" in k for k in kinds), kinds

        # Merged: the run's outcome is recorded for metrics.
        stack.state.as_user("alice").merge_pull(REPO, pull.number)
        outcome = stack.wait_for(lambda: (run_in(stack, "done") or {}).get("outcome"), 30,
                                 "the outcome")
        assert outcome["merged"] is True and outcome["by"] == "alice"
        assert outcome["lead_time_s"] > 0 and outcome["human_commits_after_pr"] == 0
        assert outcome["ci_attempts"] == 2 and outcome["ci_fixes"] == 1
        [metric] = [json.loads(m) for m in stack.redis_client().lrange("conductor:metrics", 0, -1)]
        assert metric["run"] == run["id"] and metric["merged"] is True



def reactions_on(stack: Stack, comment_id: int) -> list[str]:
    return [r.content for r in stack.state.reactions.values()
            if r.subject == "comment" and r.subject_id == comment_id]


def test_a_human_takes_over_then_retry_with_instructions_finishes(tmp_path: Path) -> None:
    """Budget 1: red, fix 1 red → needs a human. A reader's retry is refused. The Retry
    button tries again (fix 2, still red). A person pushes; `/agent retry` with instructions
    builds on the push and goes green."""
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  max_ci_fix_attempts: 1\n"}
    instructions = "use a dict instead of a list"
    script = first_run(
        use_tool("submit_plan", fix_plan("Third try."),
                 match=Match(tool="submit_plan", user=instructions), rule_name="fix-3"),
        use_tool("submit_plan", fix_plan(), match=Match(tool="submit_plan", user="failed CI"),
                 rule_name="fix-plan"),
        *edits("fix1-sub", "return a + b", "return a * b"),
        *edits("fix2-sub", "return a * b", "return a // b"),
        *edits("fix3-sub", "return a // b", "return a - b"),
    )
    with Stack(tmp_path, files=files, script=script, env=FAST_CI) as stack:
        number, run = label_and_wait(stack, 90, "the run to need a human")
        assert run["status"] == "needs_human", run.get("stop_reason")
        assert [a["verdict"] for a in run["ci"]] == ["red", "red"]
        [pull] = pull_requests(stack)
        assert "agent:needs-human" in labels(stack, number)
        assert "agent:needs-human" in labels(stack, pull.number)
        [diagnosis] = [c.body for c in stack.comments(pull.number) if "needs a human" in c.body]
        assert FAILING_TEST in diagnosis and "**What was tried:**" in diagnosis
        assert "Make subtract subtract." in diagnosis  # fix 1, which did not work
        # Why it stopped instead of trying again: the budget, and how to change it.
        assert "used its 1 CI-fix attempt" in diagnosis
        assert "`limits.max_ci_fix_attempts`" in diagnosis
        check = stack.wait_for(lambda: next(
            (c for c in conductor_checks(stack) if c.head_sha == run["head_sha"]
             and c.conclusion == "failure"), None), 30, "the check run to fail")
        assert check.status == "completed"
        assert [a["identifier"] for a in check.actions] == ["retry"]

        # A reader may not retry: one reply (no reactions: nobody without write access
        # spends the installation's writes), and nothing runs.
        calls = len(stack.model.message_requests())
        refused = stack.state.as_user("rita").comment(REPO, pull.number, "/agent retry")
        stack.wait_for(lambda: any("only people with write" in c.body
                                   for c in stack.comments(pull.number)), 30, "the refusal")
        assert reactions_on(stack, refused.id) == []
        assert len(stack.model.message_requests()) == calls
        assert run_in(stack, "needs_human") is not None

        # The Retry button acts like /agent retry: a fresh budget, fix 2 (still wrong).
        stack.state.as_user("alice").press_check_run_action(check.id, "retry")
        run = stack.wait_for(lambda: (r := run_in(stack, "needs_human", "done"))
                             and len(r["ci"]) == 3 and r, 90, "the retried run to stop again")
        assert [a["verdict"] for a in run["ci"]] == ["red", "red", "red"]
        assert any("pressed **Retry**" in c.body for c in stack.comments(pull.number))
        assert run["retries"][0]["by"] == "alice"

        # A person pushes to the branch; the bot keeps it and builds on it.
        human = stack.state.as_user("alice").push(
            REPO, run["branch"], {"NOTES.md": "Why subtract exists.\n"}, "Explain subtract")
        stack.wait_for(lambda: run_in(stack, "needs_human")["head_sha"] == human, 30,
                       "the bot to see the push")
        retry = stack.state.as_user("alice").comment(REPO, pull.number,
                                                     f"/agent retry {instructions}")
        run = stack.wait_for(lambda: run_in(stack, "done", "needs_human") if len(
            (run_in(stack, "done", "needs_human") or {}).get("retries", [])) == 2 else None,
            120, "the second retry to finish")
        assert run["status"] == "done", run.get("stop_reason")
        assert {"eyes", "rocket"} <= set(reactions_on(stack, retry.id))

        [planning] = requests_text(stack, instructions)[:1]
        assert "maintainer-note" in planning and "What failed" in planning
        assert FAILING_TEST in planning, planning[:6000]
        assert "Explain subtract" in planning, planning[:6000]
        worker = [t for t in requests_text(stack, instructions) if "Step `fix3-sub`" in t]
        assert worker, "the fix step's worker got the instructions too"

        messages = branch_commits(stack, run["branch"])
        subjects = [m.splitlines()[0] for m in messages]
        assert "Explain subtract" in subjects
        assert subjects.index("Explain subtract") < len(subjects) - 1  # the fix is on top
        assert messages[-1].endswith("Conductor-Step: fix3-sub")
        assert not pull_requests(stack)[0].draft
        assert "agent:needs-human" not in labels(stack, number)


def test_a_flaky_failure_is_rerun_without_changing_code(tmp_path: Path) -> None:
    with Stack(tmp_path, script=passing_run(), ci_mode="flaky", env=FAST_CI) as stack:
        _, run = label_and_wait(stack, 90, "the run to end")
        assert run["status"] == "done", run.get("stop_reason")
        assert [a["verdict"] for a in run["ci"]] == ["red", "green"]
        assert run["ci"][0]["sha"] == run["ci"][1]["sha"] == run["head_sha"]
        assert run["ci"][0]["rerun"] is True
        head_results = [r for r in stack.ci.results if r.head_sha == run["head_sha"]]
        assert [(r.attempt, r.conclusion) for r in head_results] == [
            (1, "failure"), (2, "success")]
        assert not requests_text(stack, "failed CI")  # no fix was planned
        assert len(branch_commits(stack, run["branch"])) == 2
        messages = [e["message"] for e in timeline(stack, run["id"])]
        assert any("re-running the failed jobs once" in m for m in messages)


def test_a_repository_without_ci_gets_a_ready_pr_with_a_note(tmp_path: Path) -> None:
    with Stack(tmp_path, script=first_run(), ci_mode="none", env=FAST_CI) as stack:
        number, run = label_and_wait(stack, 60, "the run to end")
        assert run["status"] == "done", run.get("stop_reason")
        assert "nothing verified this change" in run["stop_reason"]
        assert [a["verdict"] for a in run["ci"]] == ["no_ci"]
        waited = run["ci"][0]["finished_at"] - run["ci"][0]["started_at"]
        assert waited >= 4  # the no-CI timeout
        [pull] = pull_requests(stack)
        assert not pull.draft and "agent:done" in labels(stack, number)
        body = stack.wait_for(lambda: (b := issue_record(stack, pull.number).body)
                              and "nothing verified" in b and b, 30, "the note in the PR")
        assert "⚪ no CI reported" in body
        check = stack.wait_for(lambda: next(
            (c for c in conductor_checks(stack) if c.head_sha == run["head_sha"]
             and c.conclusion == "neutral"), None), 30, "the check run to conclude")
        assert check.status == "completed"
        assert "nothing verified" in check.output["summary"]


def test_lost_ci_webhooks_are_made_up_for_by_the_reconcile_job(tmp_path: Path) -> None:
    script = passing_run()
    env = {**FAST_CI, "CONDUCTOR_NO_CI_TIMEOUT": "120"}
    # CI takes a few seconds, so the evaluation the PR queues finds it still running.
    with Stack(tmp_path, script=script, env=env,
               ci_command="sleep 3 && python -m pytest -q") as stack:
        for event in ("check_suite", "check_run", "workflow_run"):
            stack.hooks.drop_next(event, "completed", count=None)
        _, run = label_and_wait(stack, 90, "the run to end")
        assert run["status"] == "done", run.get("stop_reason")
        [attempt] = run["ci"]
        assert attempt["verdict"] == "green"
        assert attempt["finished_at"] - attempt["started_at"] < 60  # not the no-CI timer
        dropped = [d for d in stack.hooks.deliveries("check_suite", "completed")
                   if d.payload["check_suite"]["head_sha"] == run["head_sha"]]
        assert dropped and all(d.status == "dropped" for d in dropped)
        assert not [d for d in stack.hooks.deliveries("check_run", "completed")
                    if d.status != "dropped"]


def test_a_failure_that_is_also_red_on_the_base_branch_is_not_fixed(tmp_path: Path) -> None:
    broken = {**PROJECT_FILES, "tests/test_core.py": (
        "from widgets.core import add\n\n\ndef test_add() -> None:\n    assert add(2, 2) == 5\n")}
    script = passing_run()
    with Stack(tmp_path, files=broken, script=script, env=FAST_CI) as stack:
        # main's own CI is red before the run starts.
        head = stack.state.as_user("alice").push(REPO, "main", {"CHANGES.md": "- x\n"}, "Log")
        stack.wait_for(lambda: [r for r in stack.ci.results if r.head_sha == head], 60,
                       "CI on main")
        _, run = label_and_wait(stack, 90, "the run to stop")
        assert run["status"] == "needs_human", run.get("stop_reason")
        assert run["base_sha"] == head
        assert not requests_text(stack, "failed CI")  # no fix was attempted
        [pull] = pull_requests(stack)
        [diagnosis] = [c.body for c in stack.comments(pull.number) if "needs a human" in c.body]
        assert "also fails on `main`" in diagnosis and "not caused by this pull request" in (
            diagnosis)


def test_a_required_check_that_never_reports_is_handed_to_a_human(tmp_path: Path) -> None:
    script = passing_run()
    with Stack(tmp_path, script=script, env=FAST_CI) as stack:
        stack.state.protect_branch(REPO, "main", contexts=["test", "deploy/preview"])
        _, run = label_and_wait(stack, 90, "the run to stop")
        assert run["status"] == "needs_human", run.get("stop_reason")
        [attempt] = run["ci"]
        assert attempt["verdict"] == "missing"
        assert "deploy/preview" in run["stop_reason"]
        assert pull_requests(stack)[0].draft  # never marked ready


def test_a_hand_over_whose_issue_label_fails_posts_one_diagnosis(tmp_path: Path) -> None:
    """No CI-fix budget, so red CI goes straight to a human; labelling the issue fails three
    times (a 502 each), so the hand-over's job runs four times. People see one diagnosis."""
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  max_ci_fix_attempts: 0\n"}
    with Stack(tmp_path, files=files, script=first_run(), env=FAST_CI) as stack:
        number = stack.label_issue("Add subtract", "We need subtract(a, b).")
        stack.state.add_fault("status", method="POST", path=f"/repos/*/issues/{number}/labels",
                              status=502, count=3)
        run = stack.wait_for(lambda: run_in(stack, "done", "needs_human", "failed"), 120,
                             "the run to need a human")
        assert run["status"] == "needs_human", run.get("stop_reason")
        assert not stack.state.faults, "every fault was hit (and is used up)"
        assert [a["verdict"] for a in run["ci"]] == ["red"]
        assert not requests_text(stack, "failed CI")  # no fix was planned
        [pull] = pull_requests(stack)
        assert "agent:needs-human" in labels(stack, number)
        assert "agent:needs-human" in labels(stack, pull.number)
        [diagnosis] = [c.body for c in stack.comments(pull.number) if "needs a human" in c.body]
        assert FAILING_TEST in diagnosis and "**What failed:**" in diagnosis
        # The issue is not told again: the pull request is where the diagnosis is.
        assert not [c for c in stack.comments(number) if "stopped run" in c.body]
        assert len([e for e in timeline(stack, run["id"]) if e["kind"] == "stop"]) == 1
