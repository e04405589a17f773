"""Dispatching ready steps as jobs, one decision at a time per run.

Every event that can make a step ready (the plan accepted, a step finished) enqueues its own
`schedule_run` job with an id naming that event, so no wake-up is lost and a re-executed
trigger does not schedule twice. The jobs serialise on a per-run lock; a job that finds the
lock taken is retried shortly. Steps take one of their installation's slots (`app.slots`) and
claim their paths on the run's branch with fenced locks in Redis, so two running steps writing
one branch never touch the same path; runs on other branches of the repository work in
worktrees of their own and do not wait for each other.
"""

from __future__ import annotations

import time
from typing import Any

from arq import Retry
from arq.jobs import Job as ArqJob
from arq.jobs import JobStatus

from app import tracking
from app.constants import QUEUE_NAME, Job
from app.logs import get_logger
from app.plan import Plan
from app.runs import Run, RunStatus, StepRecord
from app.scheduler import StepState, ready_steps, run_outcome
from app.services import Services
from app.slots import give_back_slot, take_slot
from app.stopping import stop_run
from app.workspace import sweep_worktrees

log = get_logger(__name__)

STEP_LOCK_SECONDS = 3600


def step_owner(run_id: str, step_id: str) -> str:
    return f"{run_id}:{step_id}"


def plan_of(run: Run) -> Plan:
    return Plan.model_validate(run.plan)


LOCK_WAIT_SECONDS = 20.0


async def schedule_run(ctx: dict[str, Any], run_id: str, trigger: str) -> str:
    svc: Services = ctx["services"]
    # Decisions are short; wait for the lock rather than re-queueing (arq counts every
    # retry against the job's tries, and a dropped trigger would strand the run).
    token = await svc.store.lock_run(run_id, wait=LOCK_WAIT_SECONDS)
    if token is None:
        raise Retry(defer=1)
    return await _locked_schedule(svc, run_id, trigger, token)


async def schedule_now(svc: Services, run_id: str, trigger: str) -> bool:
    """Take the scheduling decision in this job, if no other job is taking one; True if it
    was taken. Saves the queue round trip between a finished step and the next."""
    token = await svc.store.lock_run(run_id)
    if token is None:
        return False
    await _locked_schedule(svc, run_id, trigger, token)
    return True


async def _locked_schedule(svc: Services, run_id: str, trigger: str, token: str) -> str:
    try:
        outcome, started = await _schedule(svc, run_id, trigger)
    finally:
        await svc.store.unlock_run(run_id, token)
    if started:
        await tracking.soon(svc, run_id)
    return outcome


async def reconcile(ctx: dict[str, Any]) -> str:
    """Periodic: give every running run a scheduling pass and every run waiting on CI a look
    at the API, so that no lost wake-up (a job that failed, a worker that died between two
    writes, a webhook GitHub never delivered) can leave a run waiting forever."""
    svc: Services = ctx["services"]
    nudged = 0
    tick = int(time.time())
    for run in await svc.store.active():
        if run.status is RunStatus.RUNNING:
            await _fail_orphaned_steps(svc, run)
            await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, "reconcile",
                                        _job_id=f"schedule:{run.id}:reconcile:{tick}")
            nudged += 1
        elif run.status is RunStatus.VERIFYING and run.head_sha:
            # GitHub never redelivers a webhook on its own: read CI from the API instead.
            await svc.redis.enqueue_job(Job.EVALUATE_CI, run.id, run.head_sha,
                                        _job_id=f"ci:{run.id}:{run.head_sha[:12]}:reconcile-{tick}")
            nudged += 1
        elif await _resume_stalled(svc, run, tick):
            nudged += 1
    await sweep_worktrees(svc.data_dir, older_than=svc.settings.conductor_job_timeout + 60)
    return f"nudged {nudged} runs"


async def _resume_stalled(svc: Services, run: Run, tick: int) -> bool:
    """A run planning, opening its pull request or handling a CI failure that no job carries
    on (a worker died between saving the status and queueing the job, say) gets that job
    again. Only once the status is older than any job could run, and no job of the run is
    queued, deferred or running: each of these jobs is safe to run again."""
    if time.time() - run.updated_at < svc.settings.conductor_job_timeout + 60:
        return False
    if run.status is RunStatus.PLANNING:
        job: tuple[Any, ...] = (Job.PLAN_RUN, run.id)
        job_id = f"plan:{run.id}:reconcile-{tick}"
    elif run.status is RunStatus.FINALIZING:
        job, job_id = (Job.FINALIZE_RUN, run.id), f"finalize:{run.id}:reconcile-{tick}"
    elif run.status is RunStatus.FIXING and run.head_sha:
        job = (Job.FIX_CI, run.id, run.head_sha)
        job_id = f"ci-fix:{run.id}:reconcile-{tick}"
    else:
        return False
    if await _has_jobs(svc, run.id):
        return False
    log.warning("run resumed: no job was carrying it on", run=run.id, status=run.status.value)
    await svc.store.log(run.id, "reconcile", f"no job was carrying the run on while "
                        f"{run.status.value}; started one again")
    await svc.redis.enqueue_job(*job, _job_id=job_id)
    return True


