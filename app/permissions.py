"""Who may steer a run: users with write, maintain or admin permission on the repository.

Accounts GitHub does not know as users (bots, deleted accounts) have no permission. Answers
are cached in Redis for a minute: permission changes take effect quickly, and a burst
of commands does not cost a burst of API calls.
"""

from __future__ import annotations

from typing import Any

from githubkit.exception import RequestFailed

from app.github import GitHubApp

CACHE_KEY = "conductor:perm:{repo}:{user}"
CACHE_SECONDS = 60
# The REST field `permission` folds maintain into write and triage into read.
STEERING = frozenset({"admin", "write"})


async def permission(redis: Any, github: GitHubApp, installation_id: int, repo: str,
                     user: str) -> str:
    key = CACHE_KEY.format(repo=repo.lower(), user=user.lower())
    cached = await redis.get(key)
    if cached is not None:
        return cached.decode() if isinstance(cached, bytes) else str(cached)
    owner, name = repo.split("/", 1)
    try:
        async with github.installation(installation_id) as gh:
            response = await gh.rest.repos.async_get_collaborator_permission_level(
                owner, name, user)
        level = response.parsed_data.permission
    except RequestFailed as exc:
        # 404 "is not a user": a bot (another App, github-actions) or a deleted account.
        if exc.response.status_code != 404:
            raise
        level = "none"
    await redis.set(key, level, ex=CACHE_SECONDS)
    return level


async def may_steer(redis: Any, github: GitHubApp, installation_id: int, repo: str,
                    user: str) -> bool:
    return await permission(redis, github, installation_id, repo, user) in STEERING
