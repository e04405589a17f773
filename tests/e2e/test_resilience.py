"""Nothing lost, nothing done twice: redeliveries, racing labels, a killed worker, a flaky
model, GitHub failing each kind of call once, a budget that runs out, and a labeler who may
not trigger runs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.support import (
    branch_commits,
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
from tests.emulators.anthropic_api import fault
from tests.emulators.harness import PROJECT_FILES, REPO, Stack

ONE_STEP = plan(step("add", "implementer", "Add sub", ["widgets/sub.py"]))


def one_step_script(delay: float = 0.0, attempts: int = 1) -> list[object]:
    return [submits(ONE_STEP), reviews_accept(),
            *writes("add", "widgets/sub.py", "def sub(a, b):\n    return a - b\n", delay=delay,
                    attempts=attempts)]


def test_redeliveries_and_racing_labels_make_one_run_one_branch_one_pr(tmp_path: Path) -> None:
    with Stack(tmp_path, script=one_step_script(delay=0.5)) as stack:
        number = stack.label_issue("Add sub", "")
        [first] = stack.wait_for(lambda: stack.hooks.deliveries("issues", "labeled"), 30,
                                 "the labeled delivery")
        for _ in range(10):
            stack.hooks.redeliver(first.id)
        maggie = stack.state.as_user("maggie")  # maintain: may trigger
        maggie.remove_label(REPO, number, "agent:implement")
        maggie.add_labels(REPO, number, "agent:implement")
        stack.hooks.wait_idle(30)
        answers = [d.response_json() for d in stack.hooks.deliveries("issues", "labeled")]
        assert sum(1 for a in answers if a.get("duplicate")) == 10

        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "verifying"
        assert len(runs(stack)) == 1
        assert len(branch_commits(stack, run["branch"])) == 1
        assert len(pull_requests(stack)) == 1
        branches = [r for r in stack.state.git(stack.repo).refs("refs/heads/conductor/")]
        assert branches == [f"refs/heads/{run['branch']}"]


def test_a_worker_killed_mid_step_is_replaced_and_the_step_commits_once(tmp_path: Path) -> None:
    # The killed worker's model call is answered to nobody; the re-run asks again. Nothing
    # frees what the dead call reserved (~9,700 tokens): the budget has room for the re-run's
    # call, not for both, so the re-run goes on only if the dead reservation has lapsed.
    script = one_step_script(delay=4.0, attempts=2)
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  max_tokens_per_run: 18000\n"}
    with Stack(tmp_path, files=files, script=script, workers=1, job_timeout=10) as stack:
        stack.label_issue("Add sub", "")
        stack.wait_for(lambda: any(e.rule == "add-write" for e in stack.model.requests), 60,
                       "the step's model call")
        assert stack.kill_worker(0, signal.SIGKILL) == -signal.SIGKILL
        stack.add_worker()
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 90,
                             "the step to run again on the new worker")
        assert run["status"] == "verifying", run.get("stop_reason")
        assert steps(stack, run["id"])["add"]["state"] == "done"
        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 1 and "Conductor-Step: add" in commits[0]
        assert len(pull_requests(stack)) == 1
        assert "event handled" in stack.worker_logs(1) or "run_step" in stack.worker_logs(1)
        assert stack.redis_client().exists(f"conductor:run:{run['id']}:holds") == 0


def test_an_overloaded_model_is_retried(tmp_path: Path) -> None:
    script = [fault("overloaded", retry_after=0.01, times=2), *one_step_script()]
    with Stack(tmp_path, script=script) as stack:
        stack.label_issue("Add sub", "")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 60, "the run")
        assert run["status"] == "verifying"
        statuses = [e.status for e in stack.model.message_requests()][:3]
        assert statuses == [529, 529, 200]


def test_budget_exhaustion_stops_the_run_with_a_comment_and_pushes_nothing_half_done(
    tmp_path: Path,
) -> None:
    # Each model call reserves its input plus max_tokens of output before it is sent: with
    # this limit the plan and step a fit, and step b's first call does not.
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  max_tokens_per_run: 14500\n"}
    two = plan(step("a", "implementer", "Add a", ["widgets/a.py"]),
               step("b", "implementer", "Add b", ["widgets/b.py"], depends_on=["a"]))
    script = [submits(two), reviews_accept(), *writes("a", "widgets/a.py", "A = 1\n"),
              *writes("b", "widgets/b.py", "B = 1\n")]
    with Stack(tmp_path, files=files, script=script) as stack:
        number = stack.label_issue("Add a and b", "")
        run = stack.wait_for(lambda: run_in(stack, "needs_human", "verifying"), 60, "the run")
        assert run["status"] == "needs_human"
        assert "budget" in run["stop_reason"] and "max_tokens_per_run" in run["stop_reason"]
        # Step b's job ends after its stop (and the scheduler its end wakes): then count.
        stack.wait_for(lambda: stack.redis_client().exists(
            f"arq:result:step:{run['id']}:b:1"), 30, "step b's job to end")
        # One stop, one notice, and it names the budget: the step failed because of it.
        [notice] = [c.body for c in stack.comments(number) if "stopped run" in c.body]
        assert "budget" in notice and "max_tokens_per_run" in notice and "@alice" in notice
        assert "step b failed" not in notice
        run = run_in(stack, "needs_human")
        assert run is not None and "max_tokens_per_run" in run["stop_reason"]
        assert len([e for e in timeline(stack, run["id"]) if e["kind"] == "stop"]) == 1
        # Every commit on the branch is a whole step; the refused step pushed nothing.
        records = steps(stack, run["id"])
        assert records["a"]["state"] == "done" and records["b"]["state"] == "failed"
        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 1 and "Conductor-Step: a" in commits[0]
        assert not pull_requests(stack)
        assert "agent:needs-human" in stack.state.issues[
            next(i for i, v in stack.state.issues.items() if v.number == number)].labels


def test_a_labeler_without_write_permission_gets_a_polite_no(tmp_path: Path) -> None:
    with Stack(tmp_path, script=one_step_script()) as stack:
        number = stack.label_issue("Add sub", "", as_user="tina")  # triage can label
        reply = stack.wait_for(lambda: [c for c in stack.comments(number)], 30, "the reply")
        assert "only people with write, maintain or admin permission" in reply[0].body
        assert reply[0].body.startswith("@tina")
        stack.hooks.wait_idle(30)
        assert runs(stack) == []
        assert not stack.model.message_requests()


# Every kind of GitHub call a run makes up to its pull request, REST and git.
GITHUB_CALLS = [
    ("POST", "/app/installations/*/access_tokens"), ("POST", "/repos/*/issues/*/reactions"),
    ("POST", "/repos/*/issues/*/comments"), ("PATCH", "/repos/*/issues/comments/*"),
    ("GET", "/repos/*/git/ref/*"),
    ("GET", "/*/*.git/info/refs"), ("POST", "/*/*.git/git-upload-pack"),
    ("POST", "/*/*.git/git-receive-pack"), ("POST", "/repos/*/pulls"),
    ("PATCH", "/repos/*/pulls/*"), ("POST", "/repos/*/check-runs"),
]


@pytest.mark.parametrize("kind", ["status", "drop", "lost_answer"])
def test_github_failing_each_kind_of_call_once_still_makes_one_comment_commit_and_pr(
    tmp_path: Path, kind: str
) -> None:
    # A 502, a connection closed without an answer, or a 502 for a write GitHub made, on the
    # first call of every kind.
    with Stack(tmp_path, script=one_step_script()) as stack:
        for method, path in GITHUB_CALLS:
            stack.state.add_fault(kind, method=method, path=path, status=502)
        number = stack.label_issue("Add sub", "")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human", "failed"), 120,
                             "the run to open its pull request")
        assert run["status"] == "verifying", run.get("stop_reason")
        assert not stack.state.faults, "every fault was hit (and is used up)"
        commits = branch_commits(stack, run["branch"])
        assert len(commits) == 1 and "Conductor-Step: add" in commits[0]
        assert len(pull_requests(stack)) == 1
        bot = stack.state.app.bot_login
        assert len([c for c in stack.comments(number) if c.user == bot]) == 1
        checks = [c for c in stack.state.check_runs.values()
                  if c.app_id == stack.state.app.id and c.head_sha == run["head_sha"]]
        assert len(checks) == 1


def test_a_tracking_comment_github_refuses_for_a_while_does_not_hold_up_the_run(
    tmp_path: Path,
) -> None:
    with Stack(tmp_path, script=one_step_script()) as stack:
        refused = stack.state.add_fault("secondary_rate_limit", method="POST",
                                        path="/repos/*/issues/*/comments", retry_after=1,
                                        count=None)
        number = stack.label_issue("Add sub", "")
        # The run plans while GitHub still refuses the comment.
        stack.wait_for(lambda: stack.model.message_requests(), 60, "the planner's first call")
        assert not stack.comments(number)
        stack.state.remove_fault(refused.id)

        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human", "failed"), 120,
                             "the run to open its pull request")
        assert run["status"] == "verifying", run.get("stop_reason")
        bot = stack.state.app.bot_login
        [tracking] = [c for c in stack.comments(number) if c.user == bot]
        assert "conductor:tracking" in tracking.body


def test_a_start_that_fails_for_good_gives_the_issue_back_for_the_next_label(
    tmp_path: Path,
) -> None:
    with Stack(tmp_path, script=one_step_script()) as stack:
        refused = stack.state.add_fault("secondary_rate_limit", method="POST",
                                        path="/repos/*/issues/*/reactions", retry_after=1,
                                        count=None)
        number = stack.label_issue("Add sub", "")
        said = stack.wait_for(
            lambda: [c for c in stack.comments(number) if "could not finish" in c.body], 90,
            "the start to fail for good and say so")
        assert "remove and add the label again" in said[0].body
        [first] = runs(stack)
        assert first["status"] == "failed" and "could not start" in first["stop_reason"]

        # The advice works: the next label starts a run.
        stack.state.remove_fault(refused.id)
        alice = stack.state.as_user("alice")
        alice.remove_label(REPO, number, "agent:implement")
        alice.add_labels(REPO, number, "agent:implement")
        run = stack.wait_for(lambda: run_in(stack, "verifying", "needs_human"), 120,
                             "the second run to open its pull request")
        assert run["id"] != first["id"] and run["status"] == "verifying"
