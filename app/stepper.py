"""Running one step: a worker agent edits a worktree, guardrails check the diff, a reviewer
judges it, and the accepted change becomes one commit pushed to the run's branch.

Idempotent: a re-executed job whose commit already reached the branch (found by its
`Conductor-Run`/`Conductor-Step` trailers) records it and does not commit again. A push that
loses a race with a parallel step is rebased onto the new branch head and retried; because
running steps hold disjoint path locks, the rebase cannot conflict on their files.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from app import tracking
from app.agent import Agent, AgentFailed, Finished, TurnLimitExceeded, untrusted
from app.budget import Budget, BudgetExceeded
from app.constants import Job
from app.diffs import FileChange, parse_diff, worktree_diff
from app.git import (
    REPOSITORY_GONE,
    GitError,
    RepositoryGone,
    Workspace,
    auth_failed,
    git,
    git_error_line,
    git_ok,
    push_refusal,
    repository_gone,
    resolve_commit,
    transient_git_failure,
)
from app.guardrails import RunTotals, check_step_diff, feedback_for_model
from app.limits import Limits
from app.logs import get_logger
from app.plan import Role, Step
from app.planning import load_config, retry_notes
from app.recorded_tools import RecordedTools
from app.render import render
from app.report import unlinked
from app.review import Review, Verdict, parse_review, review_tool
from app.runs import Run, RunStatus, StepRecord
from app.scheduler import StepState
from app.scheduling import plan_of, schedule_now, step_owner
from app.services import Services
from app.slots import give_back_slot
from app.stopping import abort_steps, stop_run
from app.terminal import TerminalTools
from app.tools import Toolbox
from app.workspace import BranchDeleted, check_branch, git_token, remote_branch_head, synced

log = get_logger(__name__)

READ_ONLY_ROLES = frozenset({Role.NAVIGATOR, Role.REVIEWER})
PUSH_ATTEMPTS = 5
# Waits before pushing again after GitHub's side failed a push; then the job is tried later.
PUSH_RETRY_WAITS = (2.0, 5.0, 15.0)
MAX_DIFF_FOR_REVIEW = 60_000


class StepFailed(Exception):
    """The step cannot be completed; the message says why (it goes on the timeline)."""


# The model's words go into the branch's history: a line of them must not pose as a trailer
# (which marks a step as pushed), nor close an issue once the branch is merged.
_FORGED_TRAILER = re.compile(r"^([ \t]*conductor-(?:run|step))[ \t]*:",
                             re.IGNORECASE | re.MULTILINE)


def commit_message(run: Run, step: Step, summary: str) -> str:
    title, body = (_FORGED_TRAILER.sub(r"\1", unlinked(text)).strip()
                   for text in (step.title, summary))
    return (f"{title}\n\n{body}\n\n" if body else f"{title}\n\n") + (
        f"Conductor-Run: {run.id}\nConductor-Step: {step.id}\n"
    )


async def remote_branch_head_at(worktree: Path, branch: str) -> str | None:
    return await resolve_commit(f"refs/remotes/origin/{branch}", worktree)


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
        commit, details = await _execute(svc, run, step, record,
                                         first_try=int(ctx.get("job_try", 1)) == 1)
    except BudgetExceeded as exc:
        # Stopped first, with the budget as the reason: the step's failure would otherwise
        # wake the scheduler, which stops the run as "step failed" before this could.
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, f"budget exhausted: {exc}")
        await _finish(svc, run, record, StepState.FAILED, error=str(exc))
        return f"step {step_id} stopped: budget"
    except BranchDeleted as exc:
        # Stopped first, so that the scheduler the step's end wakes finds nothing to do.
        await stop_run(svc, run, RunStatus.CANCELLED, exc.reason, advice=exc.advice)
        await _finish(svc, run, record, StepState.FAILED, error=exc.reason)
        await abort_steps(svc, run)
        return f"step {step_id} stopped: branch deleted"
    except RepositoryGone:
        # Every other step would fail the same way: the run stops, and says what to do.
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, REPOSITORY_GONE)
        await _finish(svc, run, record, StepState.FAILED, error=REPOSITORY_GONE)
        await abort_steps(svc, run)
        return f"step {step_id} stopped: repository not found"
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
    await svc.store.unlock_paths(run.repo_key, run.branch,
                                 list(spec.files) or [f"__step__/{record.id}"],
                                 step_owner(run.id, record.id))
    await give_back_slot(svc, run.installation_id, step_owner(run.id, record.id))
    message = "done" + (f" at {record.commit[:7]}" if record.commit else "") \
        if state is StepState.DONE else f"failed: {record.error}"
    await svc.store.log(run.id, "step", message, step=record.id)
    trigger = f"{record.id}-{record.attempt}-{state.value}"
    # Decide what runs next here; when another job holds the decision, queue it. A worker
    # that dies between the two writes above is caught by the periodic reconcile.
    if not await schedule_now(svc, run.id, trigger):
        await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, trigger,
                                    _job_id=f"schedule:{run.id}:{trigger}")
    await tracking.soon(svc, run.id)


async def _execute(svc: Services, run: Run, step: Step, record: StepRecord, *,
                   first_try: bool) -> tuple[str | None, dict[str, Any]]:
    # The clone is used as it is when it has the branch as GitHub has it (also when this job
    # runs again: a commit it pushed before dying shows as a difference). Otherwise steps
    # started together share one fetch; a re-executed job always fetches.
    workspace, _ = await synced(svc, run, branch=run.branch,
                                    fresher_than=record.started_at if first_try else None)
    assert run.base_sha is not None
    head = await remote_branch_head(workspace, run.branch)
    if head is None:
        await check_branch(svc, run)  # before the model spends anything on a lost branch
    # Only an earlier execution of this step can have pushed its commit.
    if head is not None and (record.attempt > 1 or not first_try):
        existing = await find_step_commit(workspace, run.base_sha, head, run.id, step.id)
        if existing is not None:
            await svc.store.log(run.id, "step", "commit already on the branch; not repeating",
                                step=step.id)
            return existing, {}
    # The planner put the config's errors on the timeline already.
    config = await load_config(svc, run, workspace, run.base_sha, record_errors=False)
    limits = config.limits()
    budget = Budget(svc.redis, run.id, limits)
    worktree = await workspace.add_worktree(f"{run.id}-{step.id}-{record.attempt}",
                                            head or run.base_sha)
    try:
        finished, review, changes = await _work(svc, run, step, worktree, config, limits,
                                                budget)
        if step.role in READ_ONLY_ROLES:
            return None, _details(finished, review)
        sha = await _commit_and_push(svc, run, step, workspace, worktree, finished)
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
                limits: Limits, budget: Budget,
                ) -> tuple[Finished, Review | None, list[FileChange]]:
    """Run the worker, then the guardrails and the reviewer on its diff until both accept.
    Returns the worker's finish, the review and the accepted change (staged)."""
    editable = step.role not in READ_ONLY_ROLES
    agent = Agent(
        svc.models,
        model=config.model_for(step.role.value),
        system_blocks=[render(f"prompts/{step.role.value}.md.j2", step=step,
                              instructions=config.config.instructions or "")],
        tools=RecordedTools(
            Toolbox(worktree, editable=editable, allowed=list(step.files) if editable else None,
                    readable=limits.allowed_protected),
            svc.store, run.id, step.id,
        ),
        terminal_tools={"finish_step"},
        max_turns=60,
        max_tokens=8000,
        role=step.role.value,
        budget=budget,
        trace={"run": run.id, "step": step.id},
    )
    context = untrusted("plan summary", str((run.plan or {}).get("summary", "")))
    if step.id in run.fix_steps and run.diagnosis:
        context += ("\n\nThis step fixes a CI failure of the pull request. What CI "
                    "reported:\n\n" + untrusted("CI diagnosis", run.diagnosis))
    finished = await agent.run([{
        "role": "user",
        "content": f"Carry out step `{step.id}` of the plan for issue #{run.issue_number}: "
                   f"{step.title}.\n\n{context}\n\n{retry_notes(run)}".rstrip(),
    }])
    if not editable:
        return finished, None, []
    totals = await _run_totals(svc, run, step.id)
    guard_tries = 0
    review_rounds = 0
    while True:
        diff = await worktree_diff(worktree)
        changes = parse_diff(diff)
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
        review = await _review(svc, run, step, worktree, config, budget, diff)
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
        return finished, review, changes


