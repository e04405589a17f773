"""Opening the run's draft pull request, or updating it when this job runs again."""

from __future__ import annotations

import time
from typing import Any

from githubkit.exception import RequestFailed

from app import tracking, verify
from app.commands import PR_KEY
from app.logs import get_logger
from app.pulls import upsert_pull_request
from app.runs import RUN_RETENTION, Run, RunStatus
from app.services import Services
from app.stopping import stop_run
from app.workspace import BranchDeleted, check_branch

log = get_logger(__name__)


async def finalize_run(ctx: dict[str, Any], run_id: str) -> str:
    svc: Services = ctx["services"]
    run = await svc.store.get(run_id)
    if run is None:
        return f"unknown run {run_id}"
    if run.status not in (RunStatus.FINALIZING, RunStatus.VERIFYING):
        return f"run {run_id} is {run.status.value}"
    if not any(r.commit for r in (await svc.store.steps(run.id)).values()):
        # Only read-only steps ran (or every change was already on the default branch).
        await stop_run(svc, run, RunStatus.DONE,
                       "the plan's steps changed nothing, so there is no pull request; the "
                       "step summaries are on this run's timeline")
        return "no changes"
    opening = run.pr_number is None
    await svc.store.log(run.id, "pr", "opening the pull request" if opening
                        else "updating the pull request")
    try:
        number, url = await upsert_pull_request(svc, run)
    except RequestFailed as exc:
        if exc.response.status_code != 422:  # 422: e.g. "head invalid", the branch is gone
            raise
        try:
            await check_branch(svc, run)
        except BranchDeleted as gone:
            await stop_run(svc, run, RunStatus.CANCELLED, gone.reason, advice=gone.advice)
            return "stopped: branch deleted"
        raise
    now = time.time()

    def opened(fresh: Run) -> None:
        fresh.pr_number, fresh.pr_url = number, url
        fresh.pr_opened_at = fresh.pr_opened_at or now

    fresh = await svc.store.update(run_id, opened) or run
    await svc.redis.set(PR_KEY.format(repo=run.repo_key, number=number), run.id, ex=RUN_RETENTION)
    if opening:
        await svc.store.log(run.id, "pr", f"draft pull request #{number} is open")
        # The PR body's timeline should include the line above: render once more.
        await upsert_pull_request(svc, fresh)
    await tracking.refresh(svc, fresh)
    await verify.begin(svc, run.id)
    return f"pull request #{number}"


