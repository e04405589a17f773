"""Repositories that are not the usual shape: another default branch, no commits at all,
Windows line endings, files that a step deletes and renames, a repository renamed mid-run."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.support import (
    ACCEPT,
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
from tests.emulators.harness import PROJECT_FILES, REPO, Stack


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


def test_an_empty_repository_gets_a_clear_answer_and_no_plan(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(files={})
    number = stack.label_issue("Add subtraction", "Please add subtract(a, b).")
    bot = stack.state.app.bot_login
    stopped = stack.wait_for(
        lambda: [c for c in stack.comments(number)
                 if c.user == bot and "stopped run" in c.body], 60,
        "the bot to say why it stopped")
    assert "has no commits" in stopped[0].body and "`main`" in stopped[0].body
    # The notice goes out before the status is saved (stop_run: GitHub first).
    stack.wait_for(lambda: run_in(stack, "needs_human"), 30, "the run to be stopped")
    run = only_run(stack)
    assert "has no commits" in run["stop_reason"]
    assert stack.model.calls == 0  # nothing to plan on, so no model was asked
    assert not pull_requests(stack)
    assert not [line for line in stack.worker_logs(0).splitlines() if "job deferred" in line]


def test_a_step_that_edits_crlf_lines_deletes_and_renames_files_is_committed_whole(
        make_stack: Callable[..., Stack]) -> None:
    files = {**PROJECT_FILES,
             "scripts/build.bat": b"@echo off\r\necho building\r\necho done\r\n",
             "docs/old notes.md": "# Notes\n\nKeep these.\n",
             "docs/-obsolete.txt": "remove me\n"}
    worker = Match(tool="str_replace")
    script = [
        submits(plan(step("tidy", "infra", "Tidy scripts and docs",
                          ["scripts/build.bat", "docs/**"]))),
        use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"), rule_name="review"),
        # `old` is copied from read_file's lines, which have no \r.
        use_tool("str_replace", {"path": "scripts/build.bat",
                                 "old": "echo building\necho done",
                                 "new": "echo building\necho testing\necho done"},
                 match=worker, times=1, rule_name="crlf-edit"),
        use_tool("delete_file", {"path": "docs/-obsolete.txt"}, match=worker, times=1,
                 rule_name="delete"),
        use_tool("delete_file", {"path": "docs/old notes.md"}, match=worker, times=1,
                 rule_name="rename-away"),
        use_tool("create_file", {"path": "docs/notes.md", "content": "# Notes\n\nKeep these.\n"},
                 match=worker, times=1, rule_name="rename-to"),
        use_tool("finish_step", {"summary": "Tidied.", "rationale": "Asked for.",
                                 "uncertainties": ""}, match=worker, rule_name="finish"),
    ]
    stack = make_stack(files=files, script=script)
    stack.label_issue("Tidy scripts and docs", "Add a test line to build.bat; tidy docs/.")
    run = stack.wait_for(lambda: run_in(stack, "verifying", "done", "needs_human", "failed"),
                         90, "the run to open its pull request")
    assert run["status"] in ("verifying", "done"), run.get("stop_reason")
    record = steps(stack, run["id"])["tidy"]
    assert record["state"] == "done"
    assert record["files_changed"] == ["docs/-obsolete.txt", "docs/notes.md",
                                       "scripts/build.bat"]
    git = stack.state.git(stack.repo)
    branch = f"refs/heads/{run['branch']}"
    assert git.out("ls-tree", "-r", "--name-only", branch, "--", "docs", "scripts").split(
        "\n") == ["docs/notes.md", "scripts/build.bat"]
    assert git.run("show", f"{branch}:scripts/build.bat").stdout == (
        b"@echo off\r\necho building\r\necho testing\r\necho done\r\n")
    renames = git.out("diff", "--find-renames", "--name-status", f"{run['base_sha']}..{branch}")
    assert "R100\tdocs/old notes.md\tdocs/notes.md" in renames


def test_a_repository_renamed_while_its_run_waits_keeps_the_run_to_the_end(
        make_stack: Callable[..., Stack]) -> None:
    # The rename comes while the plan waits for approval: the approval, the CI results and the
    # pull request's events all arrive under the new name; the run, which started under the
    # old one, goes on calling GitHub by it and GitHub redirects.
    files = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  approval_steps: 1\n"}
    the_plan = plan(step("a", "implementer", "Add a", ["widgets/a.py"]),
                    step("b", "implementer", "Add b", ["widgets/b.py"]))
    script = [submits(the_plan), reviews_accept(),
              *writes("a", "widgets/a.py", "A = 1\n"), *writes("b", "widgets/b.py", "B = 1\n")]
    stack = make_stack(files=files, script=script, env={"CONDUCTOR_CI_SETTLE_SECONDS": "1"})
    number = stack.label_issue("Add a and b", "")
    stack.wait_for(lambda: run_in(stack, "awaiting_approval"), 60, "the plan to wait")

    stack.state.rename_repo(REPO, "gadgets", by="alice")
    stack.state.as_user("alice").comment("acme/gadgets", number, "/agent approve")
    run = stack.wait_for(lambda: run_in(stack, "done", "needs_human", "failed"), 120,
                         "the approved run to end")
    assert run["status"] == "done", run.get("stop_reason")
    assert run["repo"] == REPO  # as it began

    [pull] = pull_requests(stack)
    assert not pull.draft and pull.head_ref == run["branch"]
    assert [a["verdict"] for a in run["ci"]] == ["green"]
    git = stack.state.git(stack.repo)
    assert git.out("rev-parse", f"refs/heads/{run['branch']}").strip() == run["head_sha"]
    redirected = {r.status for r in stack.state.requests if r.path.startswith(f"/repos/{REPO}/")}
    assert {301, 307} <= redirected  # reads and writes both went by the old name
    assert any("approved by @alice" in e["message"] for e in timeline(stack, run["id"]))

    stack.state.as_user("alice").merge_pull("acme/gadgets", pull.number)
    outcome = stack.wait_for(lambda: (run_in(stack, "done") or {}).get("outcome"), 30,
                             "the merge to be recorded")
    assert outcome["merged"] is True and outcome["by"] == "alice"
