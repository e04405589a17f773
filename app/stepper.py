"""Running one step: a worker agent edits a worktree, guardrails check the diff, a reviewer
judges it, and the accepted change becomes one commit pushed to the run's branch.

Idempotent: a re-executed job whose commit already reached the branch (found by its
`Conductor-Run`/`Conductor-Step` trailers) records it and does not commit again. A push that
loses a race with a parallel step is rebased onto the new branch head and retried; because
running steps hold disjoint path locks, the rebase cannot conflict on their files.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from app import tracking
from app.agent import Agent, AgentFailed, Finished, TurnLimitExceeded, untrusted
from app.budget import Budget, BudgetExceeded
from app.constants import Job
from app.diffs import parse_diff, worktree_diff
from app.git import GitError, Workspace, git, git_ok
from app.guardrails import RunTotals, check_step_diff, feedback_for_model
from app.limits import Limits
from app.logs import get_logger
from app.plan import Role, Step
from app.planning import load_config
from app.recorded_tools import RecordedTools
from app.render import render
from app.review import Review, Verdict, parse_review, review_tool
from app.runs import Run, RunStatus, StepRecord
from app.scheduler import StepState
from app.scheduling import plan_of, step_owner
from app.services import Services
from app.stopping import stop_run
from app.terminal import TerminalTools
from app.tools import Toolbox
from app.workspace import remote_branch_head, synced

log = get_logger(__name__)

READ_ONLY_ROLES = frozenset({Role.NAVIGATOR, Role.REVIEWER})
PUSH_ATTEMPTS = 5
MAX_DIFF_FOR_REVIEW = 60_000


class StepFailed(Exception):
    """The step cannot be completed; the message says why (it goes on the timeline)."""


def commit_message(run: Run, step: Step, summary: str) -> str:
    body = summary.strip()
    return (f"{step.title}\n\n{body}\n\n" if body else f"{step.title}\n\n") + (
        f"Conductor-Run: {run.id}\nConductor-Step: {step.id}\n"
    )


async def remote_branch_head_at(worktree: Path, branch: str) -> str | None:
    out = await git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}",
                    cwd=worktree, check=False)
    return out.strip() or None


async def _is_ancestor(worktree: Path, ancestor: str, descendant: str) -> bool:
    return await git_ok("merge-base", "--is-ancestor", ancestor, descendant, cwd=worktree)


async def find_step_commit(workspace: Workspace, base: str, head: str, run_id: str,
                           step_id: str) -> str | None:
    out = await git(
        "log", "--format=%H", "-E", "--all-match",
        f"--grep=^Conductor-Run: {re.escape(run_id)}$",
        f"--grep=^Conductor-Step: {re.escape(step_id)}$",
        f"{base}..{head}", cwd=workspace.clone,
    )
    shas = out.split()
    return shas[0] if shas else None


async def run_step(ctx: dict[str, Any], run_id: str, step_id: str, attempt: int) -> str:
    svc: Services = ctx["services"]
    run = await svc.store.get(run_id)
    record = await svc.store.step(run_id, step_id)
    if run is None or record is None or run.plan is None:
        return f"unknown run or step {run_id}/{step_id}"
    if record.state != StepState.RUNNING.value or record.attempt != attempt:
        return f"step {step_id} is {record.state} (attempt {record.attempt})"
    if run.status is not RunStatus.RUNNING:
        return f"run {run_id} is {run.status.value}"
    step = next(s for s in plan_of(run).steps if s.id == step_id)
    try:
        first_try = int(ctx.get("job_try", 1)) == 1
        commit, details = await _execute(svc, run, step, record,
                                         record.started_at if first_try else None)
    except BudgetExceeded as exc:
        await _finish(svc, run, record, StepState.FAILED, error=str(exc))
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, f"budget exhausted: {exc}")
        return f"step {step_id} stopped: budget"
    except (StepFailed, AgentFailed, TurnLimitExceeded) as exc:
        await _finish(svc, run, record, StepState.FAILED, error=str(exc))
        return f"step {step_id} failed: {exc}"
    await _finish(svc, run, record, StepState.DONE, commit=commit, **details)
    return f"step {step_id} done" + (f" at {commit[:7]}" if commit else "")


async def fail_step(svc: Services, run_id: str, step_id: str, attempt: int, error: str) -> None:
    """Record a step as failed after its job died for good (the scheduler then stops the run)."""
    run = await svc.store.get(run_id)
    record = await svc.store.step(run_id, step_id)
    if run is None or record is None or record.attempt != attempt:
        return
    if record.state == StepState.RUNNING.value:
        await _finish(svc, run, record, StepState.FAILED, error=error)


async def _finish(svc: Services, run: Run, record: StepRecord, state: StepState,
                  **details: Any) -> None:
    record.state = state.value
    record.finished_at = time.time()
    for key, value in details.items():
        setattr(record, key, value)
    await svc.store.save_step(run.id, record)
    plan = plan_of(run)
    spec = next(s for s in plan.steps if s.id == record.id)
    await svc.store.unlock_paths(run.repo, list(spec.files) or [f"__step__/{record.id}"],
                                 step_owner(run.id, record.id))
    message = "done" + (f" at {record.commit[:7]}" if record.commit else "") \
        if state is StepState.DONE else f"failed: {record.error}"
    await svc.store.log(run.id, "step", message, step=record.id)
    await tracking.refresh(svc, run)
    trigger = f"{record.id}-{record.attempt}-{state.value}"
    await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, trigger,
                                _job_id=f"schedule:{run.id}:{trigger}")


async def _execute(svc: Services, run: Run, step: Step, record: StepRecord,
                   fresher_than: float | None) -> tuple[str | None, dict[str, Any]]:
    # Steps started together share one fetch; a re-executed job (job_try > 1 is handled by
    # the caller passing no stamp) always fetches, to see a commit it may already have pushed.
    workspace, token = await synced(svc, run, fresher_than=fresher_than)
    assert run.base_sha is not None
    head = await remote_branch_head(workspace, run.branch)
    if head is not None:
        existing = await find_step_commit(workspace, run.base_sha, head, run.id, step.id)
        if existing is not None:
            await svc.store.log(run.id, "step", "commit already on the branch; not repeating",
                                step=step.id)
            return existing, {}
    config = await load_config(svc, run, workspace, run.base_sha)
    limits = config.limits()
    budget = Budget(svc.redis, run.id, limits)
    worktree = await workspace.add_worktree(f"{run.id}-{step.id}-{record.attempt}",
                                            head or run.base_sha)
    try:
        finished, review = await _work(svc, run, step, worktree, config, limits, budget)
        if step.role in READ_ONLY_ROLES:
            return None, _details(finished, review)
        sha = await _commit_and_push(svc, run, step, workspace, worktree, token, finished)
        changes = parse_diff(await git("show", "--format=", "--no-color", sha, cwd=worktree))
        details = _details(finished, review)
        details["files_changed"] = sorted(c.path for c in changes)
        details["lines_changed"] = sum(c.added_lines + c.removed_lines for c in changes)
        return sha, details
    finally:
        await workspace.remove_worktree(worktree)


def _details(finished: Finished, review: Review | None) -> dict[str, Any]:
    data = finished.input
    return {
        "summary": str(data.get("summary", ""))[:4000],
        "rationale": str(data.get("rationale", ""))[:4000],
        "uncertainties": str(data.get("uncertainties", ""))[:4000],
        "review": review.model_dump(mode="json") if review else None,
    }


async def _run_totals(svc: Services, run: Run, step_id: str) -> RunTotals:
    files: set[str] = set()
    lines = 0
    for record in (await svc.store.steps(run.id)).values():
        if record.id != step_id and record.state == StepState.DONE.value:
            files.update(record.files_changed)
            lines += record.lines_changed
    return RunTotals(files=files, lines=lines)


async def _work(svc: Services, run: Run, step: Step, worktree: Path, config: Any,
                limits: Limits, budget: Budget) -> tuple[Finished, Review | None]:
    editable = step.role not in READ_ONLY_ROLES
    agent = Agent(
        svc.models,
        model=config.model_for(step.role.value),
        system_blocks=[render(f"prompts/{step.role.value}.md.j2", step=step,
                              instructions=config.config.instructions or "")],
        tools=RecordedTools(
            Toolbox(worktree, editable=editable, allowed=list(step.files) if editable else None),
            svc.store, run.id, step.id,
        ),
        terminal_tools={"finish_step"},
        max_turns=60,
        max_tokens=8000,
        role=step.role.value,
        budget=budget,
        trace={"run": run.id, "step": step.id},
    )
    finished = await agent.run([{
        "role": "user",
        "content": f"Carry out step `{step.id}` of the plan for issue #{run.issue_number}: "
                   f"{step.title}.\n\n"
                   + untrusted("plan summary", str((run.plan or {}).get("summary", ""))),
    }])
    if not editable:
        return finished, None
    totals = await _run_totals(svc, run, step.id)
    guard_tries = 0
    review_rounds = 0
    while True:
        changes = parse_diff(await worktree_diff(worktree))
        violations = check_step_diff(changes, list(step.files), limits, totals)
        if violations:
            for violation in violations:
                await svc.store.log(run.id, "guardrail", f"refused ({violation.rule}): "
                                    f"{violation.message}", step=step.id, rule=violation.rule)
            guard_tries += 1
            if guard_tries > limits.max_guardrail_retries:
                raise StepFailed("guardrails refused the change: "
                                 + "; ".join(v.message for v in violations))
            finished = await agent.resume(finished, feedback_for_model(violations))
            continue
        review = await _review(svc, run, step, worktree, config, budget)
        if review.verdict is Verdict.REVISE and review_rounds < limits.max_review_rounds:
            review_rounds += 1
            await svc.store.log(run.id, "review", "reviewer asked for changes: "
                                + "; ".join(review.comments)[:500], step=step.id)
            finished = await agent.resume(
                finished,
                "The reviewer asked for changes. Address each, then call finish_step again:\n"
                + "\n".join(f"{i}. {c}" for i, c in enumerate(review.comments, 1)),
            )
            continue
        await svc.store.log(run.id, "review", f"review: {review.verdict.value}"
                            + (f"; risks: {', '.join(f.value for f in review.risk_flags)}"
                               if review.risk_flags else ""), step=step.id)
        if review.risk_flags:
            await _flag_risks(svc, run, step, review)
        return finished, review


async def _review(svc: Services, run: Run, step: Step, worktree: Path, config: Any,
                  budget: Budget) -> Review:
    diff = await git("diff", "--cached", "--no-color", "HEAD", cwd=worktree)
    if len(diff) > MAX_DIFF_FOR_REVIEW:
        diff = diff[:MAX_DIFF_FOR_REVIEW] + "\n… (diff truncated)"
    reviewer = Agent(
        svc.models,
        model=config.model_for(Role.REVIEWER.value),
        system_blocks=[render("prompts/reviewer.md.j2", step=step)],
        tools=TerminalTools(Toolbox(worktree, editable=False, allowed=None), [review_tool()]),
        terminal_tools={"submit_review"},
        max_turns=20,
        max_tokens=4000,
        role=Role.REVIEWER.value,
        budget=budget,
        trace={"run": run.id, "step": step.id},
    )
    finished = await reviewer.run([{
        "role": "user",
        "content": "Review this diff for the step.\n\n" + untrusted("diff", diff),
    }])
    for _ in range(2):
        review, problem = parse_review(finished.input)
        if review is not None:
            return review
        finished = await reviewer.resume(finished, f"Invalid review: {problem}. Call "
                                         "submit_review again with valid fields.")
    raise StepFailed("the reviewer did not return a valid review")


async def _flag_risks(svc: Services, run: Run, step: Step, review: Review) -> None:
    fresh = await svc.store.get(run.id) or run
    for flag in review.risk_flags:
        note = f"{flag.value} (step {step.id}): {review.risk_notes}"[:300]
        if note not in fresh.risk_flags:
            fresh.risk_flags.append(note)
    await svc.store.save(fresh)
    run.risk_flags = fresh.risk_flags


async def _commit_and_push(svc: Services, run: Run, step: Step, workspace: Workspace,
                           worktree: Path, token: str, finished: Finished) -> str:
    message = commit_message(run, step, str(finished.input.get("summary", "")))
    await git("commit", "--no-verify", "-q", "-F", "-", cwd=worktree, input=message.encode())
    # Pushing and fetching update the shared clone's remote-tracking refs.
    async with workspace.locked():
        return await _push(svc, run, step, worktree, token)


async def _push(svc: Services, run: Run, step: Step, worktree: Path, token: str) -> str:
    ref = f"refs/heads/{run.branch}"
    # A step of this process that pushed meanwhile moved the remote-tracking ref: build on it
    # now rather than after a refused push.
    known = await remote_branch_head_at(worktree, run.branch)
    if known is not None and not await _is_ancestor(worktree, known, "HEAD"):
        await _rebase(worktree, run.branch)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            await git("push", "--porcelain", "origin", f"HEAD:{ref}", cwd=worktree, token=token)
            sha = (await git("rev-parse", "HEAD", cwd=worktree)).strip()
            await svc.store.log(run.id, "push", f"pushed {sha[:7]} to {run.branch}",
                                step=step.id, sha=sha)
            fresh = await svc.store.get(run.id)
            if fresh is not None:
                fresh.head_sha = sha
                await svc.store.save(fresh)
            return sha
        except GitError as exc:
            # Did another step's push move the branch under us? Then rebase and try again;
            # otherwise the push failed for a reason retrying will not fix.
            await git("fetch", "origin", f"+{ref}:refs/remotes/origin/{run.branch}",
                      cwd=worktree, token=token, check=False)
            remote = await remote_branch_head_at(worktree, run.branch)
            if remote is None or await _is_ancestor(worktree, remote, "HEAD"):
                raise StepFailed(f"push failed: {exc.output.strip()[:300]}") from exc
            await svc.store.log(run.id, "push", f"push raced another step (try {attempt}); "
                                "rebasing onto the new branch head", step=step.id)
            await _rebase(worktree, run.branch)
    raise StepFailed(f"push to {run.branch} kept racing other pushes")


async def _rebase(worktree: Path, branch: str) -> None:
    try:
        await git("rebase", f"refs/remotes/origin/{branch}", cwd=worktree)
    except GitError as error:
        await git("rebase", "--abort", cwd=worktree, check=False)
        raise StepFailed(f"rebase onto {branch} conflicted") from error
