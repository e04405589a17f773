"""A run's repository on disk: people's commits on the branch, and who may read it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from app.git import Workspace, git
from app.processes import build_worker
from app.redis import RedisProcess
from app.workspace import human_commits, sweep_worktrees


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


def test_a_repository_keeps_its_clone_through_a_rename_and_a_new_one_gets_its_own(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    before = Workspace.for_repo(data, "acme/widgets", "https://example.invalid/a.git", 41)
    renamed = Workspace.for_repo(data, "acme/gadgets", "https://example.invalid/b.git", 41)
    reused = Workspace.for_repo(data, "acme/widgets", "https://example.invalid/a.git", 42)
    assert before.root == renamed.root
    assert reused.root != before.root
    # A run recorded before repository ids were kept still finds a place by name.
    assert Workspace.for_repo(data, "acme/widgets", "u").root.name == "acme__widgets"


async def test_clones_and_worktrees_are_readable_by_this_user_only(tmp_path: Path) -> None:
    workspace = Workspace.for_repo(tmp_path / "data", "acme/private", "https://example.invalid")
    workspace.clone.mkdir(parents=True)  # as a clone leaves it, under the default umask
    await git("init", "--quiet", cwd=workspace.clone)
    await commit(workspace.clone, {"app.py": "PRIVATE = 1\n"}, "private code")

    worktree = await workspace.add_worktree("run-1-step-1", "HEAD")

    assert (worktree / "app.py").is_file()
    assert workspace.root.stat().st_mode & 0o777 == 0o700


async def _clone_with_worktrees(data_dir: Path, names: list[str]) -> tuple[Workspace, list[Path]]:
    workspace = Workspace.for_repo(data_dir, "acme/shop", "https://example.invalid/r.git")
    workspace.clone.mkdir(parents=True)
    await git("init", "--quiet", cwd=workspace.clone)
    await commit(workspace.clone, {"README.md": "x\n"}, "initial")
    return workspace, [await workspace.add_worktree(name, "HEAD") for name in names]


async def _registered(workspace: Workspace) -> list[str]:
    out = await git("worktree", "list", "--porcelain", cwd=workspace.clone)
    return [Path(line.split(" ", 1)[1]).name for line in out.splitlines()
            if line.startswith("worktree ") and "/worktrees/" in line]


async def test_worktrees_left_by_a_killed_worker_are_removed_and_live_ones_kept(
    tmp_path: Path,
) -> None:
    # A worker killed mid-step leaves its worktree (a whole checkout) behind; the step is then
    # failed and retried under a new name, so nothing would ever remove it.
    workspace, (orphan, live) = await _clone_with_worktrees(
        tmp_path, ["r-1-a-1", "r-2-b-1"])
    an_hour_ago = time.time() - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))

    assert await sweep_worktrees(tmp_path, older_than=960) == 1

    assert not orphan.exists() and live.exists()
    assert await _registered(workspace) == ["r-2-b-1"]


async def test_a_worker_starting_after_a_crash_removes_stale_worktrees(
    redis_server: RedisProcess, redis: Any, settings_factory: Any, tmp_path: Path,
) -> None:
    settings = settings_factory()
    workspace, (orphan,) = await _clone_with_worktrees(settings.conductor_data_dir, ["r-1-a-1"])
    long_ago = time.time() - settings.conductor_job_timeout - 3600
    os.utime(orphan, (long_ago, long_ago))

    worker = build_worker(settings, redis_server.url, burst=True, poll_delay=0.01)
    await worker.main()
    await worker.close()

    assert not orphan.exists() and await _registered(workspace) == []


async def test_filters_from_the_hosts_git_config_never_run_on_a_repositorys_files(
    tmp_path: Path, monkeypatch: Any
) -> None:
    # `git lfs install` (or a person's own setup) defines filters in ~/.gitconfig; a repository
    # picks which of its files go through them with one line of .gitattributes.
    home = tmp_path / "home"
    home.mkdir()
    ran = tmp_path / "filter-ran"
    (home / ".gitconfig").write_text(
        f'[filter "lfs"]\n\tsmudge = sh -c "echo ran >> {ran}; cat"\n\trequired = false\n')
    monkeypatch.setenv("HOME", str(home))
    workspace = Workspace(root=tmp_path / "workspace", clone_url="https://example.invalid/r.git")
    workspace.clone.mkdir(parents=True)
    await git("init", "--quiet", cwd=workspace.clone)
    await commit(workspace.clone, {".gitattributes": "*.bin filter=lfs\n", "a.bin": "x\n"},
                 "binary file")

    worktree = await workspace.add_worktree("run-1-step-1", "HEAD")

    assert (worktree / "a.bin").read_text() == "x\n"
    assert not ran.exists()
