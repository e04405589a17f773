"""GitHub refusing mid-run: a token revoked before the push, a push GitHub declines, a
GraphQL mutation that answers 200 with errors. Each ends in a run that goes on or one that
stops saying what to do."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.support import (
    ACCEPT,
    branch_commits,
    plan,
    pull_requests,
    run_in,
    runs,
    step,
    submits,
    timeline,
    writes,
)
from tests.emulators.anthropic_api import Match, Rule, use_tool
from tests.emulators.harness import PROJECT_FILES, REPO, Stack

SUB = "def sub(a, b):\n    return a - b\n"


def test_a_token_revoked_while_a_step_works_is_replaced_for_the_push(tmp_path: Path) -> None:
    one = plan(step("add", "implementer", "Add sub", ["widgets/sub.py"]))
    # The reviewer answers slowly: the tokens are revoked while the step is under way.
    review = use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"), delay=2.0,
                      rule_name="review")
    with Stack(tmp_path, script=[submits(one), review,
                                 *writes("add", "widgets/sub.py", SUB)]) as stack:
        stack.label_issue("Add sub", "")
        stack.wait_for(lambda: any(e.rule == "add-write" for e in stack.model.requests), 60,
                       "the step's model call")
        stack.state.expire_tokens()  # GitHub no longer accepts the token the step holds
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "verifying", run.get("stop_reason")
        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 1 and "Conductor-Step: add" in commits[0]
        assert len(pull_requests(stack)) == 1
        tokens = [r for r in stack.state.requests if r.path.endswith("/access_tokens")]
        assert len(tokens) >= 2  # the revoked one was replaced


def test_a_push_github_declines_stops_the_run_naming_the_permission(tmp_path: Path) -> None:
    # The repository allows the change; the App was not granted `workflows` (app.yml).
    files = {**PROJECT_FILES,
             ".github/conductor.yml": "protected_paths:\n  allow: [\".github/workflows/**\"]\n"}
    ci = plan(step("ci", "infra", "Add a lint workflow", [".github/workflows/lint.yml"]))
    workflow = "on: push\njobs: {}\n"
    script = [submits(ci), use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"),
                                    rule_name="review"),
              *writes("ci", ".github/workflows/lint.yml", workflow)]
    with Stack(tmp_path, files=files, script=script) as stack:
        number = stack.label_issue("Add CI", "")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "needs_human"
        reason = run["stop_reason"]
        assert "GitHub refused the push" in reason and "`workflows` permission" in reason
        assert "grant it in the App's settings" in reason
        assert "refusing to allow a GitHub App to create or update workflow" in reason
        notice = stack.wait_for(lambda: [c.body for c in stack.comments(number)
                                         if "stopped run" in c.body], 30, "the stop comment")
        assert "`workflows` permission" in notice[0]
        assert not stack.state.git(stack.repo).refs("refs/heads/conductor/")
        assert not pull_requests(stack)


def test_a_refused_ready_for_review_stops_the_run_instead_of_waiting(tmp_path: Path) -> None:
    one = plan(step("add", "implementer", "Add sub", ["widgets/sub.py"]))
    script = [submits(one), use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"),
                                     rule_name="review"),
              *writes("add", "widgets/sub.py", SUB)]
    with Stack(tmp_path, script=script) as stack:
        # GraphQL answers a refused mutation with HTTP 200 and an `errors` list.
        stack.state.add_fault("graphql_error", path="/graphql", count=None)
        stack.label_issue("Add sub", "")
        run = stack.wait_for(lambda: run_in(stack, "needs_human", "done"), 120,
                             "the run to stop after CI passed")
        assert run["status"] == "needs_human"
        assert (f"would not mark pull request #{run['pr_number']} ready for review: "
                "Resource not accessible by integration") in run["stop_reason"]
        [pull] = pull_requests(stack)
        assert pull.draft
        notes = [c.body for c in stack.comments(pull.number) if "needs a human" in c.body]
        assert notes and "Mark it ready by hand" in notes[0]


def a_then_slow_b() -> list[Rule]:
    """Two steps, b after a; b's model call takes 2 s, time for a person to act."""
    two = plan(step("a", "implementer", "Add a", ["widgets/a.py"]),
               step("b", "implementer", "Add b", ["widgets/b.py"], depends_on=["a"]))
    return [submits(two), use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"),
                                   rule_name="review"),
            *writes("a", "widgets/a.py", "A = 1\n"),
            *writes("b", "widgets/b.py", "B = 1\n", delay=2.0)]


