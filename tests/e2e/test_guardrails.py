"""Guardrails are code: refusals are fed back to the model and visible on the run's timeline."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.support import (
    branch_commits,
    only_run,
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
from tests.emulators.harness import PROJECT_FILES, Stack, default_script


def tries(step_id: str, *calls: tuple[str, dict[str, object]]) -> list[object]:
    """The worker of `step_id` makes these tool calls in order, one per turn."""
    match = Match(system=f"Step `{step_id}`")
    return [use_tool(name, args, match=match, times=1, rule_name=f"{step_id}-{i}")
            for i, (name, args) in enumerate(calls)]


def finish(summary: str) -> tuple[str, dict[str, object]]:
    return ("finish_step", {"summary": summary, "rationale": "as planned", "uncertainties": ""})


def test_each_guardrail_refuses_feeds_back_and_is_on_the_timeline(tmp_path: Path) -> None:
    the_plan = plan(
        step("scope", "implementer", "Add scope module", ["widgets/scope.py"]),
        step("escape", "implementer", "Add escape module", ["widgets/escape.py"]),
        step("protect", "implementer", "Add config module", ["widgets/**"]),
        step("size", "implementer", "Add big module", ["widgets/big.py"]),
    )
    script = [
        submits(the_plan),
        reviews_accept(),
        *tries("scope",
               ("create_file", {"path": "widgets/core_extra.py", "content": "x = 1\n"}),
               ("create_file", {"path": "widgets/scope.py", "content": "SCOPE = 1\n"}),
               finish("scope")),
        *tries("escape",
               ("create_file", {"path": "../outside.py", "content": "x = 1\n"}),
               ("create_file", {"path": "widgets/escape.py", "content": "ESCAPE = 1\n"}),
               finish("escape")),
        *tries("protect",
               ("create_file", {"path": "widgets/.env", "content": "TOKEN=abc\n"}),
               finish("protect, first try"),
               ("delete_file", {"path": "widgets/.env"}),
               ("create_file", {"path": "widgets/settings.py", "content": "DEBUG = False\n"}),
               finish("protect")),
        *tries("size",
               ("create_file", {"path": "widgets/big.py",
                                "content": "".join(f"N{i} = {i}\n" for i in range(600))}),
               finish("size, first try"),
               ("delete_file", {"path": "widgets/big.py"}),
               ("create_file", {"path": "widgets/big.py", "content": "N = 1\n"}),
               finish("size")),
    ]
    with Stack(tmp_path, script=script, run_concurrency=4) as stack:
        stack.label_issue("Add four modules", "scope, escape, config and big")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human", "failed"), 90,
                             "the run to finish")
        assert run["status"] == "verifying", run.get("stop_reason")
        refusals = [e for e in timeline(stack, run["id"]) if e["kind"] == "guardrail"]
        by_step = {e["step"]: e["message"] for e in refusals}
        assert "outside this step's files" in by_step["scope"]
        assert "'..'" in by_step["escape"]
        assert "protected-path" in by_step["protect"] and "widgets/.env" in by_step["protect"]
        assert "too-many-lines" in by_step["size"]
        assert all(r["state"] == "done" for r in steps(stack, run["id"]).values())

        # Each refusal went back to the model as an error result for its tool call.
        worker_calls = [e.body for e in stack.model.message_requests()
                        if "Step `protect`" in str(e.body.get("system"))
                        and any(t["name"] == "finish_step" for t in e.body.get("tools", []))]
        last = worker_calls[-1]["messages"]
        assert any("protected" in str(block.get("content")) and block.get("is_error")
                   for message in last if message["role"] == "user"
                   and isinstance(message["content"], list)
                   for block in message["content"] if isinstance(block, dict)
                   and block.get("type") == "tool_result")
        files = "\n".join(branch_commits(stack, run["branch"]))
        assert ".env" not in files


def test_a_cyclic_plan_is_sent_back_with_the_cycle_named(tmp_path: Path) -> None:
    cyclic = plan(step("a", "implementer", "Add a", ["widgets/a.py"], depends_on=["b"]),
                  step("b", "implementer", "Add b", ["widgets/b.py"], depends_on=["a"]))
    fixed = plan(step("a", "implementer", "Add a", ["widgets/a.py"]))
    script = [submits(cyclic, times=1), submits(fixed), reviews_accept(),
              *writes("a", "widgets/a.py", "A = 1\n")]
    with Stack(tmp_path, script=script) as stack:
        stack.label_issue("Add a", "")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "verifying"
        refused = [e["message"] for e in timeline(stack, run["id"]) if e["kind"] == "plan"]
        assert "plan attempt 1 refused" in refused[0] and "cycle" in refused[0]
        second = [e for e in stack.model.message_requests()
                  if any(t["name"] == "submit_plan" for t in e.body.get("tools", []))][-1]
        assert "dependency cycle" in str(second.body["messages"][-1]["content"])


def test_a_large_plan_waits_for_approve_from_a_writer(tmp_path: Path) -> None:
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  approval_steps: 1\n"}
    the_plan = plan(step("a", "implementer", "Add a", ["widgets/a.py"]),
                    step("b", "implementer", "Add b", ["widgets/b.py"]))
    script = [submits(the_plan), reviews_accept(),
              *writes("a", "widgets/a.py", "A = 1\n"), *writes("b", "widgets/b.py", "B = 1\n")]
    with Stack(tmp_path, files=files, script=script) as stack:
        number = stack.label_issue("Add a and b", "")
        run = stack.wait_for(lambda: run_in(stack, "awaiting_approval"), 60,
                             "the plan to wait for approval")
        assert not pull_requests(stack) and not steps(stack, run["id"])["a"]["started_at"]
        stack.wait_for(lambda: any("/agent approve" in c.body for c in stack.comments(number)
                                   if "conductor:tracking" in c.body), 30,
                       "the tracking comment to ask for approval")

        rita = stack.state.as_user("rita")  # read permission: refused
        rita.comment("acme/widgets", number, "/agent approve")
        stack.wait_for(lambda: any("only people with write" in c.body
                                   for c in stack.comments(number)), 30, "the refusal")
        assert only_run(stack)["status"] == "awaiting_approval"

        stack.state.as_user("alice").comment("acme/widgets", number, "/agent approve")
        run = stack.wait_for(lambda: run_in(stack, "verifying"), 60, "the approved run")
        assert any("approved by @alice" in e["message"] for e in timeline(stack, run["id"]))
        assert len(pull_requests(stack)) == 1


def test_a_branch_that_exists_before_the_run_is_left_alone(tmp_path: Path) -> None:
    # Someone pushed a branch with the name the run would take, holding a workflow change no
    # guardrail saw. Building on it would put that change into the bot's pull request.
    with Stack(tmp_path, script=default_script()) as stack:
        number = max([i.number for i in stack.state.issues.values()] + [0]) + 1
        theirs = f"conductor/issue-{number}-add-subtract"
        stack.state.as_user("alice").push(
            "acme/widgets", theirs, {".github/workflows/deploy.yml": "on: push\njobs: {}\n"},
            "their own work")
        assert stack.label_issue("Add subtract", "Please add subtract(a, b).") == number
        run = stack.wait_for(lambda: run_in(stack, "verifying"), 60, "the draft pull request")

        assert run["branch"] == f"{theirs}-2"
        [pull] = pull_requests(stack)
        assert pull.head_ref == run["branch"]
        git = stack.state.git(stack.repo)
        files = git.out("diff", "--name-only", f"refs/heads/main...refs/heads/{run['branch']}")
        assert files.split() == ["widgets/ops.py"]
        assert [c.splitlines()[0] for c in branch_commits(stack, theirs)] == ["their own work"]
        assert any(f"branch {theirs} already exists" in e["message"]
                   for e in timeline(stack, run["id"]))
