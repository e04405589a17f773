"""All git subprocesses: a cached clone per repository and one worktree per step.

The installation token reaches git only through the environment (`GIT_CONFIG_*` setting an
`http.extraHeader`), never argv (visible in `ps`), `.git/config` or a remote URL on disk.
Repository hooks and configured filters never run, and the host's system and user git config
are not read: the bot does not execute repository code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.logs import redactor

GIT_TIMEOUT = 300.0
_LOCKS: dict[tuple[int, str], asyncio.Lock] = {}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class GitError(Exception):
    def __init__(self, args: Sequence[str], returncode: int, output: str) -> None:
        self.returncode = returncode
        self.output = redactor.scrub(output)
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {self.output.strip()}")


class RepositoryGone(GitError):
    """git cannot find the repository with the installation's token: the App's access to it
    is gone (see `repository_gone`). A run cannot go on; a person must give access back."""

    @classmethod
    def of(cls, error: GitError | str, command: Sequence[str] = ("push",)) -> RepositoryGone:
        if isinstance(error, GitError):
            return cls(command, error.returncode, error.output)
        return cls(command, 1, error)


def auth_failed(output: str) -> bool:
    """Whether git's output says the server did not accept the token (expired, revoked)."""
    return "Authentication failed" in output or "Invalid username or token" in output


# What GitHub's pre-receive checks answer when they refuse a push, and what to do about it.
_REFUSALS = (
    ("without `workflows` permission",
     "the App lacks the `workflows` permission, which changing .github/workflows/ needs: "
     "grant it in the App's settings and accept it on the installation, or leave workflow "
     "files out of the plan"),
    ("GH013",
     "a repository ruleset blocks pushes to `{branch}`: add the App to the ruleset's bypass "
     "list or exclude `conductor/**` from it"),
    ("GH006",
     "branch protection blocks pushes to `{branch}`: exclude `conductor/*` from the "
     "protection rule or allow the App to push"),
    ("repository was archived",
     "the repository is archived, so it is read-only: unarchive it"),
)


def push_refusal(output: str, branch: str) -> str | None:
    """Why GitHub refused a push, naming the fix, or None when git's output is not one of
    GitHub's known refusals. GitHub's own lines (`remote: ...`) follow."""
    for marker, advice in _REFUSALS:
        if marker.lower() in output.lower():
            said = [line.removeprefix("remote:").strip() for line in output.splitlines()
                    if line.startswith("remote:") and line.removeprefix("remote:").strip()]
            detail = f" (GitHub: {' '.join(said)[:300]})" if said else ""
            return f"GitHub refused the push: {advice.format(branch=branch)}{detail}"
    return None


# What git prints when the server or the network failed, not when GitHub refused the push.
_TRANSIENT = re.compile(
    r"returned error: (?:5\d\d|429)|HTTP (?:5\d\d|429)|remote end hung up unexpectedly"
    r"|unexpected disconnect|early EOF|Could not resolve host|Failed to connect"
    r"|Connection (?:timed out|reset|refused)|Operation timed out|SSL_read|gnutls",
    re.IGNORECASE)
_REJECTED = re.compile(r"\[(?:remote )?rejected\]|^remote: error:", re.MULTILINE)


def transient_git_failure(output: str) -> bool:
    """Whether git's output says GitHub's side or the network failed (a 5xx, a dropped
    connection), so that the same command may succeed later; never for a refusal."""
    return bool(_TRANSIENT.search(output)) and not _REJECTED.search(output)


_NOT_FOUND = re.compile(r"Repository not found|fatal: repository '[^']*' not found", re.IGNORECASE)

REPOSITORY_GONE = ("GitHub no longer lets Conductor read the repository (git: repository not "
                   "found): it was removed from the App's installation, deleted, or moved to "
                   "another account. Give the App access to it again, then `/agent retry`")


def repository_gone(output: str) -> bool:
    """Whether git's output says GitHub does not show this token the repository: trying the
    same again will not help (a transient failure reads differently)."""
    return bool(_NOT_FOUND.search(output))


def git_error_line(output: str) -> str:
    """git's first error line, for a timeline entry."""
    for line in output.splitlines():
        if line.startswith(("error:", "fatal:")):
            return line.strip()[:200]
    return output.strip().splitlines()[0][:200] if output.strip() else "no output"


def auth_env(token: str | None) -> dict[str, str]:
    """Environment that makes git send the token as HTTP Basic auth, as GitHub expects."""
    if token is None:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def _base_env(token: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "true",
        # Neither the system's nor this user's git config: a filter, hook path or credential
        # helper set up there for people (git-lfs's, say) must not run on a repository's
        # files or see the bot's token.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "Conductor",
        "GIT_AUTHOR_EMAIL": "conductor@users.noreply.github.com",
        "GIT_COMMITTER_NAME": "Conductor",
        "GIT_COMMITTER_EMAIL": "conductor@users.noreply.github.com",
    }
    env.update(auth_env(token))
    return env