def wait_for_b(stack: Stack) -> None:
    stack.wait_for(lambda: any(e.rule == "b-write" for e in stack.model.requests), 60,
                   "step b's model call")


def test_a_person_pushing_to_the_branch_mid_step_is_built_on_not_overwritten(
    tmp_path: Path,
) -> None:
    script = a_then_slow_b()
    with Stack(tmp_path, script=script) as stack:
        stack.label_issue("Add a and b", "")
        wait_for_b(stack)
        branch = runs(stack)[-1]["branch"]
        # While b works, a person pushes to the run's branch: b's push is no fast-forward.
        stack.state.as_user("alice").push(REPO, branch, {"NOTES.md": "by hand\n"}, "Notes")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "verifying", run.get("stop_reason")
        subjects = [m.splitlines()[0] for m in branch_commits(stack, branch)]
        assert subjects == ["Add a", "Notes", "Add b"]
        notes = [e["message"] for e in timeline(stack, run["id"])]
        assert any(n.startswith("push raced another push") for n in notes)
        assert len(pull_requests(stack)) == 1


def test_a_branch_deleted_mid_step_stops_the_run_and_retry_puts_it_back(
    tmp_path: Path,
) -> None:
    script = a_then_slow_b()
    with Stack(tmp_path, script=script) as stack:
        number = stack.label_issue("Add a and b", "")
        wait_for_b(stack)
        run = runs(stack)[-1]
        first = run["head_sha"]
        assert first and branch_commits(stack, run["branch"])[-1].startswith("Add a")
        # While b works, a person deletes the branch (the trash icon on GitHub).
        stack.state.as_user("alice").delete_branch(REPO, run["branch"])

        run = stack.wait_for(lambda: run_in(stack, "cancelled", "verifying", "needs_human"),
                             60, "the run to stop")
        assert run["status"] == "cancelled", run.get("stop_reason")
        assert f"`{run['branch']}` was deleted on GitHub" in run["stop_reason"]
        assert not stack.state.git(stack.repo).refs("refs/heads/conductor/")  # not pushed back
        assert not pull_requests(stack)
        notice = stack.wait_for(lambda: [c.body for c in stack.comments(number)
                                         if "stopped run" in c.body], 30, "the stop comment")
        assert f"put the branch back at `{first[:7]}`" in notice[0]
        assert "stays on the branch" not in notice[0]  # the usual advice would be wrong here

        # `/agent retry` restores the branch at the run's last commit and goes on from b.
        stack.model.script([script[1], *writes("b", "widgets/b.py", "B = 1\n")])
        stack.state.as_user("alice").comment(REPO, number, "/agent retry")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60,
                             "the retried run")
        assert run["status"] == "verifying", run.get("stop_reason")
        subjects = [m.splitlines()[0] for m in branch_commits(stack, run["branch"])]
        assert subjects == ["Add a", "Add b"]
        notes = [e["message"] for e in timeline(stack, run["id"])]
        assert f"branch {run['branch']} restored at {first[:7]} for the retry by @alice" in notes
        assert len(pull_requests(stack)) == 1


def test_a_push_that_github_fails_with_a_5xx_is_tried_again(tmp_path: Path) -> None:
    one = plan(step("add", "implementer", "Add sub", ["widgets/sub.py"]))
    script = [submits(one), use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"),
                                     rule_name="review"),
              *writes("add", "widgets/sub.py", SUB)]
    with Stack(tmp_path, script=script) as stack:
        # GitHub's git front end has a bad moment: the first push answers 502.
        stack.state.add_fault("status", method="POST", path="/*/*.git/git-receive-pack",
                              status=502)
        stack.label_issue("Add sub", "")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 90, "the run")
        assert run["status"] == "verifying", run.get("stop_reason")
        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 1 and "Conductor-Step: add" in commits[0]
        pushes = [r for r in stack.state.requests if r.path.endswith("/git-receive-pack")]
        assert [r.status for r in pushes][:1] == [502] and len(pushes) >= 2
        notes = [e["message"] for e in timeline(stack, run["id"])]
        assert any(n.startswith("GitHub failed the push (error: RPC failed; HTTP 502")
                   and n.endswith("pushing again in 2 s") for n in notes), notes
