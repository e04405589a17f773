"""Checks on a step's parsed diff: scope, protected paths, unsafe paths, size per step and run.

Pure functions of the diff, the step's file globs, the limits and what the run already changed.
Every refusal names its rule and says, in one sentence, what to do instead; the same sentence
goes to the model (to fix its change) and to the run's timeline (for the human).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.diffs import ChangeStatus, FileChange
from app.globs import matches, matches_any
from app.limits import SECRET_PATHS, Limits

CONFIG_FILE = ".github/conductor.yml"


@dataclass(frozen=True)
class Violation:
    rule: str
    path: str | None
    message: str


@dataclass(frozen=True)
class RunTotals:
    """What the run's finished steps changed so far."""

    files: set[str] = field(default_factory=set)
    lines: int = 0


def outside_files_message(path: str, step_files: Iterable[str]) -> str:
    listed = ", ".join(step_files) or "none listed"
    return f"{path} is outside this step's files ({listed}); change only those paths"


def protected_pattern(path: str, limits: Limits) -> str | None:
    """The protected pattern `path` falls under, unless the repository allowed it.

    Matched case-insensitively: on a macOS or Windows checkout `.GitHub/Workflows/ci.yml`
    and `.ENV` are the files the patterns protect.
    """
    if any(_folded_match(path, p) for p in limits.allowed_protected):
        return None
    return next((p for p in limits.protected if _folded_match(path, p)), None)


def _folded_match(path: str, pattern: str) -> bool:
    return matches(path.casefold(), pattern.casefold())


def secret_pattern(path: str, allowed: Sequence[str] = ()) -> str | None:
    """The secret-file pattern `path` falls under, matched case-insensitively: such a file is
    never read into a prompt unless the repository's config allows the path by name or glob
    (`protected_paths.allow`; `app/secrets.py` may be ordinary code)."""
    if any(_folded_match(path, p) for p in allowed):
        return None
    return next((p for p in SECRET_PATHS if _folded_match(path, p)), None)


def secret_message(path: str, pattern: str) -> str:
    return (f"{path} may hold keys or credentials (it matches {pattern}), so Conductor does "
            "not read it; work from the code that uses it, or ask for its shape in the issue "
            f"(a maintainer can allow it under protected_paths.allow in {CONFIG_FILE})")


def protected_message(path: str, pattern: str) -> str:
    return (f"{path} is protected by the pattern {pattern}; leave it unchanged (a maintainer "
            f"can allow it by adding {pattern} to protected_paths.allow in {CONFIG_FILE})")


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` is not a plain repository-relative path, or None when it is one."""
    if not path:
        return "it is empty"
    if "\x00" in path:
        return "it contains a NUL byte"
    if "\\" in path:
        return "it contains a backslash"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        # A newline or tab in a name breaks line-based tools, CI scripts and reviews.
        return "it contains a control character such as a newline or tab"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "it contains a '..' component"
    if any(part.casefold() == ".git" for part in parts):
        return "it is inside .git/"
    return None


def check_step_diff(changes: list[FileChange], step_files: list[str], limits: Limits,
                    run_totals: RunTotals) -> list[Violation]:
    """Every rule the step's change breaks; an empty list means the change may be committed."""
    if not changes:
        listed = ", ".join(step_files) or "the step's files"
        return [Violation("empty-change", None,
                          f"this step made no changes; edit {listed} with str_replace or "
                          "create_file before calling finish_step")]
    violations: list[Violation] = []
    for change in changes:
        violations.extend(_check_change(change, step_files, limits))
    violations.extend(_check_sizes(changes, limits, run_totals))
    return violations


def _paths(change: FileChange) -> list[str]:
    if change.old_path is not None and change.old_path != change.path:
        return [change.old_path, change.path]
    return [change.path]


def _check_change(change: FileChange, step_files: list[str], limits: Limits) -> list[Violation]:
    found: list[Violation] = []
    for path in _paths(change):
        reason = unsafe_path_reason(path)
        if reason is not None:
            # Nothing else about such a path is meaningful; one clear refusal is enough.
            found.append(Violation("path-escape", path,
                                   f"{path!r} is not a safe repository path because {reason}; "
                                   "use a plain path relative to the repository root"))
            continue
        pattern = protected_pattern(path, limits)
        if pattern is not None:
            found.append(Violation("protected-path", path, protected_message(path, pattern)))
        if not matches_any(path, step_files):
            found.append(Violation("outside-step-files", path,
                                   outside_files_message(path, step_files)))
    if change.is_symlink:
        found.append(Violation("path-escape", change.path,
                               f"{change.path} is a symbolic link (mode 120000), which steps "
                               "may not add or change; write a regular file instead"))
    if change.is_gitlink:
        found.append(Violation("submodule", change.path,
                               f"{change.path} is a git submodule (mode 160000), which steps "
                               "may not add or change; change files of this repository "
                               "instead"))
    if change.made_executable:
        # CI and people run executable files; a step has no tool that sets the mode.
        found.append(Violation("file-mode", change.path,
                               f"{change.path} would become executable (mode 100755), which "
                               "steps may not do; leave the file's mode as it was"))
    if change.is_binary and change.status is not ChangeStatus.DELETED:
        found.append(Violation("binary-file", change.path,
                               f"{change.path} is a binary file, and steps may only change "
                               "text files; delete it or leave it unchanged"))
    return found


def _check_sizes(changes: list[FileChange], limits: Limits,
                 run_totals: RunTotals) -> list[Violation]:
    found: list[Violation] = []
    files = len(changes)
    lines = sum(change.lines for change in changes)
    if files > limits.max_files_per_step:
        found.append(Violation("too-many-files", None,
                               f"this step changes {files} files, more than the limit of "
                               f"{limits.max_files_per_step} per step; change fewer files"))
    if lines > limits.max_lines_per_step:
        found.append(Violation("too-many-lines", None,
                               f"this step changes {lines} lines (added plus removed), more "
                               f"than the limit of {limits.max_lines_per_step} per step; make a "
                               "smaller change"))
    run_files = len(run_totals.files | {change.path for change in changes})
    if run_files > limits.max_files_per_run:
        found.append(Violation("run-files-limit", None,
                               f"with this step the run would change {run_files} files, more "
                               f"than the limit of {limits.max_files_per_run} per run; change "
                               "fewer files"))
    run_lines = run_totals.lines + lines
    if run_lines > limits.max_lines_per_run:
        found.append(Violation("run-lines-limit", None,
                               f"with this step the run would change {run_lines} lines, more "
                               f"than the limit of {limits.max_lines_per_run} per run; make a "
                               "smaller change"))
    return found


def feedback_for_model(violations: list[Violation]) -> str:
    items = "\n".join(f"{n}. [{v.rule}] {v.message}" for n, v in enumerate(violations, 1))
    return ("Conductor's guardrails refused this change:\n"
            f"{items}\n"
            "Fix each problem in the repository with the tools, then call finish_step again.")
