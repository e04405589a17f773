"""Remembering which installations exist and which repositories they cover.

Kept in Redis from `installation` and `installation_repositories` events, so that periodic
work (reconciling runs, rate-limit budgets) knows where to look without asking GitHub.

A repository taken out of the installation stops its active runs at once: Conductor can no
longer read, push or comment there, and each job would otherwise fail its tries one by one.
"""

from __future__ import annotations

import json
from typing import Any

from app.events import Event
from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import abort_steps, stop_run

INSTALLATION_KEY = "conductor:installation:{id}"
INSTALLATIONS_SET = "conductor:installations"


async def handle_installation(ctx: dict[str, Any], event: Event) -> str:
    installation = event.payload.get("installation")
    if not isinstance(installation, dict) or not isinstance(installation.get("id"), int):
        return "ignored: no installation id"
    redis = ctx["redis"]
    installation_id = installation["id"]
    key = INSTALLATION_KEY.format(id=installation_id)
    action = event.action
    if event.name == "installation" and action == "deleted":
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(INSTALLATIONS_SET, installation_id)
            await pipe.execute()
        return f"installation {installation_id} removed"

    current = await get_installation(redis, installation_id) or {"repositories": []}
    repos = set(current.get("repositories", []))
    if event.name == "installation":
        repos |= _names(event.payload.get("repositories"))
    else:
        repos |= _names(event.payload.get("repositories_added"))
        repos -= _names(event.payload.get("repositories_removed"))
    account = installation.get("account") if isinstance(installation.get("account"), dict) else {}
    record = {
        "id": installation_id,
        "account": (account or {}).get("login"),
        "suspended": action == "suspend" or (current.get("suspended") and action != "unsuspend"),
        "repositories": sorted(repos),
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps(record))
        pipe.sadd(INSTALLATIONS_SET, installation_id)
        await pipe.execute()
    said = f"installation {installation_id} {action or 'updated'}: {len(repos)} repositories"
    removed = event.payload.get("repositories_removed")
    if event.name == "installation_repositories" and isinstance(removed, list) and removed:
        stopped = await stop_runs_on_removed(ctx["services"], installation_id, removed,
                                             _login(event.payload.get("sender")))
        if stopped:
            said += f"; stopped {', '.join(stopped)}"
    return said


async def stop_runs_on_removed(svc: Services, installation_id: int,
                               removed: list[Any], who: str | None) -> list[str]:
    """Stop the active runs of `installation_id` on the `removed` repositories (webhook
    repository objects: id and full_name). Returns the stopped runs' ids."""
    ids = {r["id"] for r in removed if isinstance(r, dict) and isinstance(r.get("id"), int)}
    names = {n.lower() for n in _names(removed)}
    stopped = []
    for run in await svc.store.active():
        if run.installation_id != installation_id or not _matches(run, ids, names):
            continue
        by = f" by @{who}" if who else ""
        reason = (f"Conductor lost access to {run.repo}: it was removed from the App's "
                  f"installation{by}")
        # Nothing can be written there now (the attempt is noted on the run's timeline);
        # the dashboard and `conductor trace` keep the reason.
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, reason, notify=False)
        await abort_steps(svc, run)
        await svc.store.log(run.id, "stop", "give the App access to the repository again "
                            "(the installation's Repository access settings), then comment "
                            "`/agent retry` on the issue")
        stopped.append(run.id)
    return stopped


def _matches(run: Run, ids: set[int], names: set[str]) -> bool:
    if run.repo_id is not None:
        return run.repo_id in ids
    return run.repo.lower() in names


def _login(sender: Any) -> str | None:
    login = sender.get("login") if isinstance(sender, dict) else None
    return login if isinstance(login, str) and login else None


def _names(items: Any) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {r["full_name"] for r in items if isinstance(r, dict) and "full_name" in r}


async def get_installation(redis: Any, installation_id: int) -> dict[str, Any] | None:
    raw = await redis.get(INSTALLATION_KEY.format(id=installation_id))
    return json.loads(raw) if raw else None