async def _review(svc: Services, run: Run, step: Step, worktree: Path, config: Any,
                  budget: Budget, diff: str) -> Review:
    if len(diff) > MAX_DIFF_FOR_REVIEW:
        diff = diff[:MAX_DIFF_FOR_REVIEW] + "\n… (diff truncated)"
    reviewer = Agent(
        svc.models,
        model=config.model_for(Role.REVIEWER.value),
        system_blocks=[render("prompts/reviewer.md.j2", step=step)],
        tools=TerminalTools(Toolbox(worktree, editable=False, allowed=None,
                                    readable=config.limits().allowed_protected),
                            [review_tool()]),
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
                           worktree: Path, finished: Finished) -> str:
    """Commit the step and push it to the run's branch.

    Parallel steps finish close together, and pushes to one branch cannot overlap (GitHub
    takes them one at a time and refuses one whose old value is stale). So each commit is
    stacked on the newest commit this process has for the branch, pushes go one at a time,
    and each push carries every commit stacked so far: a step whose commit an earlier push
    carried is done without pushing. A push that loses a race with another machine
    fetches, rebases and tries again.

    The token is asked for at each push, not at the step's start: a step can outlast the
    token it started with (an hour). One GitHub does not accept (revoked, or expired by
    GitHub's clock) is replaced once."""
    message = commit_message(run, step, str(finished.input.get("summary", "")))
    await git("commit", "--no-verify", "-q", "-F", "-", cwd=worktree, input=message.encode())
    assert run.base_sha is not None
    stack = _stacks.setdefault((id(asyncio.get_running_loop()), str(workspace.root),
                                run.branch), _Stack())
    alone = False  # True: build only on GitHub's head, not on other steps' pending commits
    races = blips = 0
    while True:
        async with workspace.locked():
            # Shared refs and the stack change only under the workspace lock.
            sha = await _stack_onto(worktree, run.branch, run.base_sha,
                                    None if alone else stack.tip)
            stack.tip = sha
        async with stack.pushing:
            before = await remote_branch_head_at(worktree, run.branch)
            if before is not None and await _is_ancestor(worktree, sha, before):
                break  # an earlier push carried this commit
            carry = sha
            if not alone and stack.tip and await _is_ancestor(worktree, sha, stack.tip):
                carry = stack.tip
            if before is None:
                await check_branch(svc, run)  # a branch the run pushed to is not recreated
            # The push must find the branch where this clone last saw it (or find no branch):
            # a branch deleted meanwhile is refused rather than pushed again. The lease
            # forces nothing: it is only given for a commit that builds on `before`.
            lease = before is None or await _is_ancestor(worktree, before, carry)
            expected = (before or "") if lease else None
            token = await git_token(svc, run)
            failure = await _push_once(workspace, worktree, run.branch, carry, token, expected)
            if failure is not None and auth_failed(failure):
                token = await git_token(svc, run, replaced=True)
                failure = await _push_once(workspace, worktree, run.branch, carry, token,
                                           expected)
            if failure is None:
                break
            async with workspace.locked():
                if stack.tip in (sha, carry):
                    stack.tip = None
                await _fetch_branch(worktree, run.branch, token)
        remote = await remote_branch_head_at(worktree, run.branch)
        if remote is not None and await _is_ancestor(worktree, sha, remote):
            break  # another push carried this commit after all
        if remote is None and before is not None:
            await check_branch(svc, run)  # the branch went away under the push
        if remote != before:
            # The branch moved while this push was on its way (another machine): build on
            # the new head and push again.
            races += 1
            if races >= PUSH_ATTEMPTS:
                raise StepFailed(f"push to {run.branch} kept racing other pushes")
            await svc.store.log(run.id, "push", f"push raced another push (try {races}); "
                                "rebasing onto the new branch head", step=step.id)
            continue
        if repository_gone(failure):
            raise RepositoryGone.of(failure)
        if transient_git_failure(failure):
            # GitHub's side failed (a 5xx, a dropped connection), and the push did not land
            # (the fetch above says so): wait and push again.
            blips += 1
            if blips > len(PUSH_RETRY_WAITS):
                raise GitError(("push",), 1, failure)  # transient: the job is tried later
            wait = PUSH_RETRY_WAITS[blips - 1]
            await svc.store.log(run.id, "push", f"GitHub failed the push "
                                f"({git_error_line(failure)}); pushing again in {wait:g} s",
                                step=step.id)
            await asyncio.sleep(wait)
            continue
        # GitHub refused the push itself. If it carried other steps' commits, one of those
        # may be the cause: try once with this step's commit alone.
        carried = await git("rev-list", "--count", f"{remote or run.base_sha}..{carry}",
                            cwd=worktree)
        if alone or int(carried.strip() or 0) <= 1:
            raise StepFailed(push_refusal(failure, run.branch)
                             or f"push failed: {failure.strip()[:300]}")
        alone = True
        await svc.store.log(run.id, "push", "push refused; trying again with this step's "
                            "commit alone", step=step.id)
    await svc.store.log(run.id, "push", f"pushed {sha[:7]} to {run.branch}", step=step.id,
                        sha=sha)
    async with workspace.locked():
        await _advance_head(svc, run, worktree, sha)
    return sha


