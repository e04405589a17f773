"""Who may steer a run: users with write, maintain or admin permission on the repository.

Accounts GitHub does not know as users (bots, deleted accounts) have no permission. Answers
are cached in Redis for a minute: permission changes take effect quickly, and a burst
of commands does not cost a burst of API calls.

`access_by_id` asks about a repository by its id, which a rename keeps, rather than its name,
which a rename gives up and another repository may then take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from githubkit.exception import RequestFailed

from app.github import GitHubApp
from app.logs import get_logger

log = get_logger(__name__)

CACHE_KEY = "conductor:perm:{repo}:{user}"
ID_CACHE_KEY = "conductor:perm:id:{repo_id}:{user}"
CACHE_SECONDS = 60
# The REST field `permission` folds maintain into write and triage into read.
STEERING = frozenset({"admin", "write"})


@dataclass(frozen=True)
class Access:
    """A person's permission on a repository, and the repository's name now (None: the
    installation cannot find it: deleted, transferred away or no longer given to the App)."""

    level: str
    repo: str | None


async def _collaborator_level(gh: Any, repo: str, user: str) -> str:
    owner, name = repo.split("/", 1)
    try:
        response = await gh.rest.repos.async_get_collaborator_permission_level(owner, name, user)
    except RequestFailed as exc:
        # 404 "is not a user": a bot (another App, github-actions) or a deleted account.
        if exc.response.status_code != 404:
            raise
        return "none"
    return str(response.parsed_data.permission)


async def permission(redis: Any, github: GitHubApp, installation_id: int, repo: str,
                     user: str) -> str:
    key = CACHE_KEY.format(repo=repo.lower(), user=user.lower())
    cached = await redis.get(key)
    if cached is not None:
        return cached.decode() if isinstance(cached, bytes) else str(cached)
    async with github.installation(installation_id) as gh:
        level = await _collaborator_level(gh, repo, user)
    await redis.set(key, level, ex=CACHE_SECONDS)
    return level


async def access_by_id(redis: Any, github: GitHubApp, installation_id: int, repo_id: int,
                       user: str) -> Access:
    """`user`'s permission on the repository with id `repo_id`, under the name it has now."""
    key = ID_CACHE_KEY.format(repo_id=repo_id, user=user.lower())
    cached = await redis.get(key)
    if cached is not None:
        data = json.loads(cached)
        return Access(level=data["level"], repo=data["repo"])
    async with github.installation(installation_id) as gh:
        current = await _current_name(gh, repo_id)
        access = Access(level="none", repo=None) if current is None else Access(
            level=await _collaborator_level(gh, current, user), repo=current)
    await redis.set(key, json.dumps({"level": access.level, "repo": access.repo}),
                    ex=CACHE_SECONDS)
    return access


async def _current_name(gh: Any, repo_id: int) -> str | None:
    """The repository's owner/name now; None if GitHub answers 404 (it answers so for a
    repository the installation cannot see, as for one that does not exist)."""
    try:
        # Not in GitHub's OpenAPI description, but what its own redirects for a renamed
        # repository point at, and served like GET /repos/{owner}/{repo}.
        response = await gh.arequest("GET", f"/repositories/{repo_id}")
    except RequestFailed as exc:
        if exc.response.status_code != 404:
            raise
        return None
    data = response.json()
    full_name = data.get("full_name") if isinstance(data, dict) else None
    if not isinstance(full_name, str) or "/" not in full_name:
        # Not a repository as GitHub describes one: nothing to check a permission on.
        log.warning("repository_without_name", repo_id=repo_id)
        return None
    return full_name


async def may_steer(redis: Any, github: GitHubApp, installation_id: int, repo: str,
                    user: str) -> bool:
    return await permission(redis, github, installation_id, repo, user) in STEERING
