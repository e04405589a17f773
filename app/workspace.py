"""Per-run access to the repository on the worker's disk, with a fresh token each time."""

from __future__ import annotations

from app.git import Workspace, git
from app.runs import Run
from app.services import Services


def clone_url(svc: Services, repo: str) -> str:
    """The HTTPS clone URL: GITHUB_URL for github.com, the API host for GHES and emulators."""
    web = str(svc.settings.github_url).rstrip("/")
    return f"{web}/{repo}.git"


async def synced(svc: Services, run: Run, *,
                 fresher_than: float | None = None) -> tuple[Workspace, str]:
    """The run's repository fetched up to date (or by a fetch that started after
    `fresher_than`); returns it and a token for pushing."""
    token = await svc.github.installation_token(run.installation_id)
    workspace = Workspace.for_repo(svc.data_dir, run.repo, clone_url(svc, run.repo))
    await workspace.sync(token.token, fresher_than=fresher_than)
    return workspace, token.token


async def remote_branch_head(workspace: Workspace, branch: str) -> str | None:
    out = await git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}",
                    cwd=workspace.clone, check=False)
    return out.strip() or None


async def file_at(workspace: Workspace, commit: str, path: str) -> str | None:
    probe = await git("ls-tree", "--name-only", commit, "--", path, cwd=workspace.clone)
    if not probe.strip():
        return None
    return await git("show", f"{commit}:{path}", cwd=workspace.clone)
