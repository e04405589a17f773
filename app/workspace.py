"""Per-run access to the repository on the worker's disk, with a fresh token each time."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from githubkit.exception import RequestFailed

from app.git import (
    GitError,
    RepositoryGone,
    Workspace,
    auth_failed,
    git,
    repository_gone,
    resolve_commit,
)
from app.github import RepositoryUnavailable
from app.logs import get_logger
from app.runs import Run
from app.services import Services

log = get_logger(__name__)


def clone_url(svc: Services, repo: str) -> str:
    """The HTTPS clone URL: GITHUB_URL for github.com, the API host for GHES and emulators."""
    web = str(svc.settings.github_url).rstrip("/")
    return f"{web}/{repo}.git"


def workspace_for(svc: Services, run: Run) -> Workspace:
    """The run's repository on this worker's disk (cloned or not yet)."""
    return Workspace.for_repo(svc.data_dir, run.repo, clone_url(svc, run.repo), run.repo_id)


async def synced(svc: Services, run: Run, *, fresher_than: float | None = None,
                 branch: str | None = None) -> tuple[Workspace, str]:
    """The run's repository fetched up to date (or by a fetch that started after
    `fresher_than`); returns it and a token for pushing. A token GitHub no longer accepts
    (revoked, or expired by GitHub's clock) is replaced once.

    With `branch`, a clone that already has the run's base commit and the branch exactly as
    GitHub has it is used as it is: one API call instead of a fetch."""
    token = await git_token(svc, run)
    workspace = workspace_for(svc, run)
    if branch is not None and await _current(svc, run, workspace, branch):
        return workspace, token
    try:
        try:
            await workspace.sync(token, fresher_than=fresher_than)
        except GitError as exc:
            if not auth_failed(exc.output):
                raise
            fresh = await git_token(svc, run, replaced=True)
            await workspace.sync(fresh, fresher_than=fresher_than)
            return workspace, fresh
    except GitError as exc:
        if repository_gone(exc.output) and not isinstance(exc, RepositoryGone):
            raise RepositoryGone.of(exc, ("fetch",)) from exc
        raise
    return workspace, token


async def git_token(svc: Services, run: Run, *, replaced: bool = False) -> str:
    """A token for git that reaches the run's repository only (a run recorded before runs
    kept the repository's id gets the installation's). With `replaced`, a new one in place
    of one GitHub no longer accepts. GitHub refusing to make one for the repository means the
    installation no longer has it: `RepositoryGone`, as when git cannot find it."""
    try:
        if replaced:
            return await svc.github.replaced_token(run.installation_id, run.repo_id)
        return (await svc.github.installation_token(run.installation_id, run.repo_id)).token
    except RepositoryUnavailable as exc:
        raise RepositoryGone.of(f"Repository not found: GitHub would not make a token for "
                                f"it ({exc})", ("fetch",)) from exc


async def _current(svc: Services, run: Run, workspace: Workspace, branch: str) -> bool:
    if run.base_sha is None or not (workspace.clone / ".git").exists():
        return False
    if await resolve_commit(run.base_sha, workspace.clone) is None:
        return False
    return await branch_head(svc, run, branch) == await remote_branch_head(workspace, branch)


async def branch_head(svc: Services, run: Run, branch: str) -> str | None:
    """The commit `branch` points at on GitHub, or None when there is no such branch."""
    owner, name = run.repo.split("/", 1)
    try:
        async with svc.github.installation(run.installation_id) as gh:
            ref = (await gh.rest.git.async_get_ref(owner, name, f"heads/{branch}")).parsed_data
    except RequestFailed as exc:
        if exc.response.status_code == 404:
            return None
        raise
    return ref.object_.sha


class BranchDeleted(Exception):
    """The run's branch is gone from GitHub after the run pushed to it: someone deleted it.
    The run stops rather than push it back; `/agent retry` restores it (`restore_branch`)."""

    def __init__(self, run: Run) -> None:
        sha = (run.head_sha or "")[:7]
        self.reason = (f"the branch `{run.branch}` was deleted on GitHub; it held this run's "
                       f"commits up to `{sha}`")
        self.advice = (f"Conductor does not push again to a branch someone deleted. Comment "
                       f"`/agent retry` to put the branch back at `{sha}` and go on from where "
                       "the run stopped, or label the issue again to start over.")
        super().__init__(self.reason)


async def check_branch(svc: Services, run: Run) -> None:
    """Raise `BranchDeleted` when the run has pushed and its branch is gone from GitHub. Reads
    the run afresh, and asks GitHub only when the run has pushed (a run's first push costs
    nothing here); call it where the clone has no such branch."""
    fresh = await svc.store.get(run.id) or run
    if fresh.head_sha is not None and await branch_head(svc, fresh, fresh.branch) is None:
        raise BranchDeleted(fresh)


async def restore_branch(svc: Services, run: Run) -> bool | None:
    """Put a deleted branch back at the run's head commit. True: restored; False: GitHub no
    longer has that commit; None: nothing to do (never pushed, or the branch is there)."""
    if run.head_sha is None or await branch_head(svc, run, run.branch) is not None:
        return None
    owner, name = run.repo.split("/", 1)
    try:
        async with svc.github.installation(run.installation_id) as gh:
            await gh.rest.git.async_create_ref(owner, name, ref=f"refs/heads/{run.branch}",
                                               sha=run.head_sha)
    except RequestFailed as exc:
        if exc.response.status_code == 422:  # "Object does not exist" (or it raced back)
            return await branch_head(svc, run, run.branch) == run.head_sha
        raise
    return True


async def remote_branch_head(workspace: Workspace, branch: str) -> str | None:
    return await resolve_commit(f"refs/remotes/origin/{branch}", workspace.clone)


async def file_at(workspace: Workspace, commit: str, path: str) -> str | None:
    probe = await git("ls-tree", "--name-only", commit, "--", path, cwd=workspace.clone)
    if not probe.strip():
        return None
    return await git("show", f"{commit}:{path}", cwd=workspace.clone)


@dataclass(frozen=True)
class HumanCommit:
    sha: str
    author: str
    subject: str
    files: list[str]


async def human_commits(workspace: Workspace, base: str, head: str,
                        limit: int = 20) -> list[HumanCommit]:
    """Commits on `base..head` that Conductor did not make (no `Conductor-Run` trailer),
    oldest first: people's work on the branch, to keep and build on."""
    out = await git("log", "--reverse", f"--max-count={limit * 5}",
                    "--format=%H%x1f%an%x1f%s%x1f%b%x1e", f"{base}..{head}",
                    cwd=workspace.clone)
    found: list[HumanCommit] = []
    for record in out.split("\x1e"):
        parts = record.strip("\n").split("\x1f")  # not strip(): \x1f counts as space
        if len(parts) < 4 or "Conductor-Run:" in parts[3]:
            continue
        # -z: names whole and unquoted (spaces, non-ASCII), not git's "caf\303\251.py"
        files = await git("diff-tree", "--no-commit-id", "--name-only", "-r", "-z", parts[0],
                          cwd=workspace.clone)
        found.append(HumanCommit(sha=parts[0], author=parts[1], subject=parts[2],
                                 files=[name for name in files.split("\0") if name][:20]))
        if len(found) == limit:
            break
    return found


