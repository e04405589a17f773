"""The run's pull request: opened as a draft once, its body re-rendered from the run's state
whenever something worth reading changed (steps, CI attempts, the final timeline)."""

from __future__ import annotations

from urllib.parse import quote

from app.budget_view import usage_rows
from app.constants import DASHBOARD_PREFIX
from app.github import items
from app.report import pr_body, pr_title
from app.runs import Run
from app.services import Services
from app.settings import Settings

HIGH_RISK_LABEL = "agent:high-risk"


def dashboard_url(settings: Settings, run: Run) -> str | None:
    """The run's page on the dashboard, when people can reach it: a public URL is set and
    signing in is (the App's OAuth client)."""
    if settings.conductor_public_url is None or not settings.has_oauth_client:
        return None
    base = str(settings.conductor_public_url).rstrip("/")
    return f"{base}{DASHBOARD_PREFIX}/runs/{quote(run.id, safe='')}"


async def upsert_pull_request(svc: Services, run: Run) -> tuple[int, str]:
    """Open the draft PR, or update the body of the one the branch has; its number and URL.
    Re-running never opens a second."""
    steps = await svc.store.steps(run.id)
    timeline = await svc.store.timeline(run.id)
    usage = await usage_rows(svc.redis, run.id)
    body = pr_body(run, steps, timeline, usage, dashboard_url=dashboard_url(svc.settings, run))
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
