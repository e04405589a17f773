"""Opening the run's draft pull request, or updating it when this job runs again."""

from __future__ import annotations

from typing import Any

from app import tracking
from app.budget_view import usage_rows
from app.commands import PR_KEY
from app.github import items
from app.logs import get_logger
from app.report import pr_body, pr_title
from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import stop_run

log = get_logger(__name__)

HIGH_RISK_LABEL = "agent:high-risk"


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
    await svc.store.log(run.id, "pr", "opening the pull request"
                        if run.pr_number is None else "updating the pull request")
    number, url = await upsert_pull_request(svc, run)
    fresh = await svc.store.get(run_id) or run
    fresh.pr_number, fresh.pr_url = number, url
    fresh.status = RunStatus.VERIFYING
    await svc.store.save(fresh)
    await svc.redis.set(PR_KEY.format(repo=run.repo, number=number), run.id)
    await svc.store.log(run.id, "pr", f"draft pull request #{number} is open")
    # The PR body's timeline should include the line above: render once more.
    await upsert_pull_request(svc, fresh)
    await tracking.refresh(svc, fresh)
    return f"pull request #{number}"


async def upsert_pull_request(svc: Services, run: Run) -> tuple[int, str]:
    steps = await svc.store.steps(run.id)
    timeline = await svc.store.timeline(run.id)
    usage = await usage_rows(svc.redis, run.id)
    body = pr_body(run, steps, timeline, usage)
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        existing = items(await gh.rest.pulls.async_list(
            owner, name, head=f"{owner}:{run.branch}", state="all", per_page=10
        ))
        if existing:
            pull = existing[0]
            await gh.rest.pulls.async_update(owner, name, pull.number, body=body)
        else:
            pull = (await gh.rest.pulls.async_create(
                owner, name, title=pr_title(run), head=run.branch, base=run.default_branch,
                body=body, draft=True,
            )).parsed_data
        if run.risk_flags:
            await gh.rest.issues.async_add_labels(owner, name, pull.number,
                                                  labels=[HIGH_RISK_LABEL])
    return pull.number, pull.html_url
