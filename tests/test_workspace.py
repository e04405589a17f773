"""A run's repository on disk: people's commits on the branch, and who may read it."""

from __future__ import annotations

from pathlib import Path

from app.git import Workspace, git
from app.workspace import human_commits


async def commit(clone: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_text(text)
    await git("add", "--all", cwd=clone)
    await git("commit", "--quiet", "-m", message, cwd=clone)
    return (await git("rev-parse", "HEAD", cwd=clone)).strip()


async def test_human_commits_name_files_with_spaces_and_unicode_whole(tmp_path: Path) -> None:
    workspace = Workspace(root=tmp_path / "workspace", clone_url="https://example.invalid/r.git")
    workspace.clone.mkdir(parents=True)
    await git("init", "--quiet", cwd=workspace.clone)
    base = await commit(workspace.clone, {"README.md": "x\n"}, "initial")
    await commit(workspace.clone, {"a.py": "a\n"}, "Bot step\n\nConductor-Run: r1\n")
    head = await commit(workspace.clone, {"docs/user guide.md": "g\n", "café.py": "c\n",
                                          "-rf.txt": "d\n"}, "Docs by a person")
    [person] = await human_commits(workspace, base, head)
    assert person.subject == "Docs by a person"
    assert sorted(person.files) == ["-rf.txt", "café.py", "docs/user guide.md"]


async def test_clones_and_worktrees_are_readable_by_this_user_only(tmp_path: Path) -> None:
    workspace = Workspace.for_repo(tmp_path / "data", "acme/private", "https://example.invalid")
    workspace.clone.mkdir(parents=True)  # as a clone leaves it, under the default umask
    await git("init", "--quiet", cwd=workspace.clone)
    await commit(workspace.clone, {"app.py": "PRIVATE = 1\n"}, "private code")

    worktree = await workspace.add_worktree("run-1-step-1", "HEAD")

    assert (worktree / "app.py").is_file()
    assert workspace.root.stat().st_mode & 0o777 == 0o700
