"""When the model or its API misbehaves, the run ends visibly: a comment saying what went wrong
and what to do, the issue labelled for a human, nothing half pushed, and no job left waiting
or looping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.support import (
    branch_commits,
    issue_record,
    plan,
    pull_requests,
    reviews_accept,
    run_in,
    runs,
    step,
    steps,
    submits,
    timeline,
    writes,
)
from tests.emulators.anthropic_api import Match, fault, use_tool
from tests.emulators.harness import PROJECT_FILES, Stack

ONE_STEP = plan(step("add", "implementer", "Add sub", ["widgets/sub.py"]))


def stop_comment(stack: Stack, number: int) -> str:
    found = stack.wait_for(lambda: [c.body for c in stack.comments(number)
                                    if "stopped run" in c.body], 30, "the stop comment")
    body: str = found[0]
    return body


def stopped(stack: Stack) -> dict[str, Any]:
    run: dict[str, Any] = stack.wait_for(
        lambda: run_in(stack, "needs_human", "verifying"), 60, "the run to end")
    return run


def test_a_wrong_api_key_stops_the_run_and_names_the_setting(tmp_path: Path) -> None:
    wrong = "sk-ant-wrong-0123456789abcdef"
    with Stack(tmp_path, script=[submits(ONE_STEP)],
               env={"ANTHROPIC_API_KEY": wrong}) as stack:
        number = stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "needs_human"
        body = stop_comment(stack, number)
        assert "ANTHROPIC_API_KEY" in body and "/agent retry" in body
        assert wrong not in body and wrong[:20] not in body
        assert [e.status for e in stack.model.message_requests()] == [401]  # not retried
        assert run["plan"] is None and not pull_requests(stack)


def test_a_step_model_the_api_does_not_serve_stops_the_run_with_nothing_pushed(
    tmp_path: Path,
) -> None:
    # claude-opus-4-0 is priced (so the config accepts it) but the API answers 404.
    files = {**PROJECT_FILES, ".github/conductor.yml": "models:\n  implementer: claude-opus-4-0\n"}
    script = [submits(ONE_STEP), reviews_accept(),
              *writes("add", "widgets/sub.py", "def sub(a, b):\n    return a - b\n")]
    with Stack(tmp_path, files=files, script=script) as stack:
        number = stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "needs_human"
        assert steps(stack, run["id"])["add"]["state"] == "failed"
        body = stop_comment(stack, number)
        assert "claude-opus-4-0" in body and "conductor.yml" in body
        statuses = [(e.body["model"], e.status) for e in stack.model.message_requests()]
        assert statuses == [("claude-opus-5-5", 200), ("claude-opus-4-0", 404)]
        assert stack.state.git(stack.repo).refs("refs/heads/conductor/") == {}
        assert not pull_requests(stack)


def test_a_planner_that_keeps_sending_invalid_plans_is_asked_again_then_stopped(
    tmp_path: Path,
) -> None:
    bad = plan(step("a", "wizard", "Do magic", ["widgets/a.py"]),
               step("a", "implementer", "Escape", ["../outside.py"]))
    with Stack(tmp_path, script=[submits(bad)]) as stack:
        number = stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "needs_human"
        body = stop_comment(stack, number)
        assert "still invalid after 3 attempts" in body and "wizard" in body
        assert len(stack.model.message_requests()) == 3  # the first answer and two re-asks
        refusals = [e for e in timeline(stack, run["id"]) if "refused" in e["message"]]
        assert len(refusals) == 3
        assert not pull_requests(stack)
        assert stack.state.git(stack.repo).refs("refs/heads/conductor/") == {}


def test_a_rate_limit_asking_for_an_hour_stops_the_run_instead_of_parking_it(
    tmp_path: Path,
) -> None:
    with Stack(tmp_path, script=[fault("rate_limit", retry_after=3600)]) as stack:
        number = stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "needs_human"
        body = stop_comment(stack, number)
        assert "asked to wait 1 h" in body and "rate limit" in body and "/agent retry" in body
        assert [e.status for e in stack.model.message_requests()] == [429]  # not slept on


def test_a_step_whose_api_calls_fail_is_retried_and_its_usage_counted_once(
    tmp_path: Path,
) -> None:
    # Calls: 1 plan, 2 write; 3-6 the finish fails with 500s (the client's three retries), so
    # the step's job is deferred and runs again from the start: 7 write, 8 finish, 9 review.
    script = [fault("api_error", match=Match(call=[3, 4, 5, 6])), *one_step()]
    with Stack(tmp_path, script=script) as stack:
        stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "verifying", run.get("stop_reason")
        answered = [e for e in stack.model.message_requests() if e.status == 200]
        assert [e.status for e in stack.model.message_requests()][2:6] == [500] * 4
        [pr] = pull_requests(stack)
        body = issue_record(stack, pr.number).body
        total = next(line for line in body.splitlines() if line.startswith("| **total**"))
        cells = [c.strip() for c in total.strip("|").split("|")]
        usage = [e.response["usage"] for e in answered]
        # The call that got no answer (one call to the trace, however often the client
        # retried it in place) is listed apart, as failed, with no tokens.
        assert cells[2] == f"{len(answered)} (1 failed)"
        expected = [sum(u["input_tokens"] for u in usage),
                    sum(u["output_tokens"] for u in usage),
                    sum(u["cache_read_input_tokens"] for u in usage),
                    sum(u["cache_creation_input_tokens"] for u in usage)]
        assert [int(c.replace(",", "")) for c in cells[3:7]] == expected
        assert len(branch_commits(stack, run["branch"])) == 1
        assert len(runs(stack)) == 1


def one_step() -> list[Any]:
    return [submits(ONE_STEP), reviews_accept(),
            *writes("add", "widgets/sub.py", "def sub(a, b):\n    return a - b\n", attempts=2)]



def test_a_model_answer_slower_than_the_job_timeout_stops_the_run_instead_of_stranding_it(
    tmp_path: Path,
) -> None:
    # arq cancels a job at its timeout and does not run it again: without a reason recorded
    # first, the run would say "planning" forever.
    slow = use_tool("submit_plan", ONE_STEP, match=Match(tool="submit_plan"), delay=14)
    with Stack(tmp_path, script=[slow], job_timeout=10) as stack:
        number = stack.label_issue("Add sub", "")
        run = stopped(stack)
        assert run["status"] == "needs_human"
        body = stop_comment(stack, number)
        assert "planning failed" in body and "CONDUCTOR_JOB_TIMEOUT" in body
        assert run["plan"] is None and not pull_requests(stack)
