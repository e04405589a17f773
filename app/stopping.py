"""Ending a run that cannot go on: record why, tell the people involved, free the issue.

What was pushed stays pushed; nothing is half-done on GitHub: a step's commit is pushed whole
or not at all.

A run stops once. Two jobs can decide to stop it, one after the other with a copy read before
the first stop (a step over its budget, and the scheduler its failure wakes) or at the same
time: the stored run decides, not the copy, and the first to claim the stop decides its
status, reason and notice; a later one only helps complete that stop while it is under way.
Keys, for each round of the run (a `/agent retry` starts the next):

    conductor:run:{id}:stop:{round}         the claimed stop (JSON), while it is under way
    conductor:run:{id}:stop:{round}:notice  set while and once the stop notice is posted
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from arq.jobs import Job as ArqJob
from githubkit.exception import RequestFailed

from app import tracking
from app.constants import QUEUE_NAME
from app.github import UNWRITABLE, InstallationUnavailable
from app.logs import get_logger
from app.report import neutralise
from app.runs import RUN_RETENTION, Run, RunStatus
from app.services import Services
from app.slots import give_back_slot

log = get_logger(__name__)

NEEDS_HUMAN_LABEL = "agent:needs-human"
ABORTED = "aborted: the run stopped"


STOP_KEY = "conductor:run:{run_id}:stop:{round}"
NOTICE_KEY = STOP_KEY + ":notice"
# A claim only has to outlive the stop under way (seconds, with GitHub's retries); one left
# by a worker killed mid-stop must not decide a later stop of the run.
CLAIM_SECONDS = 600


@dataclass(frozen=True)
class _Stop:
    status: RunStatus
    reason: str
    notify: bool
    advice: str | None


async def stop_run(svc: Services, run: Run, status: RunStatus, reason: str, *,
                   notify: bool = True, advice: str | None = None) -> None:
    """Stop `run` (a copy of it, possibly stale: the stored run decides) with `status` and
    `reason`, unless it has stopped already or another stop was claimed first, which is then
    completed instead. `advice`: what the notice says to do next, instead of the usual
    retry/relabel line. `run` is left with the status and reason the run stopped with."""
    stored = await svc.store.get(run.id)
    if stored is None or not stored.status.active:
        if stored is not None:
            run.status, run.stop_reason = stored.status, stored.stop_reason
        return
    rnd = len(stored.retries)
    key = STOP_KEY.format(run_id=run.id, round=rnd)
    mine = json.dumps({"status": status.value, "reason": reason, "notify": notify,
                       "advice": advice, "claim": secrets.token_hex(8)})
    if await svc.redis.set(key, mine, nx=True, ex=CLAIM_SECONDS):
        stop = _Stop(status, reason, notify, advice)
    else:
        stop = _claimed(await svc.redis.get(key)) or _Stop(status, reason, notify, advice)
        mine = ""
    try:
        await _stop(svc, run, rnd, stop)
    except BaseException:
        # A stop that failed part-way leaves no claim behind: the run is still active, and
        # may go on (a push, say) before the job's next try claims again.
        if mine:
            await svc.store.release(key, mine)
        raise


async def _stop(svc: Services, run: Run, rnd: int, stop: _Stop) -> None:
    # GitHub first, the status last: a job that fails in between runs again and finds the
    # run still active, so a label or the comment is never lost. An issue that cannot be
    # written on any more must not keep the run active forever, though.
    async with _unless_unwritable(svc, run, "the stop notice"):
        await _tell(svc, run, rnd, stop)

    changed = False

    def stopped(fresh: Run) -> None:
        nonlocal changed
        changed = fresh.status.active and len(fresh.retries) == rnd
        if changed:
            fresh.status = stop.status
            fresh.stop_reason = stop.reason

    saved = await svc.store.update(run.id, stopped)
    if saved is None or saved.status.active:
        return  # gone, or retried meanwhile: this stop is over
    run.status, run.stop_reason = saved.status, saved.stop_reason
    if changed:  # a stop completed at the same time by another job is on the timeline once
        await svc.store.log(run.id, "stop", f"{stop.status.value}: {stop.reason}")
    async with _unless_unwritable(svc, run, "the tracking comment"):
        await tracking.refresh(svc, run)
    await svc.store.release_issue(run.repo_key, run.issue_number, run.id)
    log.info("run stopped", run=run.id, status=stop.status.value, reason=stop.reason)


def _claimed(raw: bytes | str | None) -> _Stop | None:
    """The stop another job claimed (None if its claim has just been given back)."""
    if raw is None:
        return None
    data = json.loads(raw)
    return _Stop(RunStatus(data["status"]), data["reason"], data["notify"], data["advice"])


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


async def _tell(svc: Services, run: Run, rnd: int, stop: _Stop) -> None:
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        if stop.status is RunStatus.NEEDS_HUMAN:
            await gh.rest.issues.async_add_labels(owner, name, run.issue_number,
                                                  labels=[NEEDS_HUMAN_LABEL])
        # Editing the tracking comment notifies nobody; a short comment does, once: the key
        # is taken before posting (another job completing the stop does not post too) and
        # given back when the post fails, for the job's next try.
        notice = NOTICE_KEY.format(run_id=run.id, round=rnd)
        if not stop.notify or not await svc.redis.set(notice, "1", nx=True, ex=RUN_RETENTION):
            return
        if stop.advice is not None:
            advice = f"\n\n{stop.advice}"
        elif stop.status is not RunStatus.DONE:
            advice = ("\n\nAnything already pushed stays on the branch. Comment `/agent "
                      "retry [instructions]` to try again from where it stopped, or label "
                      "the issue again to start over.")
        else:
            advice = ""
        verb = "finished" if stop.status is RunStatus.DONE else "stopped"
        try:
            await gh.rest.issues.async_create_comment(
                owner, name, run.issue_number,
                body=f"@{run.triggered_by} Conductor {verb} run `{run.id}`: "
                     f"{neutralise(stop.reason)}{advice}",
            )
        except BaseException:
            await svc.redis.delete(notice)
            raise


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
