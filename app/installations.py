"""Remembering which installations exist and which repositories they cover.

Kept in Redis from `installation` and `installation_repositories` events, so that periodic
work (reconciling runs, rate-limit budgets) knows where to look without asking GitHub.

A repository taken out of the installation stops its active runs at once: Conductor can no
longer read, push or comment there, and each job would otherwise fail its tries one by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    who = event.sender
    # A worker started without App credentials has no services, and so no runs to stop.
    svc: Services | None = ctx.get("services")
    account = installation.get("account") if isinstance(installation.get("account"), dict) else {}
    owner = (account or {}).get("login") or f"installation {installation_id}"
    if event.name == "installation" and action == "deleted":
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(INSTALLATIONS_SET, installation_id)
            await pipe.execute()
        stopped = await _stop_runs(
            svc, installation_id, lambda run: True,
            lambda run: f"Conductor was uninstalled from {owner}{_by(who)}",
            "install the App on the repository again, then comment `/agent retry` on the issue",
            revoked=True)
        return f"installation {installation_id} removed" + _listed(stopped)

    current = await get_installation(redis, installation_id) or {"repositories": []}
    repos = set(current.get("repositories", []))
    if event.name == "installation":
        repos |= _names(event.payload.get("repositories"))
    else:
        repos |= _names(event.payload.get("repositories_added"))
        repos -= _names(event.payload.get("repositories_removed"))
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
        ids = {r["id"] for r in removed if isinstance(r, dict) and isinstance(r.get("id"), int)}
        names = {n.lower() for n in _names(removed)}
        said += _listed(await _stop_runs(
            svc, installation_id, lambda run: _matches(run, ids, names),
            lambda run: f"Conductor lost access to {run.repo}: it was removed from the App's "
                        f"installation{_by(who)}",
            "give the App access to the repository again (the installation's Repository "
            "access settings), then comment `/agent retry` on the issue"))
    elif event.name == "installation" and action == "suspend":
        said += _listed(await _stop_runs(
            svc, installation_id, lambda run: True,
            lambda run: f"Conductor's installation on {owner} was suspended{_by(who)}",
            "unsuspend the installation (its settings page), then comment `/agent retry` on "
            "the issue", revoked=True))
    return said


async def _stop_runs(svc: Services | None, installation_id: int,
                     which: Callable[[Run], bool], reason: Callable[[Run], str], advice: str,
                     *, revoked: bool = False) -> list[str]:
    """Stop the installation's active runs that `which` picks, because Conductor can no longer
    work there, each for `reason(run)`. `revoked`: GitHub revoked the installation's tokens,
    so the cached one is dropped. Returns the stopped runs' ids."""
    if svc is None:
        return []
    if revoked:
        svc.github.forget_token(installation_id)
    stopped = []
    for run in await svc.store.active():
        if run.installation_id != installation_id or not which(run):
            continue
        # Nothing can be written there now (each attempt is noted on the run's timeline):
        # the dashboard and `conductor trace` keep the reason, and what to do.
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, reason(run), notify=False)
        await abort_steps(svc, run)
        await svc.store.log(run.id, "stop", advice)
        stopped.append(run.id)
    return stopped


def _by(who: str | None) -> str:
    return f" by @{who}" if who else ""


def _listed(stopped: list[str]) -> str:
    return f"; stopped {', '.join(stopped)}" if stopped else ""


def _matches(run: Run, ids: set[int], names: set[str]) -> bool:
    if run.repo_id is not None:
        return run.repo_id in ids
    return run.repo.lower() in names


def _names(items: Any) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {r["full_name"] for r in items if isinstance(r, dict) and "full_name" in r}


async def get_installation(redis: Any, installation_id: int) -> dict[str, Any] | None:
    raw = await redis.get(INSTALLATION_KEY.format(id=installation_id))
    return json.loads(raw) if raw else None