class _Stack:
    """Per branch: the newest commit this process stacked (None: use GitHub's head), and
    the lock that makes its pushes go one at a time."""

    def __init__(self) -> None:
        self.tip: str | None = None
        self.pushing = asyncio.Lock()


_stacks: dict[tuple[int, str, str], _Stack] = {}


async def _stack_onto(worktree: Path, branch: str, base: str, pending: str | None) -> str:
    """Move this step's commit (HEAD) onto the branch's newest known commit: `pending` when
    it builds on the branch as last fetched, else the branch head, else `base`. Returns the
    new HEAD."""
    known = await remote_branch_head_at(worktree, branch)
    parent = await resolve_commit("HEAD~1", worktree)
    assert parent is not None
    tip = known or base
    if pending is not None and pending != tip and await _is_ancestor(worktree, tip, pending):
        tip = pending
    if parent != tip:
        try:
            await git("rebase", "--onto", tip, parent, cwd=worktree)
        except GitError as error:
            await git("rebase", "--abort", cwd=worktree, check=False)
            raise StepFailed(f"rebase onto {branch} conflicted") from error
    head = (await git("rev-parse", "HEAD", cwd=worktree)).strip()
    if head == tip:  # git dropped the commit: its change is on the branch already
        raise StepFailed(f"the step's change is already on {branch}")
    return head


