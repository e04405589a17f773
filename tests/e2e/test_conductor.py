"""A labeled issue becomes a planned, parallel, reviewed set of commits and a draft PR.

Everything real but GitHub and the model: `conductor web` and `conductor worker` processes,
Redis, git over smart HTTP. The model stand-in plays the orchestrator, workers and reviewer.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx

from tests.e2e.support import (
    branch_commits,
    issue_record,
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
from tests.emulators.anthropic_api import Match, use_tool
from tests.emulators.harness import Stack

THREE_STEPS = plan(
    step("sub", "implementer", "Add subtract", ["widgets/sub.py"]),
    step("mul", "implementer", "Add multiply", ["widgets/mul.py"]),
    step("tests", "test_engineer", "Test subtract and multiply", ["tests/test_ops.py"],
         depends_on=["sub", "mul"]),
)


def test_three_step_plan_runs_in_parallel_and_opens_a_draft_pr(tmp_path: Path) -> None:
    script = [
        submits(THREE_STEPS),
        reviews_accept(),
        # The model takes a moment per edit, so that overlapping windows are measurable.
        *writes("sub", "widgets/sub.py", "def sub(a, b):\n    return a - b\n", delay=1.0),
        *writes("mul", "widgets/mul.py", "def mul(a, b):\n    return a * b\n", delay=1.0),
        *writes("tests", "tests/test_ops.py",
                "from widgets.sub import sub\nfrom widgets.mul import mul\n\n\n"
                "def test_ops():\n    assert sub(5, 3) == 2 and mul(2, 3) == 6\n"),
    ]
    # With GitHub's advised second between writes, as a user's deployment has it by default.
    with Stack(tmp_path, script=script, workers=1, worker_concurrency=4, run_concurrency=2,
               env={"CONDUCTOR_GITHUB_WRITE_INTERVAL": "1"}) as stack:
        number = stack.label_issue("Add subtract and multiply", "We need sub() and mul().")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human", "failed"), 90,
                             "the run to open its pull request")
        assert run["status"] == "verifying", run.get("stop_reason")

        records = steps(stack, run["id"])
        assert {s: r["state"] for s, r in records.items()} == {
            "sub": "done", "mul": "done", "tests": "done"}
        sub, mul, tests = records["sub"], records["mul"], records["tests"]
        # A and B ran at the same time; C started only after both had finished.
        assert sub["started_at"] < mul["finished_at"] and mul["started_at"] < sub["finished_at"]
        assert tests["started_at"] >= max(sub["finished_at"], mul["finished_at"])

        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 3
        for message in commits:
            assert f"Conductor-Run: {run['id']}" in message
        assert sorted(m.splitlines()[-1] for m in commits) == [
            "Conductor-Step: mul", "Conductor-Step: sub", "Conductor-Step: tests"]

        [pull] = pull_requests(stack)
        assert pull.draft and pull.head_ref == run["branch"] and pull.base_ref == "main"
        body = issue_record(stack, pull.number).body
        assert f"Closes #{number}" in body
        for step_id in ("sub", "mul", "tests"):
            assert f"Rationale for {step_id}" in body or f"{step_id} needs" in body
        assert "```mermaid\ngantt" in body and "## Timeline" in body
        assert "claude-opus-5-5" in body and "claude-sonnet-5-5" in body

        def tracking() -> str:
            return next(c.body for c in stack.comments(number) if "conductor:tracking" in c.body)

        stack.wait_for(lambda: f"/pull/{pull.number}" in tracking(), 30,
                       "the tracking comment to link the pull request")
        assert tracking().count("- [x]") == 3
        assert any(r.content == "eyes" for r in stack.state.reactions.values()
                   if r.subject == "issue")
        kinds = [e["kind"] for e in timeline(stack, run["id"])]
        assert kinds[0] == "trigger" and "plan" in kinds and kinds.count("push") >= 3

        # The bot's API writes, from parallel steps too, reached GitHub a second apart.
        writes_at = sorted(r.at for r in stack.state.requests
                           if r.auth == "installation" and r.method != "GET"
                           and ".git/" not in r.path)
        assert len(writes_at) >= 8
        # Slots a second apart; an arrival may trail its slot by the request's own jitter (a
        # few tenths on a machine busy with other tests), never by enough to make a burst.
        assert all(b - a >= 0.5 for a, b in itertools.pairwise(writes_at))
        assert writes_at[-1] - writes_at[0] >= (len(writes_at) - 1) * 1.0 - 0.5

        # A teammate who may read the repository opens the run on the dashboard.
        page = dashboard_page(stack, "rita", f"/dashboard/runs/{run['id']}")
        for shown in ("sub", "mul", "tests", "Rationale for sub", "claude-sonnet-5-5",
                      f"#{pull.number}", "verifying"):
            assert shown in page, shown


def test_a_plan_that_changes_nothing_ends_without_a_pull_request(tmp_path: Path) -> None:
    survey = plan(step("survey", "navigator", "Survey widgets/core.py", []))
    script = [submits(survey), use_tool("finish_step", {
        "summary": "add() returns a + b.", "rationale": "Answering the question.",
        "uncertainties": ""}, match=Match(tool="finish_step"))]
    with Stack(tmp_path, script=script) as stack:
        number = stack.label_issue("How is add() implemented?", "")
        run = stack.wait_for(lambda: run_in(stack, "done", "needs_human", "failed"), 60,
                             "the run to end")
        assert run["status"] == "done" and "changed nothing" in run["stop_reason"]
        assert not pull_requests(stack)
        stack.wait_for(lambda: any("finished run" in c.body for c in stack.comments(number)),
                       30, "the closing comment")


def dashboard_page(stack: Stack, login: str, path: str) -> str:
    """`path` on the bot's dashboard, signed in with GitHub as `login` (the emulator's
    authorize page takes the signed-in user's token as the browser's session)."""
    with httpx.Client(base_url=stack.web_url, timeout=10) as browser:
        to_github = browser.get(browser.get(path).headers["location"]).headers["location"]
        back = httpx.get(to_github,
                         headers={"Authorization": f"token {stack.state.user_token(login)}"})
        assert back.status_code == 302, back.text
        landed = browser.get(back.headers["location"])
        assert landed.headers["location"] == path
        page = browser.get(path)
        assert page.status_code == 200, page.text
        return page.text
