"""Ending a run that cannot go on: record why, tell the people involved, free the issue.

What was pushed stays pushed; nothing is half-done on GitHub: a step's commit is pushed whole
or not at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from arq.jobs import Job as ArqJob
from githubkit.exception import RequestFailed

from app import tracking
from app.constants import QUEUE_NAME
from app.github import UNWRITABLE, InstallationUnavailable
from app.logs import get_logger
from app.report import neutralise
from app.runs import Run, RunStatus
from app.services import Services
from app.slots import give_back_slot

log = get_logger(__name__)

NEEDS_HUMAN_LABEL = "agent:needs-human"
ABORTED = "aborted: the run stopped"


async def stop_run(svc: Services, run: Run, status: RunStatus, reason: str, *,
                   notify: bool = True, advice: str | None = None) -> None:
    """`advice`: what the notice says to do next, instead of the usual retry/relabel line."""
    if not run.status.active:
        return
    # GitHub first, the status last: a job that fails in between runs again and finds the
    # run still active, so a label or the comment is never lost. An issue that cannot be
    # written on any more must not keep the run active forever, though.
    async with _unless_unwritable(svc, run, "the stop notice"):
        await _tell(svc, run, status, reason, notify, advice)

    def stopped(fresh: Run) -> None:
        fresh.status = status
        fresh.stop_reason = reason

    run.status, run.stop_reason = status, reason
    await svc.store.update(run.id, stopped)
    await svc.store.log(run.id, "stop", f"{status.value}: {reason}")
    async with _unless_unwritable(svc, run, "the tracking comment"):
        await tracking.refresh(svc, run)
    await svc.store.release_issue(run.repo_key, run.issue_number, run.id)
    log.info("run stopped", run=run.id, status=status.value, reason=reason)


@contextlib.asynccontextmanager
async def _unless_unwritable(svc: Services, run: Run, what: str) -> AsyncIterator[None]:
    """Write `what` on GitHub; if the issue or the installation is gone for good, put that on
    the timeline instead of failing: the run must still stop."""
    try:
        yield
    except RequestFailed as exc:
        code = exc.response.status_code
        if code not in UNWRITABLE:
            raise
        await svc.store.log(run.id, "github", f"could not write {what} on issue "
                            f"#{run.issue_number}: GitHub answered {code}")
        log.warning("issue not writable", run=run.id, status=code, what=what)
    except InstallationUnavailable as exc:
        # Nothing can be written on GitHub without the installation: the timeline keeps why.
        await svc.store.log(run.id, "github", f"could not write {what}: {exc}")
        log.warning("installation unavailable", run=run.id, what=what)


async def _tell(svc: Services, run: Run, status: RunStatus, reason: str, notify: bool,
                advice: str | None) -> None:
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        if status is RunStatus.NEEDS_HUMAN:
            await gh.rest.issues.async_add_labels(owner, name, run.issue_number,
                                                  labels=[NEEDS_HUMAN_LABEL])
        # Editing the tracking comment notifies nobody; a short comment does.
        if notify:
            if advice is not None:
                advice = f"\n\n{advice}"
            elif status is not RunStatus.DONE:
                advice = ("\n\nAnything already pushed stays on the branch. Comment `/agent "
                          "retry [instructions]` to try again from where it stopped, or label "
                          "the issue again to start over.")
            else:
                advice = ""
            verb = "finished" if status is RunStatus.DONE else "stopped"
            await gh.rest.issues.async_create_comment(
                owner, name, run.issue_number,
                body=f"@{run.triggered_by} Conductor {verb} run `{run.id}`: "
                     f"{neutralise(reason)}{advice}",
            )


async def give_up_run(svc: Services, run_id: str, reason: str) -> None:
    """Stop a run whose job failed for good, so that it does not wait forever."""
    run = await svc.store.get(run_id)
    if run is not None and run.status.active:
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, reason)


async def abort_steps(svc: Services, run: Run) -> int:
    """Ask the workers to cancel the run's running steps (arq abort; does not wait) and free
    their path locks and installation slots. Returns how many were running."""
    plan_steps = {s["id"]: s for s in (run.plan or {}).get("steps", [])}
    aborted = 0
    for record in (await svc.store.steps(run.id)).values():
        if record.state != "running":
            continue
        job = ArqJob(f"step:{run.id}:{record.id}:{record.attempt}", svc.redis,
                     _queue_name=QUEUE_NAME)
        # The abort is a request the step's worker acts on; its result is not awaited here
        # (arq raises TimeoutError for a job still running, which every step here is).
        with contextlib.suppress(TimeoutError):
            await job.abort(timeout=0)
        aborted += 1
        # The record says so too: the dashboard must not show a stopped run's step running.
        # (A step that finishes before its worker sees the abort records what it did.)
        record.state, record.error, record.finished_at = "failed", ABORTED, time.time()
        await svc.store.save_step(run.id, record)
        await svc.store.log(run.id, "step", f"failed: {ABORTED}", step=record.id)
        files = plan_steps.get(record.id, {}).get("files") or [f"__step__/{record.id}"]
        await svc.store.unlock_paths(run.repo_key, run.branch, files, f"{run.id}:{record.id}")
        await give_back_slot(svc, run.installation_id, f"{run.id}:{record.id}")
    return aborted
