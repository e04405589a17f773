"""`/agent retry [instructions]` (and the check run's Retry button): a stopped run tries again
from where it stopped, with a fresh token and cost allowance and a fresh CI-fix budget. The
instructions and the last diagnosis reach the model on the next plan, fix or step.

Where it resumes is a pure decision (`resume_point`): no plan yet → plan again; a step that
failed or was interrupted → those steps; no pull request yet → open it; the last CI attempt
failed → plan a fix from it; otherwise → wait for CI again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from app import tracking, verify
from app.budget import Budget
from app.constants import Job
from app.github import remove_label
from app.limits import Limits
from app.runs import Run, RunStatus, StepRecord
from app.scheduler import FINISHED, StepState
from app.services import Services
from app.stopping import NEEDS_HUMAN_LABEL
from app.workspace import restore_branch

Point = Literal["plan", "steps", "finalize", "ci-fix", "verify"]
Answer = Callable[..., Awaitable[None]]
_STATUS: dict[str, RunStatus] = {
    "plan": RunStatus.PLANNING, "steps": RunStatus.RUNNING, "finalize": RunStatus.FINALIZING,
    "ci-fix": RunStatus.FIXING, "verify": RunStatus.VERIFYING,
}
_DESCRIBE: dict[str, str] = {
    "plan": "planning again", "steps": "the steps that did not finish",
    "finalize": "opening the pull request", "ci-fix": "a fix for the last CI failure",
    "verify": "waiting for CI again",
}


def resume_point(run: Run, steps: Mapping[str, StepRecord]) -> Point:
    if run.plan is None:
        return "plan"
    ids = [s["id"] for s in run.plan.get("steps", [])]
    if any(StepState(steps[i].state) not in FINISHED if i in steps else True for i in ids):
        return "steps"
    if run.pr_number is None or run.head_sha is None:
        return "finalize"
    if run.ci and run.ci[-1]["sha"] == run.head_sha and run.ci[-1].get("verdict") == "red":
        return "ci-fix"
    return "verify"  # CI did not finish, or someone pushed since: wait for CI on the head


async def retry(svc: Services, run: Run, author: str, instructions: str,
                answer: Answer, *, installation_id: int | None = None,
                key: str | None = None) -> str:
    """`/agent retry` (or the Retry button) on a stopped run. `installation_id`: the one the
    command came through, which is the repository's now: after the App was uninstalled and
    installed again, the run's own no longer works. `key` names the request (a comment, a
    button press): asked again with the same key (its job run again after a failure), a
    retry already recorded for it is carried on, not refused as active nor started twice."""
    previous = run.installation_id
    if installation_id is not None:
        run.installation_id = installation_id  # saved with the retry below
    moved = run.installation_id != previous
    for number, entry in enumerate(run.retries, 1):
        if key is not None and entry.get("key") == key:
            return await _carry_on(svc, run, number, entry, answer)
    status = run.status.value.replace("_", " ")
    if run.status.active:
        await answer("confused", f"@{author} run `{run.id}` is still active ({status}), so "
                     "there is nothing to retry yet; it will say here when it stops. "
                     "`/agent cancel` stops it.")
        return "retry refused: the run is active"
    if run.status is RunStatus.DONE:
        await answer("confused", f"@{author} run `{run.id}` finished ({run.stop_reason}). "
                     "Label the issue again to start a new run.")
        return "retry refused: the run is done"
    pull = await _closed_pull(svc, run)
    if pull is not None and pull.merged:
        await answer("confused", f"@{author} pull request #{run.pr_number} is merged, so run "
                     f"`{run.id}` is over. Label the issue again to start a new run.")
        return "retry refused: the pull request is merged"
    # A branch someone deleted goes back where the run left it: asking to retry says so.
    restored = await restore_branch(svc, run)
    if restored is False:
        await answer("confused", f"@{author} the branch `{run.branch}` was deleted and GitHub "
                     f"no longer has its commit `{(run.head_sha or '')[:7]}`, so this run "
                     "cannot go on. Label the issue again to start over.")
        return "retry refused: the branch and its commits are gone"
    if restored:
        await svc.store.log(run.id, "retry", f"branch {run.branch} restored at "
                            f"{(run.head_sha or '')[:7]} for the retry by @{author}")
    holder = await svc.store.claim_issue(run.repo_key, run.issue_number, run.id)
    if holder != run.id:
        other = await svc.store.get(holder) if holder else None
        if other is None or other.status.active:
            await answer("confused", f"@{author} run `{holder}` is active on this issue; "
                         "wait for it or `/agent cancel` it first.")
            return "retry refused: another run is active"
        await svc.store.release_issue(run.repo_key, run.issue_number, other.id)
        if await svc.store.claim_issue(run.repo_key, run.issue_number, run.id) != run.id:
            await answer("confused", f"@{author} another run claimed this issue just now.")
            return "retry refused: another run claimed the issue"

    steps = await svc.store.steps(run.id)
    point = resume_point(run, steps)
    now = time.time()
    number = len(run.retries) + 1

    if pull is not None:
        # Trying again happens on the pull request: open it again (its branch is back).
        owner, name = run.repo.split("/", 1)
        async with svc.github.installation(run.installation_id) as gh:
            await gh.rest.pulls.async_update(owner, name, pull.number, state="open")

    # What can be done again harmlessly comes before the retry is recorded: a job that fails
    # here (GitHub refuses the label's removal for a while) runs again and finds the run as
    # it was. Once recorded, a job run again carries on (`_carry_on`).
    await Budget(svc.redis, run.id, Limits()).renew()
    if point == "steps":
        for record in steps.values():
            if record.state in (StepState.FAILED.value, StepState.RUNNING.value):
                record.state = StepState.PENDING.value
                record.error = None
                await svc.store.save_step(run.id, record)
    await _clear_needs_human(svc, run)

    def change(fresh: Run) -> None:
        fresh.installation_id = run.installation_id
        entry: dict[str, Any] = {"by": author, "at": now, "instructions": instructions[:4000],
                                 "point": point}
        if key is not None:
            entry["key"] = key
        fresh.retries.append(entry)
        fresh.ci_fixes = 0
        fresh.stop_reason = None
        fresh.status = _STATUS[point]
        if pull is not None:
            fresh.outcome = None  # it is recorded again when the pull request closes

    updated = await svc.store.update(run.id, change)
    assert updated is not None
    if moved:
        await svc.store.log(run.id, "retry", f"the repository is now in installation "
                            f"{run.installation_id} (was {previous}): the run goes on there")
    if pull is not None:
        await svc.store.log(run.id, "retry", f"pull request #{pull.number} reopened for the "
                            f"retry by @{author}")
    said = f": “{instructions[:300]}”" if instructions else ""
    await svc.store.log(run.id, "retry", f"retry {number} by @{author}, from "
                        f"{_DESCRIBE[point]}{said}", by=author, point=point)
    await _go_on(svc, updated, point, number)
    await tracking.refresh(svc, updated)
    await answer("rocket")
    return f"retry {number} by {author}: {point}"


async def _go_on(svc: Services, run: Run, point: Point, number: int) -> None:
    """Hand the retried run to the job for `point`. Idempotent: each job has its id."""
    if point == "plan":
        await svc.redis.enqueue_job(Job.PLAN_RUN, run.id, _job_id=f"plan:{run.id}:retry{number}")
    elif point == "steps":
        await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, f"retry{number}",
                                    _job_id=f"schedule:{run.id}:retry{number}")
    elif point == "finalize":
        await svc.redis.enqueue_job(Job.FINALIZE_RUN, run.id,
                                    _job_id=f"finalize:{run.id}:retry{number}")
    elif point == "ci-fix":
        assert run.head_sha is not None
        await svc.redis.enqueue_job(Job.FIX_CI, run.id, run.head_sha,
                                    _job_id=f"ci-fix:{run.id}:retry{number}")
    else:
        await verify.begin(svc, run.id)


async def _carry_on(svc: Services, run: Run, number: int, entry: Mapping[str, Any],
                    answer: Answer) -> str:
    """Retry `number`, recorded by an earlier try of the same request that failed after: the
    rest of it, unless the run went on from where the retry put it already."""
    point: Point = entry["point"]
    if run.status is _STATUS[point]:
        await _go_on(svc, run, point, number)
    await tracking.refresh(svc, run)
    await answer("rocket")
    return f"retry {number} by {entry['by']}: {point}"


async def _closed_pull(svc: Services, run: Run) -> Any:
    """The run's pull request when it is closed (merged or not), else None."""
    if run.pr_number is None:
        return None
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        pull = (await gh.rest.pulls.async_get(owner, name, run.pr_number)).parsed_data
    return pull if pull.state == "closed" else None


async def _clear_needs_human(svc: Services, run: Run) -> None:
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        for number in {n for n in (run.issue_number, run.pr_number) if n is not None}:
            await remove_label(gh, owner, name, number, NEEDS_HUMAN_LABEL)
