"""Repositories that are not the usual shape: another default branch, no commits at all,
Windows line endings, files that a step deletes and renames."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.support import (
    ACCEPT,
    only_run,
    plan,
    pull_requests,
    run_in,
    step,
    steps,
    submits,
)
from tests.emulators.anthropic_api import Match, use_tool
from tests.emulators.harness import PROJECT_FILES, Stack


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
