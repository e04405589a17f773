"""A step's change taken from a real worktree with git, and parsed per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.diffs import ChangeStatus, DiffParseError, FileChange, parse_diff, unquote, worktree_diff
from app.git import git
from tests.test_tools import repo_worktree

FILES = {
    "README.md": "# Demo\n",
    "src/app.py": "".join(f"line {n}\n" for n in range(1, 21)),
    "src/old_name.py": "".join(f"value_{n} = {n}\n" for n in range(1, 21)),
    "scripts/run.sh": "echo run\n",
    "docs/guide.md": "one\ntwo\nthree\n",
}


@pytest.fixture
async def worktree(tmp_path: Path) -> Path:
    return await repo_worktree(tmp_path, FILES)


async def changes_in(worktree: Path) -> list[FileChange]:
    return parse_diff(await worktree_diff(worktree))


async def test_no_change_is_an_empty_diff(worktree: Path) -> None:
    assert await worktree_diff(worktree) == ""
    assert await changes_in(worktree) == []


async def test_added_modified_and_deleted_files(worktree: Path) -> None:
    (worktree / "src/new.py").write_text("a = 1\nb = 2\nc = 3\n")
    (worktree / "src/app.py").write_text(FILES["src/app.py"].replace("line 3\n", "line three\n"))
    (worktree / "docs/guide.md").unlink()
    changes = {change.path: change for change in await changes_in(worktree)}
    assert changes["src/new.py"] == FileChange(
        path="src/new.py", old_path=None, status=ChangeStatus.ADDED, added_lines=3,
        removed_lines=0, new_mode="100644")
    assert changes["src/app.py"] == FileChange(
        path="src/app.py", old_path="src/app.py", status=ChangeStatus.MODIFIED, added_lines=1,
        removed_lines=1, old_mode="100644", new_mode="100644")
    assert changes["docs/guide.md"] == FileChange(
        path="docs/guide.md", old_path="docs/guide.md", status=ChangeStatus.DELETED,
        added_lines=0, removed_lines=3, old_mode="100644")
    assert set(changes) == {"src/new.py", "src/app.py", "docs/guide.md"}
    assert changes["src/app.py"].lines == 2


async def test_the_change_stays_staged_for_the_commit(worktree: Path) -> None:
    (worktree / "notes.txt").write_text("note\n")
    await worktree_diff(worktree)
    staged = await git("diff", "--cached", "--name-only", "HEAD", cwd=worktree)
    assert staged.split() == ["notes.txt"]


async def test_renames_are_detected(worktree: Path) -> None:
    (worktree / "src/old_name.py").rename(worktree / "src/new_name.py")
    edited = FILES["src/old_name.py"].replace("value_1 = 1\n", "value_1 = 100\n")
    (worktree / "docs/guide.md").rename(worktree / "docs/manual.md")
    (worktree / "src/new_name.py").write_text(edited)
    changes = {change.path: change for change in await changes_in(worktree)}
    assert changes["src/new_name.py"].status is ChangeStatus.RENAMED
    assert changes["src/new_name.py"].old_path == "src/old_name.py"
    assert (changes["src/new_name.py"].added_lines,
            changes["src/new_name.py"].removed_lines) == (1, 1)
    assert changes["docs/manual.md"] == FileChange(
        path="docs/manual.md", old_path="docs/guide.md", status=ChangeStatus.RENAMED,
        added_lines=0, removed_lines=0)


async def test_binary_files_are_marked(worktree: Path) -> None:
    (worktree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    text = await worktree_diff(worktree)
    assert "Binary files /dev/null and b/logo.png differ" in text
    [change] = parse_diff(text)
    assert (change.path, change.status, change.is_binary, change.lines) == (
        "logo.png", ChangeStatus.ADDED, True, 0)



async def test_the_repositorys_diff_attributes_do_not_decide_what_is_binary(
        tmp_path: Path) -> None:
    # Repositories mark lockfiles and SVGs `-diff` or `binary` to keep their own diffs short;
    # Conductor still needs their lines (guardrails, review), and a real binary file must
    # stay binary however `.gitattributes` labels it.
    worktree = await repo_worktree(tmp_path, {
        ".gitattributes": "*.lock -diff\n*.svg binary\n*.dat diff\n",
        "deps.lock": "a==1\nb==2\n", "icon.svg": "<svg>\n</svg>\n", "blob.dat": "x\n"})
    (worktree / "deps.lock").write_text("a==1\nb==3\nc==4\n")
    (worktree / "icon.svg").write_text("<svg>\n<g/>\n</svg>\n")
    (worktree / "blob.dat").write_bytes(b"\x00\x01\x02")
    changes = {change.path: change for change in await changes_in(worktree)}
    assert (changes["deps.lock"].is_binary, changes["deps.lock"].lines) == (False, 3)
    assert (changes["icon.svg"].is_binary, changes["icon.svg"].lines) == (False, 1)
    assert changes["blob.dat"].is_binary

async def test_executable_bit_change(worktree: Path) -> None:
    (worktree / "scripts/run.sh").chmod(0o755)
    [change] = await changes_in(worktree)
    assert change == FileChange(
        path="scripts/run.sh", old_path="scripts/run.sh", status=ChangeStatus.MODIFIED,
        added_lines=0, removed_lines=0, old_mode="100644", new_mode="100755")
    assert change.mode_changed
    assert change.executable
    assert not change.is_symlink


async def test_symlinks_carry_their_mode(worktree: Path) -> None:
    (worktree / "etc").symlink_to("/etc")
    [change] = await changes_in(worktree)
    assert (change.path, change.status, change.new_mode) == ("etc", ChangeStatus.ADDED, "120000")
    assert change.is_symlink


async def test_a_file_replaced_by_a_symlink(worktree: Path) -> None:
    (worktree / "README.md").unlink()
    (worktree / "README.md").symlink_to("docs/guide.md")
    changes = await changes_in(worktree)
    assert any(change.path == "README.md" and change.is_symlink for change in changes)


async def test_unusual_file_names(worktree: Path) -> None:
    names = ["my file.txt", "naïve.py", 'quote"d.txt', "tab\there.txt", "back\\slash.py"]
    for name in names:
        (worktree / name).write_text("x\n")
    changes = await changes_in(worktree)
    assert sorted(change.path for change in changes) == sorted(names)
    assert all(change.status is ChangeStatus.ADDED for change in changes)


def test_unquote() -> None:
    assert unquote('"a/tab\\there"') == "a/tab\there"
    assert unquote('"b/na\\303\\257ve.py"') == "b/naïve.py"
    assert unquote('"a/q\\"t"') == 'a/q"t'
    assert unquote("a/plain.py") == "a/plain.py"


def test_parse_diff_of_text_git_could_not_make() -> None:
    text = (
        "diff --git a/../escape.py b/../escape.py\n"
        "new file mode 100644\n"
        "index 0000000..e69de29\n"
        "--- /dev/null\n"
        "+++ b/../escape.py\n"
        "@@ -0,0 +1 @@\n"
        "+x\n"
    )
    [change] = parse_diff(text)
    assert (change.path, change.status, change.added_lines) == (
        "../escape.py", ChangeStatus.ADDED, 1)


def test_malformed_diff_is_refused() -> None:
    text = (
        "diff --git a/x.py b/x.py\n"
        "--- a/x.py\n"
        "+++ b/x.py\n"
        "@@ -1,2 +1,2 @@\n"
        "+only one line\n"
    )
    with pytest.raises(DiffParseError, match=r"^could not parse the diff: "):
        parse_diff(text)
