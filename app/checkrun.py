"""Conductor's own check run, `Conductor`, on the run's head commit.

In progress while the run works; concluded when it ends: success (CI green), neutral (no CI,
or nothing to verify), failure (stopped: needs a human) or cancelled. A failed or cancelled
run's check offers a **Retry** button, which GitHub sends back as `check_run.requested_action`
and which acts like `/agent retry`. When the head moves on, the old commit's check is
concluded neutral as superseded. Written together with the tracking comment (under its lock).
"""

from __future__ import annotations

from typing import Any

from githubkit.exception import RequestFailed

from app.runs import Run, RunStatus

CHECK_NAME = "Conductor"
RETRY_ID = "retry"
RETRY_ACTION = {"label": "Retry", "description": "Try again, like /agent retry",
                "identifier": RETRY_ID}
_TITLE = {
    RunStatus.DONE: "Done",
    RunStatus.NEEDS_HUMAN: "Stopped: needs a human",
    RunStatus.FAILED: "Stopped",
    RunStatus.CANCELLED: "Cancelled",
}


def state_of(run: Run) -> dict[str, Any]:
    """The check run's status fields for the run's state."""
    if run.status.active:
        return {"status": "in_progress"}
    if run.status is RunStatus.DONE:
        verdict = run.ci[-1].get("verdict") if run.ci else None
        return {"status": "completed",
                "conclusion": "success" if verdict == "green" else "neutral"}
    conclusion = "cancelled" if run.status is RunStatus.CANCELLED else "failure"
    return {"status": "completed", "conclusion": conclusion, "actions": [RETRY_ACTION]}


def title_of(run: Run) -> str:
    if run.status.active:
        fixes = f" (CI fix {run.ci_fixes})" if run.ci_fixes else ""
        return {RunStatus.VERIFYING: "Waiting for CI",
                RunStatus.FIXING: "Working on a CI failure"}.get(run.status, "Working") + fixes
    return _TITLE.get(run.status, run.status.value)


async def publish(gh: Any, run: Run, summary: str, app_id: int | None = None) -> dict[str, int]:
    """Create or update the check run on the run's head; returns the head's check run ids
    to keep (sha -> id), the superseded ones concluded and dropped."""
    if run.head_sha is None:
        return dict(run.check_runs)
    owner, name = run.repo.split("/", 1)
    output = {"title": title_of(run), "summary": summary}
    fields = state_of(run)
    kept: dict[str, int] = {}
    for sha, check_id in run.check_runs.items():
        if sha == run.head_sha:
            continue
        try:
            await gh.rest.checks.async_update(
                owner, name, check_id, status="completed", conclusion="neutral",
                output={"title": "Superseded",
                        "summary": f"The run moved on to `{run.head_sha[:7]}`."})
        except RequestFailed as exc:
            if exc.response.status_code != 404:
                raise
    current = run.check_runs.get(run.head_sha)
    if current is not None:
        try:
            await gh.rest.checks.async_update(owner, name, current, output=output, **fields)
            kept[run.head_sha] = current
            return kept
        except RequestFailed as exc:
            if exc.response.status_code != 404:
                raise
    if run.pr_url:
        fields["details_url"] = run.pr_url
    made = await _made_before(gh, owner, name, run, app_id)
    if made is not None:  # a create whose answer was lost (or a job that died after it)
        await gh.rest.checks.async_update(owner, name, made, output=output, **fields)
        kept[run.head_sha] = made
        return kept
    created = await gh.rest.checks.async_create(
        owner, name, name=CHECK_NAME, head_sha=run.head_sha, external_id=run.id,
        output=output, **fields)
    kept[run.head_sha] = int(created.parsed_data.id)
    return kept


async def _made_before(gh: Any, owner: str, name: str, run: Run,
                       app_id: int | None) -> int | None:
    """The id of this run's check run on its head that this App made but the run has no
    record of, if there is one."""
    response = await gh.rest.checks.async_list_for_ref(
        owner, name, run.head_sha, check_name=CHECK_NAME, filter_="all", per_page=100)
    for check in response.parsed_data.check_runs:
        made_by = check.app.id if check.app is not None else None
        if check.external_id == run.id and (app_id is None or made_by == app_id):
            return int(check.id)
    return None
