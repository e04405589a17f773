"""Every guardrail rule, triggered by a real change in a real worktree."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.diffs import ChangeStatus, FileChange, parse_diff, worktree_diff
from app.git import git
from app.guardrails import (
    RunTotals,
    Violation,
    check_step_diff,
    feedback_for_model,
    protected_message,
    unsafe_path_reason,
)
from app.limits import Limits
from tests.test_tools import repo_worktree

FILES = {
    "src/api/users.py": "".join(f"def f{n}():\n    return {n}\n" for n in range(50)),
    "src/db.py": "def connect():\n    return None\n",
    "tests/test_api.py": "def test_it():\n    assert True\n",
    "uv.lock": "version = 1\n",
}
STEP = ["src/api/**", "tests/test_api.py"]


@pytest.fixture
async def worktree(tmp_path: Path) -> Path:
    return await repo_worktree(tmp_path, FILES)


async def check(worktree: Path, limits: Limits | None = None,
                totals: RunTotals | None = None, step: list[str] | None = None) -> list[Violation]:
    changes = parse_diff(await worktree_diff(worktree))
    return check_step_diff(changes, STEP if step is None else step, limits or Limits(),
                           totals or RunTotals())


def edit(worktree: Path, path: str, old: str, new: str) -> None:
    target = worktree / path
    target.write_text(target.read_text().replace(old, new, 1))


async def test_a_clean_change_passes(worktree: Path) -> None:
    edit(worktree, "src/api/users.py", "return 1\n", "return 'one'\n")
    (worktree / "src/api/items.py").write_text("ITEMS = []\n")
    edit(worktree, "tests/test_api.py", "assert True", "assert 1 == 1")
    assert await check(worktree) == []


async def test_outside_step_files(worktree: Path) -> None:
    edit(worktree, "src/db.py", "None", "42")
    assert await check(worktree) == [Violation(
        "outside-step-files", "src/db.py",
        "src/db.py is outside this step's files (src/api/**, tests/test_api.py); "
        "change only those paths")]


async def test_a_rename_needs_both_paths_in_the_step(worktree: Path) -> None:
    (worktree / "src/api/users.py").rename(worktree / "src/users.py")
    violations = await check(worktree)
    assert [(v.rule, v.path) for v in violations] == [("outside-step-files", "src/users.py")]


async def test_protected_path_names_the_pattern_and_how_to_allow_it(worktree: Path) -> None:
    workflow = worktree / ".github/workflows/ci.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text("on: push\n")
    violations = await check(worktree, step=[".github/**"])
    assert violations == [Violation(
        "protected-path", ".github/workflows/ci.yml",
        ".github/workflows/ci.yml is protected by the pattern .github/workflows/**; leave it "
        "unchanged (a maintainer can allow it by adding .github/workflows/** to "
        "protected_paths.allow in .github/conductor.yml)")]
    allowed = Limits(allowed_protected=(".github/workflows/**",))
    assert await check(worktree, limits=allowed, step=[".github/**"]) == []


@pytest.mark.parametrize(("path", "pattern"), [
    (".GitHub/Workflows/ci.yml", ".github/workflows/**"),  # one folder on macOS and Windows
    ("src/api/.ENV", "**/.env"),
    ("src/api/Deploy.PEM", "**/*.pem"),
    (".gitmodules", ".gitmodules"),  # where submodules are fetched from
    ("src/api/.gitattributes", "**/.gitattributes"),  # `-diff` folds changes out of review
])
async def test_protected_paths_whatever_their_case(worktree: Path, path: str,
                                                    pattern: str) -> None:
    (worktree / path).parent.mkdir(parents=True, exist_ok=True)
    (worktree / path).write_text("x = 1\n")
    assert await check(worktree, step=["**"]) == [
        Violation("protected-path", path, protected_message(path, pattern))]
    allowed = Limits(allowed_protected=(pattern,))
    assert await check(worktree, limits=allowed, step=["**"]) == []


async def test_a_file_made_executable_is_refused(worktree: Path) -> None:
    (worktree / "src/api/users.py").chmod(0o755)
    (worktree / "src/api/run.sh").write_text("#!/bin/sh\n")
    (worktree / "src/api/run.sh").chmod(0o755)
    assert [(v.rule, v.path) for v in await check(worktree)] == [
        ("file-mode", "src/api/run.sh"), ("file-mode", "src/api/users.py")]
    (worktree / "src/api/users.py").chmod(0o644)  # back as it was: allowed
    (worktree / "src/api/run.sh").chmod(0o644)
    assert await check(worktree) == []


async def test_a_submodule_is_refused(worktree: Path) -> None:
    # No tool can make one (they never write into .git/); the diff is checked anyway.
    nested = worktree / "src/api/vendored"
    nested.mkdir()
    await git("init", "--quiet", cwd=nested)
    (nested / "lib.py").write_text("x = 1\n")
    await git("add", "lib.py", cwd=nested)
    await git("commit", "--quiet", "-m", "nested", cwd=nested)
    assert await check(worktree) == [Violation(
        "submodule", "src/api/vendored",
        "src/api/vendored is a git submodule (mode 160000), which steps may not add or "
        "change; change files of this repository instead")]


async def test_lockfile_is_protected_and_outside(worktree: Path) -> None:
    edit(worktree, "uv.lock", "1", "2")
    violations = await check(worktree)
    assert [(v.rule, v.path) for v in violations] == [
        ("protected-path", "uv.lock"), ("outside-step-files", "uv.lock")]
    assert "protected by the pattern **/uv.lock" in violations[0].message


async def test_symlink_is_a_path_escape(worktree: Path) -> None:
    (worktree / "src/api/etc").symlink_to("/etc")
    assert await check(worktree) == [Violation(
        "path-escape", "src/api/etc",
        "src/api/etc is a symbolic link (mode 120000), which steps may not add or change; "
        "write a regular file instead")]


async def test_backslash_in_a_file_name_is_a_path_escape(worktree: Path) -> None:
    (worktree / "src\\api.py").write_text("x = 1\n")
    assert await check(worktree) == [Violation(
        "path-escape", "src\\api.py",
        "'src\\\\api.py' is not a safe repository path because it contains a backslash; use a "
        "plain path relative to the repository root")]


@pytest.mark.parametrize(("path", "reason"), [
    ("/etc/passwd", "it is absolute"),
    ("src/../../x.py", "it contains a '..' component"),
    (".git/hooks/pre-commit", "it is inside .git/"),
    ("src/.git/config", "it is inside .git/"),
    ("a\x00b", "it contains a NUL byte"),
    ("src\\x.py", "it contains a backslash"),
    ("", "it is empty"),
    ("notes\nREADME.md", "it contains a control character such as a newline or tab"),
    ("tab\there.py", "it contains a control character such as a newline or tab"),
])
def test_unsafe_path_reasons(path: str, reason: str) -> None:
    assert unsafe_path_reason(path) == reason
    change = FileChange(path=path, old_path=None, status=ChangeStatus.ADDED, added_lines=1,
                        removed_lines=0)
    [violation] = check_step_diff([change], ["**"], Limits(), RunTotals())
    assert (violation.rule, violation.path) == ("path-escape", path)
    assert violation.message.endswith(f"because {reason}; use a plain path relative to the "
                                      "repository root")


def test_escaping_path_in_diff_text_is_refused() -> None:
    # git cannot produce this, but a diff from elsewhere could: parse it and refuse it.
    text = ("diff --git a/../escape.py b/../escape.py\nnew file mode 100644\n"
            "--- /dev/null\n+++ b/../escape.py\n@@ -0,0 +1 @@\n+x\n")
    violations = check_step_diff(parse_diff(text), ["**"], Limits(), RunTotals())
    assert [(v.rule, v.path) for v in violations] == [("path-escape", "../escape.py")]


async def test_binary_file(worktree: Path) -> None:
    (worktree / "src/api/logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert await check(worktree) == [Violation(
        "binary-file", "src/api/logo.png",
        "src/api/logo.png is a binary file, and steps may only change text files; delete it "
        "or leave it unchanged")]


async def test_too_many_files_per_step(worktree: Path) -> None:
    for n in range(3):
        (worktree / f"src/api/m{n}.py").write_text("x = 1\n")
    assert await check(worktree, limits=Limits(max_files_per_step=2)) == [Violation(
        "too-many-files", None,
        "this step changes 3 files, more than the limit of 2 per step; change fewer files")]


async def test_too_many_lines_per_step(worktree: Path) -> None:
    (worktree / "src/api/users.py").write_text("pass\n")
    violations = await check(worktree, limits=Limits(max_lines_per_step=40))
    assert violations == [Violation(
        "too-many-lines", None,
        "this step changes 101 lines (added plus removed), more than the limit of 40 per step; "
        "make a smaller change")]


async def test_run_limits_count_earlier_steps(worktree: Path) -> None:
    (worktree / "src/api/new.py").write_text("a = 1\nb = 2\n")
    edit(worktree, "tests/test_api.py", "assert True", "assert 1")
    totals = RunTotals(files={"tests/test_api.py", "src/api/old.py", "README.md"}, lines=99)
    limits = Limits(max_files_per_run=3, max_lines_per_run=100)
    assert await check(worktree, limits=limits, totals=totals) == [
        Violation("run-files-limit", None,
                  "with this step the run would change 4 files, more than the limit of 3 per "
                  "run; change fewer files"),
        Violation("run-lines-limit", None,
                  "with this step the run would change 103 lines, more than the limit of 100 "
                  "per run; make a smaller change"),
    ]
    # the same file changed again counts once
    roomy = Limits(max_files_per_run=4, max_lines_per_run=103)
    assert await check(worktree, limits=roomy, totals=totals) == []


async def test_empty_change(worktree: Path) -> None:
    assert await check(worktree) == [Violation(
        "empty-change", None,
        "this step made no changes; edit src/api/**, tests/test_api.py with str_replace or "
        "create_file before calling finish_step")]


async def test_feedback_for_model(worktree: Path) -> None:
    edit(worktree, "src/db.py", "None", "42")
    (worktree / "src/api/logo.png").write_bytes(b"\x00\x01")
    feedback = feedback_for_model(await check(worktree))
    assert feedback == (
        "Conductor's guardrails refused this change:\n"
        "1. [binary-file] src/api/logo.png is a binary file, and steps may only change text "
        "files; delete it or leave it unchanged\n"
        "2. [outside-step-files] src/db.py is outside this step's files (src/api/**, "
        "tests/test_api.py); change only those paths\n"
        "Fix each problem in the repository with the tools, then call finish_step again.")