async def sweep_worktrees(data_dir: Path, older_than: float) -> int:
    """Remove the worktrees a dead process left under `data_dir` (a job removes its own when
    it ends, even cancelled; one killed outright cannot, and a step run again gets a new
    one). A worktree untouched for `older_than` seconds (longer than a job may run) belongs
    to no live job. Returns how many were removed."""
    removed = 0
    for worktrees in sorted((data_dir / "workspaces").glob("*/worktrees")):
        workspace = Workspace(root=worktrees.parent, clone_url="")
        if not _stale(worktrees, older_than):
            continue
        async with workspace.locked():
            stale = _stale(worktrees, older_than)  # again: a job may have re-made one
            for path in stale:
                if (workspace.clone / ".git").exists():
                    await git("worktree", "remove", "--force", str(path), cwd=workspace.clone,
                              check=False)
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            if (workspace.clone / ".git").exists():
                await git("worktree", "prune", cwd=workspace.clone, check=False)
        log.info("stale worktrees removed", workspace=worktrees.parent.name,
                 count=len(stale))
    return removed


def _stale(worktrees: Path, older_than: float) -> list[Path]:
    cutoff = time.time() - older_than
    found = []
    for path in worktrees.iterdir():
        try:
            if path.is_dir() and path.stat().st_mtime < cutoff:
                found.append(path)
        except OSError:  # removed meanwhile
            continue
    return found
