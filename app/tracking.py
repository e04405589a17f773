"""The one tracking comment per run, created once and then edited in place, and with it the
run's `Conductor` check run (app/checkrun.py).

Two ways in. `refresh` renders and writes now (run start, plan posted, stop, pull request
open: moments a person is waiting for). `soon` asks for a refresh within `DEBOUNCE` seconds
and coalesces every request made meanwhile into one edit: a run with many parallel steps
would otherwise edit the comment twice per step, in the steps' critical path, and against
GitHub's limit on content-creating requests. Refreshes of one run take a lock and render the
state they read inside it, so an older rendering never overwrites a newer one.
"""

from __future__ import annotations

import time
from typing import Any

from githubkit.exception import RequestFailed

from app import checkrun
from app.budget_view import usage_rows
from app.constants import Job
from app.github import UNWRITABLE, items
from app.report import TRACKING_MARKER, check_summary, tracking_comment
from app.runs import Run
from app.services import Services

DEBOUNCE = 1.0
DUE_KEY = "conductor:run:{run_id}:tracking-due"
LOCK_KEY = "conductor:run:{run_id}:tracking-lock"
CREATING_KEY = "conductor:run:{run_id}:tracking-creating"
LOCK_MS = 30_000
LOCK_WAIT = 20.0


async def soon(svc: Services, run_id: str) -> None:
    """Refresh the tracking comment within `DEBOUNCE` seconds (one edit for many calls)."""
    # The key outlives a lost job by a minute at most; then the next call schedules again.
    if await svc.redis.set(DUE_KEY.format(run_id=run_id), 1, nx=True, ex=60):
        await svc.redis.enqueue_job(Job.REFRESH_TRACKING, run_id,
                                    _job_id=f"tracking:{run_id}:{time.time_ns()}",
                                    _defer_by=DEBOUNCE)


async def refresh_job(ctx: dict[str, Any], run_id: str) -> str:
    svc: Services = ctx["services"]
    await svc.redis.delete(DUE_KEY.format(run_id=run_id))
    run = await svc.store.get(run_id)
    if run is None:
        return f"unknown run {run_id}"
    try:
        await refresh(svc, run)
    except RequestFailed as exc:
        # A stopped run whose issue GitHub no longer lets it write on (access removed, the
        # issue deleted or locked): the stop is on the timeline already; nothing to retry.
        now = await svc.store.get(run_id) or run
        if now.status.active or exc.response.status_code not in UNWRITABLE:
            raise
        return f"not refreshed: GitHub answered {exc.response.status_code}"
    return "refreshed"


async def refresh(svc: Services, run: Run) -> None:
    """Render the run's state into its tracking comment now, creating the comment if needed.

    `run` must be saved; the rendering uses the stored record, which may be newer."""
    key = LOCK_KEY.format(run_id=run.id)
    # A holder that died keeps it until it expires: then render anyway rather than skip.
    token = await svc.store.acquire(key, ttl_ms=LOCK_MS, wait=LOCK_WAIT)
    try:
        fresh = await svc.store.get(run.id) or run
        await _write(svc, fresh)
        run.tracking_comment_id = fresh.tracking_comment_id
    finally:
        if token is not None:
            await svc.store.release(key, token)


async def _write(svc: Services, run: Run) -> None:
    steps = await svc.store.steps(run.id)
    timeline = await svc.store.timeline(run.id)
    usage = await usage_rows(svc.redis, run.id)
    body = tracking_comment(run, steps, timeline, usage)
    owner, name = run.repo.split("/", 1)
    lost: int | None = None
    async with svc.github.installation(run.installation_id) as gh:
        if run.head_sha is not None:
            checks = await checkrun.publish(gh, run, check_summary(run, steps, timeline, usage),
                                            svc.settings.github_app_id)
            if checks != run.check_runs:
                run.check_runs = checks
                await svc.store.set_fields(run.id, check_runs=checks)
        if run.tracking_comment_id is not None:
            try:
                await gh.rest.issues.async_update_comment(
                    owner, name, run.tracking_comment_id, body=body
                )
                return
            except RequestFailed as exc:
                if exc.response.status_code != 404:
                    raise
            # Someone deleted it: post it again, or the issue would stop showing the run
            # (and every refresh fail). Without access to the issue, posting fails too.
            lost = run.tracking_comment_id
            run.tracking_comment_id = None
        # A re-executed job may have posted it already and died before saving its id; only
        # a run that tried before needs to look (one list call less for every new run).
        first = await svc.redis.set(CREATING_KEY.format(run_id=run.id), 1, nx=True,
                                    ex=7 * 24 * 3600)
        found = None if first else await _find_existing(gh, owner, name, run)
        if found is None:
            created = await gh.rest.issues.async_create_comment(
                owner, name, run.issue_number, body=body
            )
            found = created.parsed_data.id
        else:
            await gh.rest.issues.async_update_comment(owner, name, found, body=body)
    run.tracking_comment_id = found
    await svc.store.set_fields(run.id, tracking_comment_id=found)
    if lost is not None:
        await svc.store.log(run.id, "github", f"the tracking comment ({lost}) was gone from "
                            f"the issue; posted it again ({found})")


async def _find_existing(gh: object, owner: str, name: str, run: Run) -> int | None:
    marker = TRACKING_MARKER.format(run_id=run.id)
    page = 1
    while True:
        response = await gh.rest.issues.async_list_comments(  # type: ignore[attr-defined]
            owner, name, run.issue_number, per_page=100, page=page
        )
        comments = items(response)
        for comment in comments:
            if comment.body and marker in comment.body:
                return int(comment.id)
        if len(comments) < 100:
            return None
        page += 1
