"""A step's change, taken from its worktree as a unified diff, and that diff parsed per file.

Whether a file is binary is decided by its content, as git does for a file without attributes:
a repository's `.gitattributes` may mark text files `-diff` or `binary` (lockfiles, SVGs, test
snapshots) to shorten its own diffs, which would hide their lines from the guardrails and the
reviewer, or mark a binary file `diff`. The clone's `info/attributes`, which git reads before
any `.gitattributes`, unsets `diff` for every path.

The diff is made without `--binary`: a binary file shows up as git's `Binary files a/x and
b/x differ` line, which is all the guardrails need (they refuse binary changes), and it keeps
the text small and readable on the timeline. The commit itself is made from git's index, not
from this text, so nothing is lost by leaving the binary patch out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchedFile, PatchSet

from app.git import git

SYMLINK_MODE = "120000"
EXECUTABLE_MODE = "100755"
GITLINK_MODE = "160000"  # a submodule: a commit id of another repository

# Options that keep the output in one shape whatever the user's or repository's git config
# says: fixed a/ b/ prefixes, no colour, no external diff or textconv drivers, UTF-8 paths.
DIFF_OPTIONS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "--find-renames", "--no-relative",
    "--src-prefix=a/", "--dst-prefix=b/",
)

_MODE_LINES = {
    "new file mode ": "new",
    "deleted file mode ": "old",
    "old mode ": "old",
    "new mode ": "new",
}
_INDEX_MODE = re.compile(r"^index [0-9a-f]+\.\.[0-9a-f]+ (\d+)$")
DIFF_ATTRIBUTES = "* !diff\n"
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class ChangeStatus(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    RENAMED = "renamed"


class DiffParseError(ValueError):
    """The text is not a unified diff this module can read."""


@dataclass(frozen=True)
class FileChange:
    path: str  # the path after the change (for a deletion: the deleted path)
    old_path: str | None  # the path before the change; None for an added file
    status: ChangeStatus
    added_lines: int
    removed_lines: int
    is_binary: bool = False
    old_mode: str | None = None  # git file modes: 100644, 100755, 120000 (symlink), 160000
    new_mode: str | None = None

    @property
    def lines(self) -> int:
        return self.added_lines + self.removed_lines

    @property
    def is_symlink(self) -> bool:
        """The change leaves a symbolic link at `path` (added, changed or turned into one)."""
        return self.new_mode == SYMLINK_MODE

    @property
    def is_gitlink(self) -> bool:
        """The change adds or moves a submodule's commit, or turns a path into one."""
        return self.new_mode == GITLINK_MODE

    @property
    def made_executable(self) -> bool:
        """The file is executable after the change and was not before (or is new)."""
        return self.new_mode == EXECUTABLE_MODE and self.old_mode != EXECUTABLE_MODE

    @property
    def mode_changed(self) -> bool:
        return (self.old_mode is not None and self.new_mode is not None
                and self.old_mode != self.new_mode)

    @property
    def executable(self) -> bool:
        return self.new_mode == EXECUTABLE_MODE


async def worktree_diff(worktree: Path) -> str:
    """Stage everything in the worktree and return the staged change against HEAD."""
    await _own_diff_attributes(worktree)
    await git("add", "--all", cwd=worktree)
    return await git("-c", "core.quotePath=false", "diff", "--cached", *DIFF_OPTIONS, "HEAD",
                     cwd=worktree)


async def _own_diff_attributes(worktree: Path) -> None:
    common = await git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=worktree)
    attributes = Path(common.strip()) / "info" / "attributes"
    try:
        if attributes.read_text() == DIFF_ATTRIBUTES:
            return
    except FileNotFoundError:
        attributes.parent.mkdir(exist_ok=True)
    # Worktrees of one clone share the file: replace it whole, never leave it half-written.
    partial = attributes.with_name(f"attributes.{os.getpid()}.partial")
    partial.write_text(DIFF_ATTRIBUTES)
    partial.replace(attributes)


def parse_diff(text: str) -> list[FileChange]:
    if not text.strip():
        return []
    try:
        patch = PatchSet(text)
    except UnidiffParseError as exc:
        raise DiffParseError(f"could not parse the diff: {exc}") from exc
    return [_file_change(patched) for patched in patch]


def _file_change(patched: PatchedFile) -> FileChange:
    info = [str(line).rstrip("\n") for line in (patched.patch_info or [])]
    source = str(patched.source_file or "")
    target = str(patched.target_file or "")
    old_mode, new_mode = _modes(info)
    renamed_from = _header_value(info, "rename from ")
    renamed_to = _header_value(info, "rename to ")
    if source == "/dev/null":
        status, path, old_path = ChangeStatus.ADDED, _strip_prefix(target), None
    elif target == "/dev/null":
        path = _strip_prefix(source)
        status, old_path = ChangeStatus.DELETED, path
    elif renamed_from is not None and renamed_to is not None:
        status, path, old_path = ChangeStatus.RENAMED, renamed_to, renamed_from
    else:
        old_path, path = _strip_prefix(source), _strip_prefix(target)
        status = ChangeStatus.RENAMED if old_path != path else ChangeStatus.MODIFIED
    return FileChange(
        path=path,
        old_path=old_path,
        status=status,
        added_lines=int(patched.added),
        removed_lines=int(patched.removed),
        is_binary=bool(patched.is_binary_file),
        old_mode=old_mode,
        new_mode=new_mode,
    )


def _modes(info: list[str]) -> tuple[str | None, str | None]:
    modes: dict[str, str] = {}
    for line in info:
        for prefix, side in _MODE_LINES.items():
            if line.startswith(prefix):
                modes[side] = line[len(prefix):].strip()
        index = _INDEX_MODE.match(line)
        if index:  # `index abc..def 100644`: the mode did not change
            modes.setdefault("old", index.group(1))
            modes.setdefault("new", index.group(1))
    if any(line.startswith("new file mode ") for line in info):
        modes.pop("old", None)
    if any(line.startswith("deleted file mode ") for line in info):
        modes.pop("new", None)
    return modes.get("old"), modes.get("new")


def _header_value(info: list[str], prefix: str) -> str | None:
    for line in info:
        if line.startswith(prefix):
            return unquote(line[len(prefix):])
    return None


def _strip_prefix(name: str) -> str:
    name = unquote(name)
    return name[2:] if name.startswith(("a/", "b/")) else name


def unquote(name: str) -> str:
    """Undo git's C-style quoting of a path (`"a/tab\\there"`); other names pass unchanged."""
    if len(name) < 2 or not (name.startswith('"') and name.endswith('"')):
        return name
    body = name[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\" or i + 1 == len(body):
            out.extend(char.encode())
            i += 1
            continue
        following = body[i + 1]
        if following in _ESCAPES:
            out.append(_ESCAPES[following])
            i += 2
        elif body[i + 1:i + 4].isdigit() and len(body[i + 1:i + 4]) == 3:
            out.append(int(body[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.extend(char.encode())
            i += 1
    return out.decode("utf-8", errors="replace")
