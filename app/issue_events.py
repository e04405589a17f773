"""Events on an issue with an active run: the issue closed, deleted or transferred.

Closing the issue before the run opened its pull request means the change is no longer
wanted: the run stops (its running steps are aborted) rather than open a pull request that
closes a closed issue. Once the pull request is open, it is the place to stop the run
(closing it does), and an issue closed by merging it must not cancel anything. A deleted or
transferred issue stops the run whatever its stage: nothing can be written on it any more.
"""

from __future__ import annotations

from typing import Any

from app.events import Event
from app.runs import RunStatus
from app.services import Services
from app.stopping import abort_steps, stop_run


async def handle_issue(ctx: dict[str, Any], event: Event) -> str:
    svc: Services = ctx["services"]
    repo = event.repo_key
    number = (event.payload.get("issue") or {}).get("number")
    if repo is None or not isinstance(number, int):
        return "ignored: no issue"
    run_id = await svc.store.active_run_id(repo, number)
    run = await svc.store.get(run_id) if run_id else None
    if run is None or not run.status.active:
        return "ignored: no active run on the issue"
    if event.action == "closed" and run.pr_number is not None:
        return f"ignored: run {run.id} has pull request #{run.pr_number}"
    who = event.sender or "someone"
    reason = f"issue #{number} was {event.action} by @{who}"
    # The person who closed it knows; the tracking comment says so too.
    await stop_run(svc, run, RunStatus.CANCELLED, reason, notify=False)
    aborted = await abort_steps(svc, run)
    return f"stopped run {run.id}: {reason} ({aborted} running steps aborted)"