async def _fetch_branch(worktree: Path, branch: str, token: str) -> None:
    """Bring the branch's remote-tracking ref up to date; drop it when GitHub has no such
    branch any more (an explicit refspec fails then, and leaves the ref as it was)."""
    tracking = f"refs/remotes/origin/{branch}"
    try:
        await git("fetch", "--no-tags", "origin", f"+refs/heads/{branch}:{tracking}",
                  cwd=worktree, token=token)
    except GitError as exc:
        if "couldn't find remote ref" in exc.output:
            await git("update-ref", "-d", tracking, cwd=worktree, check=False)


async def _push_once(workspace: Workspace, worktree: Path, branch: str, sha: str,
                     token: str, expected: str | None = None) -> str | None:
    """Push `sha` to the branch; None on success, git's answer otherwise. Pushed by URL so
    that git does not update the shared remote-tracking ref outside the lock. `expected`:
    the branch's head the push requires ("": no such branch), checked by git against what
    GitHub advertises (`--force-with-lease`; pass it only for a fast-forward of it)."""
    lease = [] if expected is None else [f"--force-with-lease=refs/heads/{branch}:{expected}"]
    try:
        await git("push", "--porcelain", *lease, workspace.clone_url,
                  f"{sha}:refs/heads/{branch}", cwd=worktree, token=token)
    except GitError as exc:
        if exc.returncode < 0:
            raise  # timed out: transient, the job is retried
        return exc.output
    async with workspace.locked():
        tracking = f"refs/remotes/origin/{branch}"
        known = await remote_branch_head_at(worktree, branch)
        if known is None or await _is_ancestor(worktree, known, sha):
            await git("update-ref", tracking, sha, cwd=worktree)
    return None


async def _advance_head(svc: Services, run: Run, worktree: Path, sha: str) -> None:
    """Record `sha` as the run's head unless a newer commit already is (under the workspace
    lock, so that parallel steps of this process record their pushes in order)."""
    await svc.store.map_commit(run.repo_key, sha, run.id)
    current = (await svc.store.get(run.id) or run).head_sha
    if current is None or current == sha or await _is_ancestor(worktree, current, sha):
        await svc.store.set_fields(run.id, head_sha=sha)
