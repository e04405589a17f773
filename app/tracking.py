"""The one tracking comment per run: created once, then edited in place."""

from __future__ import annotations

from app.budget_view import usage_rows
from app.github import items
from app.report import TRACKING_MARKER, tracking_comment
from app.runs import Run
from app.services import Services


async def refresh(svc: Services, run: Run) -> None:
    """Render the run's state into its tracking comment, creating the comment if needed."""
    steps = await svc.store.steps(run.id)
    timeline = await svc.store.timeline(run.id)
    usage = await usage_rows(svc.redis, run.id)
    body = tracking_comment(run, steps, timeline, usage)
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        if run.tracking_comment_id is None:
            # A re-executed job may have posted it already and died before saving its id.
            run.tracking_comment_id = await _find_existing(gh, owner, name, run)
            if run.tracking_comment_id is not None:
                await svc.store.save(run)
        if run.tracking_comment_id is None:
            created = await gh.rest.issues.async_create_comment(
                owner, name, run.issue_number, body=body
            )
            run.tracking_comment_id = created.parsed_data.id
            await svc.store.save(run)
        else:
            await gh.rest.issues.async_update_comment(
                owner, name, run.tracking_comment_id, body=body
            )


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