# Options on every command: no hooks, no filters or fsmonitor from the repository.
_SAFE_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "protocol.file.allow=never",
    "-c", "credential.helper=",
)


async def git(
    *args: str,
    cwd: Path | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    time_limit: float = GIT_TIMEOUT,
) -> str:
    process_env = _base_env(token)
    if env:
        process_env.update(env)
    process = await asyncio.create_subprocess_exec(
        "git", *_SAFE_OPTIONS, *args,
        cwd=cwd,
        env=process_env,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(time_limit):
            out, err = await process.communicate(input)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise GitError(args, -1, f"timed out after {time_limit}s") from None
    if check and process.returncode != 0:
        raise GitError(args, process.returncode or 1, (err or out).decode(errors="replace"))
    return out.decode(errors="replace")


async def resolve_commit(name: str, cwd: Path) -> str | None:
    """The commit `name` (a ref or sha) names in the repository at `cwd`, or None."""
    out = await git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=cwd,
                    check=False)
    return out.strip() or None


async def git_ok(*args: str, cwd: Path | None = None, token: str | None = None) -> bool:
    """Whether a git command succeeds (for commands that answer by exit status)."""
    try:
        await git(*args, cwd=cwd, token=token)
    except GitError as exc:
        if exc.returncode < 0:  # timed out: not an answer
            raise
        return False
    return True


@dataclass(frozen=True)
class Workspace:
    """A repository's cached clone under `root`, and worktrees beside it."""

    root: Path
    clone_url: str

    @classmethod
    def for_repo(cls, data_dir: Path, full_name: str, clone_url: str,
                 repo_id: int | None = None) -> Workspace:
        """The repository's place on disk: by GitHub's id when known, so that a renamed
        repository keeps its clone and a new one given the old name does not get it."""
        if repo_id is not None:
            return cls(root=data_dir / "workspaces" / f"id-{repo_id}", clone_url=clone_url)
        safe = _SAFE_NAME.sub("_", full_name.replace("/", "__"))
        return cls(root=data_dir / "workspaces" / safe, clone_url=clone_url)

    @property
    def clone(self) -> Path:
        return self.root / "clone"

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Exclusive use of the shared clone: fetches and worktree changes take git's own
        lock files, and two at once fail. Held across tasks (asyncio lock) and across
        processes sharing the data directory (flock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # The clone of a private repository: for this server's user only, like the token.
        self.root.chmod(0o700)
        key = (id(asyncio.get_running_loop()), str(self.root))
        lock = _LOCKS.setdefault(key, asyncio.Lock())
        async with lock:
            with (self.root / ".lock").open("a") as handle:
                await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    async def sync(self, token: str | None, *, fresher_than: float | None = None) -> None:
        """Clone on first use, fetch afterwards (never re-clone).

        With `fresher_than` (a time.time()), a fetch that started after that moment is as
        good as a new one: parallel steps scheduled together share one fetch.
        """
        async with self.locked():
            stamp = self.root / ".fetched"
            if fresher_than is not None and (self.clone / ".git").exists():
                with contextlib.suppress(OSError, ValueError):
                    if float(stamp.read_text()) >= fresher_than:
                        return
            started = time.time()
            await self._sync(token)
            stamp.write_text(repr(started))

    async def _sync(self, token: str | None) -> None:
        if (self.clone / ".git").exists():
            await git("fetch", "--prune", "--no-tags", "origin", cwd=self.clone, token=token)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / "clone.partial"
        shutil.rmtree(partial, ignore_errors=True)
        await git("clone", "--no-checkout", "--", self.clone_url, str(partial), token=token)
        partial.rename(self.clone)

    async def add_worktree(self, name: str, start: str) -> Path:
        """A fresh worktree named `name` at `start`, replacing a stale one left by a crash."""
        async with self.locked():
            return await self._add_worktree(name, start)

    async def _add_worktree(self, name: str, start: str) -> Path:
        path = self.root / "worktrees" / _SAFE_NAME.sub("_", name)
        if path.exists():
            await git("worktree", "remove", "--force", str(path), cwd=self.clone, check=False)
            shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await git("worktree", "add", "--detach", str(path), start, cwd=self.clone)
        except GitError:
            # A worktree a crashed process left registered: forget it, then try once more.
            await git("worktree", "prune", cwd=self.clone)
            await git("worktree", "add", "--detach", str(path), start, cwd=self.clone)
        return path

    async def remove_worktree(self, path: Path) -> None:
        async with self.locked():
            await git("worktree", "remove", "--force", str(path), cwd=self.clone, check=False)
            shutil.rmtree(path, ignore_errors=True)