async def _has_jobs(svc: Services, run_id: str) -> bool:
    """Whether any job of the run is queued (or deferred) or in progress. Every job id of a
    run names it between colons or at the end (`plan:{id}`, `step:{id}:a:1`, ...)."""
    patterns = (f"*:{run_id}:*", f"*:{run_id}")
    for pattern in patterns:
        async for _ in svc.redis.zscan_iter(QUEUE_NAME, match=pattern, count=1000):
            return True
        async for _ in svc.redis.scan_iter(match=f"arq:in-progress:{pattern}", count=1000):
            return True
    return False


async def _fail_orphaned_steps(svc: Services, run: Run) -> None:
    """A step still "running" whose job is gone (timed out, or failed where nothing could
    record it) would hold the run forever: record it as failed."""
    grace = svc.settings.conductor_job_timeout + 60
    for record in (await svc.store.steps(run.id)).values():
        if record.state != StepState.RUNNING.value or record.started_at is None:
            continue
        if time.time() - record.started_at < grace:
            continue
        job = ArqJob(f"step:{run.id}:{record.id}:{record.attempt}", svc.redis,
                     _queue_name=QUEUE_NAME)
        if await job.status() in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress):
            continue
        from app.stepper import fail_step  # stepper imports this module

        await fail_step(svc, run.id, record.id, record.attempt,
                        "the step's job ended without finishing the step (timed out?)")


async def _schedule(svc: Services, run_id: str, trigger: str) -> tuple[str, list[str]]:
    run = await svc.store.get(run_id)
    if run is None or run.plan is None:
        return f"run {run_id} has no plan", []
    if run.status is not RunStatus.RUNNING:
        return f"run {run_id} is {run.status.value}", []
    plan = plan_of(run)
    records = await svc.store.steps(run_id)
    states = {s.id: StepState(records[s.id].state) if s.id in records else StepState.PENDING
              for s in plan.steps}
    outcome = run_outcome(plan, states)
    if outcome == "done":
        run.status = RunStatus.FINALIZING
        await svc.store.save(run)
        # One finalisation per round of steps: the first plan, each CI fix, each retry.
        await svc.redis.enqueue_job(
            Job.FINALIZE_RUN, run_id,
            _job_id=f"finalize:{run_id}:{run.fix_round}:{len(run.retries)}")
        return "all steps done", []
    if outcome in ("failed", "blocked"):
        failed = [s for s, st in states.items() if st is StepState.FAILED]
        reasons = "; ".join(f"step {s}: {records[s].error}" for s in failed if s in records)
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN,
                       f"step {', '.join(failed)} failed" + (f" ({reasons})" if reasons else ""))
        return f"run {outcome}", []

    specs = {s.id: s for s in plan.steps}
    running = {sid: list(specs[sid].files) for sid, st in states.items()
               if st is StepState.RUNNING}
    slots = max(0, svc.settings.conductor_run_concurrency - len(running))
    started: list[str] = []
    for step_id in ready_steps(plan, states, running, slots):
        spec = specs[step_id]
        owner = step_owner(run_id, step_id)
        taken = await take_slot(svc, run.installation_id, owner, run_id)
        if taken != 1:  # the installation's other runs hold every slot; woken when one frees
            if taken == -1:
                limit = svc.settings.conductor_installation_concurrency
                await svc.store.log(run_id, "wait", f"waiting: {limit} steps of this "
                                    "installation's runs are running at once (the limit, "
                                    "CONDUCTOR_INSTALLATION_CONCURRENCY)", step=step_id)
            break
        fence = await svc.store.lock_paths(run.repo_key, run.branch,
                                           list(spec.files) or [f"__step__/{step_id}"],
                                           owner, STEP_LOCK_SECONDS)
        if fence is None:
            await give_back_slot(svc, run.installation_id, owner)
            await svc.store.log(run_id, "wait", "waiting: an earlier step on this branch "
                                "still holds these paths", step=step_id)
            await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run_id, f"paths-{step_id}",
                                        _job_id=f"schedule:{run_id}:paths-{step_id}:{time.time()}",
                                        _defer_by=5)
            continue
        record = records.get(step_id) or StepRecord(id=step_id)
        record.state = StepState.RUNNING.value
        record.attempt += 1
        record.started_at = time.time()
        record.finished_at = None
        record.fence = fence
        await svc.store.save_step(run_id, record)
        await svc.store.log(run_id, "step", f"started ({spec.role.value})", step=step_id)
        await svc.redis.enqueue_job(Job.RUN_STEP, run_id, step_id, record.attempt,
                                    _job_id=f"step:{run_id}:{step_id}:{record.attempt}")
        running[step_id] = list(spec.files)
        started.append(step_id)
    return f"started {', '.join(started) or 'nothing'} after {trigger}", started
