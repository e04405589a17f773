"""After the pull request: the repository's CI decides.

`begin` starts waiting on the run's head commit (one entry in `run.ci` per commit waited on).
CI webhooks only say "look again": each one notes its time and queues an `evaluate_ci` job
deferred by the settle window; a timer job fires after the no-CI timeout; the periodic
reconcile queues one too, so a lost webhook only delays a run. `evaluate_ci` reads the
commit's checks and statuses from the API (the authority, not the webhooks) and decides:

- green (or no CI at all): mark the PR ready, ask the labeler for review, label `agent:done`;
- red: `fix_ci` collects the evidence, re-runs an infrastructure or flaky failure once
  without changing code, says so when the base branch fails the same way, plans a fix
  within the CI-fix budget, or stops with a diagnosis for a human.

Every decision for a run is taken under the run's lock, and only for the commit the run is
waiting on; a job that finds the run has moved on does nothing.
"""

from __future__ import annotations

import re
import time
from typing import Any

from arq import Retry
from githubkit.exception import GraphQLFailed, RequestFailed

from app import cistate, tracking
from app.budget import Budget, BudgetExceeded
from app.ci import (
    FailureKind,
    Reading,
    Timing,
    Verdict,
    classify,
    failing_tests,
    read_ci,
)
from app.constants import Job
from app.events import Event
from app.fixing import Failure, FixNotPlanned, as_plan_steps, plan_fix, renamed
from app.github import remove_label
from app.limits import Limits
from app.logs import get_logger
from app.plan import Plan
from app.planning import load_config
from app.pulls import upsert_pull_request
from app.report import neutralise
from app.runs import RUN_RETENTION, Run, RunStatus
from app.services import Services
from app.stopping import NEEDS_HUMAN_LABEL, stop_run
from app.workspace import branch_head, workspace_for

log = get_logger(__name__)

DONE_LABEL = "agent:done"
LAST_EVENT_KEY = "conductor:ci:{run_id}:{sha}:last-event"
# Set while and once the diagnosis for a CI attempt is posted on the pull request.
DIAGNOSIS_KEY = "conductor:ci:{run_id}:{sha}:{attempt}:diagnosis"
LOCK_WAIT = 20.0
MARK_READY = """
mutation($id: ID!) {
  markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } }
}
"""


# -- waiting -----------------------------------------------------------------------------------

async def begin(svc: Services, run_id: str) -> None:
    """Wait for CI on the run's head (a new entry in `run.ci` unless one is open for it)."""
    now = time.time()

    def change(run: Run) -> None:
        if run.head_sha is None:
            return  # nothing was pushed: nothing for CI to verify
        run.status = RunStatus.VERIFYING
        last = run.ci[-1] if run.ci else None
        if last is None or last["sha"] != run.head_sha or last.get("finished_at"):
            run.ci.append({"sha": run.head_sha, "started_at": now})

    run = await svc.store.update(run_id, change)
    if run is None or run.head_sha is None:
        return
    await svc.store.log(run.id, "ci", f"waiting for CI on {run.head_sha[:7]} "
                        f"(CI attempt {len(run.ci)})", sha=run.head_sha)
    settings = svc.settings
    number = len(run.ci)  # a re-run of the same commit is an attempt with timers of its own
    await evaluate_soon(svc, run.id, run.head_sha, f"begin-{number}",
                        settings.conductor_ci_settle_seconds)
    await evaluate_soon(svc, run.id, run.head_sha, f"no-ci-{number}",
                        settings.conductor_no_ci_timeout + 0.5)
    await tracking.soon(svc, run.id)


async def evaluate_soon(svc: Services, run_id: str, sha: str, tag: str,
                        defer: float) -> None:
    await svc.redis.enqueue_job(Job.EVALUATE_CI, run_id, sha,
                                _job_id=f"ci:{run_id}:{sha[:12]}:{tag}", _defer_by=defer)


async def ci_event(ctx: dict[str, Any], event: Event) -> str:
    """A check suite, check run, workflow run or status for some commit: if it is the commit
    a run waits on, note the time and look again once the settle window has passed."""
    svc: Services = ctx["services"]
    repo = event.repo_key
    sha = commit_of(event.name, event.payload)
    if repo is None or sha is None:
        return "ignored: no commit in the event"
    run_id = await svc.store.run_for_commit(repo, sha)
    run = await svc.store.get(run_id) if run_id else None
    if run is None:
        return f"ignored: {sha[:7]} is no run's head"
    if run.head_sha != sha or run.status is not RunStatus.VERIFYING:
        return f"ignored: run {run.id} is {run.status.value} on {str(run.head_sha)[:7]}"
    await svc.redis.set(LAST_EVENT_KEY.format(run_id=run.id, sha=sha), repr(time.time()),
                        ex=7 * 24 * 3600)
    await evaluate_soon(svc, run.id, sha, f"event-{event.delivery_id}",
                        svc.settings.conductor_ci_settle_seconds)
    return f"CI result for run {run.id} noted"


def commit_of(event: str, payload: dict[str, Any]) -> str | None:
    """The commit a CI webhook is about."""
    holder = payload if event == "status" else payload.get(event) or {}
    sha = holder.get("sha" if event == "status" else "head_sha")
    return sha if isinstance(sha, str) and len(sha) == 40 else None


# -- deciding ----------------------------------------------------------------------------------

async def evaluate_ci(ctx: dict[str, Any], run_id: str, sha: str) -> str:
    svc: Services = ctx["services"]
    token = await svc.store.lock_run(run_id, wait=LOCK_WAIT)
    if token is None:
        raise Retry(defer=1)
    try:
        return await _evaluate(svc, run_id, sha)
    finally:
        await svc.store.unlock_run(run_id, token)


def _last_attempt(run: Run, sha: str) -> dict[str, Any] | None:
    """The run's latest CI attempt, if it is for `sha`."""
    return run.ci[-1] if run.ci and run.ci[-1]["sha"] == sha else None


def _open_attempt(run: Run, sha: str) -> dict[str, Any] | None:
    last = _last_attempt(run, sha)
    return last if last is not None and not last.get("finished_at") else None


async def _evaluate(svc: Services, run_id: str, sha: str) -> str:
    run = await svc.store.get(run_id)
    if run is None or run.status is not RunStatus.VERIFYING or run.head_sha != sha:
        return "stale: the run is not waiting on this commit"
    last_attempt = _last_attempt(run, sha)
    if last_attempt is None:
        return "stale: no CI attempt for this commit"
    now = time.time()
    if last_attempt.get("finished_at"):
        # Decided, and the run still waits: the job that decided died before acting on it.
        # Act again; every action below is safe to repeat.
        reading = Reading(Verdict(last_attempt["verdict"]), list(last_attempt.get("failing", [])),
                          list(last_attempt.get("waiting", [])),
                          list(last_attempt.get("passed", [])))
    else:
        reading = await _read(svc, run, sha, last_attempt["started_at"], now)
        if reading.verdict is Verdict.PENDING:
            return f"pending: {reading.describe()}"
        run = await _record(svc, run.id, sha, reading)
        await svc.store.log(run.id, "ci", f"CI attempt {len(run.ci)} on {sha[:7]}: "
                            f"{reading.describe()}", sha=sha, verdict=reading.verdict.value)
    return await _act(svc, run, sha, reading, last_attempt["started_at"], now)


async def _read(svc: Services, run: Run, sha: str, started: float, now: float) -> Reading:
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        snapshot = await cistate.snapshot(gh, owner, name, sha)
        required = await cistate.required_checks(gh, owner, name, run.default_branch)
    last = await svc.redis.get(LAST_EVENT_KEY.format(run_id=run.id, sha=sha))
    settings = svc.settings
    timing = Timing(now=now, started=started, last_event=float(last) if last else None,
                    settle=settings.conductor_ci_settle_seconds,
                    no_ci_timeout=settings.conductor_no_ci_timeout)
    reading = read_ci(snapshot, timing, own_app_id=settings.github_app_id, required=required)
    if reading.verdict is Verdict.PENDING and now - started >= settings.conductor_ci_timeout:
        return Reading(Verdict.MISSING, [], reading.waiting, reading.passed)
    return reading


async def _act(svc: Services, run: Run, sha: str, reading: Reading, started: float,
               now: float) -> str:
    head = await branch_head(svc, run, run.branch)
    if head is not None and head != sha:
        # Pushed to since, and the push's webhook has not come (or never will): CI on a
        # commit the pull request no longer has decides nothing.
        return await pushed_by_person(svc, run, head, None, head=head)
    if reading.verdict in (Verdict.GREEN, Verdict.NO_CI):
        await _succeed(svc, run, reading)
        return f"CI {reading.verdict.value}: ready for review"
    if reading.verdict is Verdict.MISSING:
        waited = int(now - started)
        await needs_human(svc, run, f"CI on `{sha[:7]}` did not finish: "
                          f"{reading.describe()} (waited {waited} s)")
        return "CI incomplete: needs a human"
    await svc.store.set_fields(run.id, status=RunStatus.FIXING)
    await svc.redis.enqueue_job(Job.FIX_CI, run.id, sha,
                                _job_id=f"ci-fix:{run.id}:{sha[:12]}:{len(run.ci)}")
    await tracking.soon(svc, run.id)
    return f"CI red: {reading.describe()}"


async def _record(svc: Services, run_id: str, sha: str, reading: Reading,
                  **extra: Any) -> Run:
    now = time.time()

    def change(run: Run) -> None:
        attempt = _open_attempt(run, sha)
        if attempt is not None:
            attempt.update(finished_at=now, verdict=reading.verdict.value,
                           detail=reading.describe(), failing=reading.failing,
                           waiting=reading.waiting, passed=reading.passed, **extra)

    run = await svc.store.update(run_id, change)
    assert run is not None
    return run


async def _succeed(svc: Services, run: Run, reading: Reading) -> None:
    owner, name = run.repo.split("/", 1)
    assert run.pr_number is not None
    notes: list[str] = []
    async with svc.github.installation(run.installation_id) as gh:
        pull = (await gh.rest.pulls.async_get(owner, name, run.pr_number)).parsed_data
        refused = await _mark_ready(gh, pull.node_id) if pull.draft else None
        if refused is not None:
            # A draft with green CI waits for nobody: say so instead of failing the job (and
            # again at every reconcile) while the run looks as if it still waits on CI.
            await needs_human(svc, run, f"CI passed, but GitHub would not mark pull request "
                              f"#{run.pr_number} ready for review: {refused}. Mark it ready "
                              "by hand, or comment `/agent retry` to try again.")
            return
        try:
            await gh.rest.pulls.async_request_reviewers(owner, name, run.pr_number,
                                                        reviewers=[run.triggered_by])
            notes.append(f"review requested from @{run.triggered_by}")
        except RequestFailed as exc:
            if exc.response.status_code != 422:
                raise
            notes.append(f"could not request review from @{run.triggered_by} (GitHub: "
                         f"{_message(exc)})")
        for number in {run.issue_number, run.pr_number}:
            await gh.rest.issues.async_add_labels(owner, name, number, labels=[DONE_LABEL])
            await remove_label(gh, owner, name, number, NEEDS_HUMAN_LABEL)
    await svc.store.log(run.id, "pr", f"pull request #{run.pr_number} is ready for review; "
                        + "; ".join(notes))
    if reading.verdict is Verdict.NO_CI:
        why = (f"no CI reported within {int(svc.settings.conductor_no_ci_timeout)} s, so "
               "nothing verified this change")
    else:
        why = "CI passed" + (f" ({', '.join(reading.passed[:6])})" if reading.passed else "")
    await stop_run(svc, run, RunStatus.DONE,
                   f"pull request #{run.pr_number} is ready for review: {why}")
    await upsert_pull_request(svc, run)


async def _mark_ready(gh: Any, node_id: str) -> str | None:
    """Mark the draft ready; GitHub's reasons when it refuses. GraphQL reports a refusal
    with HTTP 200 and an `errors` list (githubkit raises GraphQLFailed)."""
    try:
        await gh.async_graphql(MARK_READY, {"id": node_id})
    except GraphQLFailed as exc:
        return "; ".join(e.message for e in exc.response.errors or [])[:300] or "no reason"
    return None


def _message(exc: RequestFailed) -> str:
    try:
        return str(exc.response.json().get("message", exc.response.status_code))[:200]
    except ValueError:
        return str(exc.response.status_code)


async def needs_human(svc: Services, run: Run, diagnosis: str) -> None:
    """Stop, label the issue and the PR, and explain on the PR what went wrong.

    Safe to repeat: a job that fails part-way (a label GitHub would not add) runs again and
    finds the run still active; the labels are added again, which changes nothing, and the
    diagnosis is posted once for the CI attempt."""
    owner, name = run.repo.split("/", 1)

    def note(fresh: Run) -> None:
        if fresh.status.active:
            fresh.diagnosis = diagnosis

    fresh = await svc.store.update(run.id, note) or run
    if not fresh.status.active:
        return  # stopped meanwhile, for a reason that was told already
    if fresh.pr_number is not None:
        async with svc.github.installation(fresh.installation_id) as gh:
            await gh.rest.issues.async_add_labels(owner, name, fresh.pr_number,
                                                  labels=[NEEDS_HUMAN_LABEL])
            await _post_diagnosis(svc, gh, fresh, diagnosis)
    headline = diagnosis.split("\n", 1)[0].removeprefix("**What failed:** ")
    await stop_run(svc, fresh, RunStatus.NEEDS_HUMAN, headline[:300],
                   notify=fresh.pr_number is None)
    if fresh.pr_number is not None:
        await upsert_pull_request(svc, fresh)


async def _post_diagnosis(svc: Services, gh: Any, run: Run, diagnosis: str) -> None:
    """The diagnosis comment on the PR, once per CI attempt: the key is taken before posting
    and given back when the post fails, so that the job's next try posts it."""
    assert run.pr_number is not None
    owner, name = run.repo.split("/", 1)
    key = DIAGNOSIS_KEY.format(run_id=run.id, sha=str(run.head_sha)[:12], attempt=len(run.ci))
    if not await svc.redis.set(key, "1", nx=True, ex=RUN_RETENTION):
        return
    try:
        await gh.rest.issues.async_create_comment(
            owner, name, run.pr_number,
            body=f"@{run.triggered_by} Conductor stopped run `{run.id}` and needs a "
                 f"human.\n\n{diagnosis}\n\nPush a fix to this branch, or comment "
                 "`/agent retry [instructions]` to let Conductor try again with a fresh "
                 "CI-fix budget.")
    except BaseException:
        await svc.redis.delete(key)
        raise


# -- fixing ------------------------------------------------------------------------------------

async def fix_ci(ctx: dict[str, Any], run_id: str, sha: str) -> str:
    svc: Services = ctx["services"]
    run = await svc.store.get(run_id)
    if run is None or run.status is not RunStatus.FIXING:
        return "stale: the run is not fixing this commit"
    if run.head_sha != sha:
        # Someone pushed after CI failed and before this job ran (their push found the run
        # fixing, not waiting): their commit is what CI has to judge now.
        await begin(svc, run.id)
        return f"stale: {str(run.head_sha)[:7]} was pushed since; waiting for CI on it"
    own = svc.settings.github_app_id
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        snapshot = await cistate.snapshot(gh, owner, name, sha)
        failing, failed_statuses = snapshot.failed(own)
        evidence = await cistate.evidence(gh, owner, name, sha, failing)
        for status in failed_statuses:
            evidence.add(f"status `{status.context}` ({status.state})",
                         f"{status.description}\n{status.target_url or ''}")
        failed_suites = snapshot.failed_suites(own)
        for suite in failed_suites:
            evidence.conclusions.append(suite.conclusion or "")
            evidence.add(f"check suite of {suite.app} ({suite.conclusion})",
                         "It concluded without running a single check: a workflow that could "
                         "not start (an invalid workflow file) does that; its page on GitHub "
                         "says why.")
        names = ([r.name for r in failing] + [s.context for s in failed_statuses]
                 + [f"{s.app} checks" for s in failed_suites])
        kind = classify(evidence.text, evidence.conclusions)
        tests = failing_tests(evidence.text)
        # One re-run per commit, counted afresh after `/agent retry`.
        since = max((r["at"] for r in run.retries), default=0.0)
        rerun_before = any(a["sha"] == sha and a.get("rerun") and a["started_at"] >= since
                           for a in run.ci)
        rerun_denied = False
        if kind is FailureKind.INFRA and evidence.rerunnable and not rerun_before:
            if await cistate.rerun_failed_jobs(gh, owner, name, evidence.rerunnable):
                return await _after_rerun(svc, run, sha, names)
            rerun_denied = True
        on_base = (await cistate.failing_on(gh, owner, name, run.base_sha, names, own)
                   if run.base_sha else [])
    what = _what_failed(sha, names, kind, tests)
    await _note_attempt(svc, run.id, sha, kind=kind.value, tests=tests[:20])
    if kind is FailureKind.INFRA:
        if evidence.conclusions and set(evidence.conclusions) == {"startup_failure"}:
            why = ("the workflow could not start (GitHub concludes `startup_failure` when a "
                   "workflow file is invalid), so no job ran; its page on GitHub says why")
        elif rerun_before:
            why = ("it failed again after a re-run, and its output shows no failing test, "
                   "lint or build error")
        elif rerun_denied:
            why = ("its output shows no failing test, lint or build error, and GitHub refused "
                   "to re-run it: the App needs the `actions: write` permission for that")
        else:
            why = ("its output shows no failing test, lint or build error, and it is not a "
                   "GitHub Actions run Conductor could re-run")
        await _give_up(svc, run, what, f"This looks like an infrastructure problem or "
                       f"a flaky check: {why}.", evidence.text)
        return "infrastructure failure: needs a human"
    if on_base:
        await _give_up(svc, run, what,
                       f"{', '.join(f'`{n}`' for n in on_base)} also fails on "
                       f"`{run.default_branch}` (`{str(run.base_sha)[:7]}`), so the failure "
                       "is not caused by this pull request and Conductor will not try to fix "
                       "it here.", evidence.text)
        return "also red on the base branch: needs a human"
    limits = await _limits(svc, run)
    if run.ci_fixes >= limits.max_ci_fix_attempts:
        allowed = limits.max_ci_fix_attempts
        stopped = (f"Conductor used its {allowed} CI-fix attempt{'' if allowed == 1 else 's'}"
                   " for this run" if allowed else "Conductor may not fix CI failures in this "
                   "repository") + (f": the limit is `limits.max_ci_fix_attempts` ({allowed}) "
                                    "in `.github/conductor.yml`.")
        await _give_up(svc, run, what, None, evidence.text, stopped=stopped)
        return "CI-fix budget used: needs a human"

    failure = Failure(sha=sha, kind=kind.value, tests=tests, evidence=evidence.text,
                      previous=_previous(run))
    diagnosis = _diagnosis(run, what, None, evidence.text)
    try:
        fix = await plan_fix(svc, run, failure, limits, Budget(svc.redis, run.id, limits))
    except (FixNotPlanned, BudgetExceeded) as exc:
        await _give_up(svc, run, what, f"Conductor could not plan a fix: {exc}",
                       evidence.text)
        return "no fix planned: needs a human"
    return await _start_fix(svc, run.id, sha, fix, diagnosis)


async def _note_attempt(svc: Services, run_id: str, sha: str, **fields: Any) -> None:
    def change(run: Run) -> None:
        if (attempt := _last_attempt(run, sha)) is not None:
            attempt.update(fields)

    await svc.store.update(run_id, change)


async def _after_rerun(svc: Services, run: Run, sha: str, names: list[str]) -> str:
    await _note_attempt(svc, run.id, sha, rerun=True, action="re-ran the failed jobs without "
                        "changing code (infrastructure or flaky)")
    await svc.store.log(run.id, "ci", f"{', '.join(names)} failed with no test, lint or build "
                        "error in the output: re-running the failed jobs once before changing "
                        "any code", sha=sha)
    await begin(svc, run.id)  # a new attempt on the same commit
    return "re-ran the failed jobs"


async def _start_fix(svc: Services, run_id: str, sha: str, fix: Plan, diagnosis: str) -> str:
    started: list[str] = []

    def change(run: Run) -> None:
        plan = dict(run.plan or {})
        taken = {s["id"] for s in plan.get("steps", [])}
        run.fix_round += 1
        run.ci_fixes += 1
        steps = renamed(fix, run.fix_round, taken)
        plan["steps"] = [*plan.get("steps", []), *as_plan_steps(steps)]
        run.plan = plan
        run.fix_steps = [*run.fix_steps, *(s.id for s in steps)]
        run.diagnosis = diagnosis
        run.status = RunStatus.RUNNING
        if (attempt := _last_attempt(run, sha)) is not None:
            attempt.update(action=f"fix {run.fix_round}: {fix.summary}"[:300],
                              fix={"round": run.fix_round, "summary": fix.summary,
                                   "rationale": fix.rationale,
                                   "steps": [s.id for s in steps]})
        started[:] = [s.id for s in steps]

    run = await svc.store.update(run_id, change)
    assert run is not None
    await svc.store.init_steps(run.id, started)
    await svc.store.log(run.id, "plan", f"CI fix {run.ci_fixes} planned: "
                        f"{', '.join(started)}", steps=started)
    await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, f"fix{run.fix_round}",
                                _job_id=f"schedule:{run.id}:fix{run.fix_round}")
    await tracking.refresh(svc, run)
    return f"CI fix {run.ci_fixes} planned: {', '.join(started)}"


async def _limits(svc: Services, run: Run) -> Limits:
    workspace = workspace_for(svc, run)
    if run.base_sha is None or not (workspace.clone / ".git").exists():
        return Limits()
    config = await load_config(svc, run, workspace, run.base_sha, record_errors=False)
    return config.limits()


def _what_failed(sha: str, names: list[str], kind: FailureKind, tests: list[str]) -> str:
    checks = ", ".join(f"`{n}`" for n in names) or "CI"
    text = f"{checks} failed on `{sha[:7]}` ({kind.value})."
    if tests:
        text += " Failing tests: " + ", ".join(f"`{t}`" for t in tests[:10]) + "."
    return text


def _previous(run: Run) -> list[str]:
    lines = []
    for number, attempt in enumerate(run.ci, 1):
        if attempt.get("verdict") != "red":
            continue
        line = f"CI attempt {number} on `{attempt['sha'][:7]}` failed: {attempt.get('detail')}"
        fix = attempt.get("fix")
        if fix:
            line += f". Fix {fix['round']} tried: {fix['summary']} (believed cause: " \
                    f"{fix['rationale']})"
        elif attempt.get("rerun"):
            line += ". The failed jobs were re-run"
        lines.append(line[:1000])
    return lines


def _diagnosis(run: Run, what: str, belief: str | None, evidence: str,
               stopped: str | None = None) -> str:
    tried = _previous(run)[:-1] if run.ci else []
    fixes = [a["fix"] for a in run.ci if a.get("fix")]
    if belief is None:
        belief = (f"The last fix assumed: {fixes[-1]['rationale'].rstrip('.')}. CI still "
                  "fails, so that was wrong or incomplete; the output below shows what fails now."
                  if fixes else "See the CI output below.")
    # Check names, commit messages and model text are not ours: no pings, no closing keywords.
    parts = [f"**What failed:** {neutralise(what)}",
             "**What was tried:** " + (neutralise("; ".join(tried)) if tried else "nothing yet."),
             f"**What Conductor believes is wrong:** {neutralise(belief)}"]
    if stopped:
        parts.append(f"**Why Conductor stopped:** {stopped}")
    longest = max((len(m) for m in re.findall(r"`+", evidence)), default=0)
    fence = "`" * max(3, longest + 1)  # CI output cannot close the code block
    parts.append(f"<details><summary>CI output</summary>\n\n{fence}text\n"
                 f"{evidence[:12_000]}\n{fence}\n\n</details>")
    return "\n\n".join(parts)


async def _give_up(svc: Services, run: Run, what: str, belief: str | None,
                   evidence: str, *, stopped: str | None = None) -> None:
    diagnosis = _diagnosis(run, what, belief, evidence, stopped)
    await needs_human(svc, run, diagnosis)


# -- people's pushes ---------------------------------------------------------------------------

async def pushed_by_person(svc: Services, run: Run, sha: str, who: str | None, *,
                           head: str | None = None) -> str:
    """Someone pushed `sha` to the run's branch (`pull_request.synchronize` not sent by the
    bot). The branch's head as GitHub has it now decides, not the event: a force-push can
    reset the branch to a commit the run pushed earlier, and events come out of order.
    `head`: that head, when the caller has just read it."""
    await svc.store.map_commit(run.repo_key, sha, run.id)
    head = head or await branch_head(svc, run, run.branch)
    if head is None:
        return f"ignored: {run.branch} is gone"  # GitHub closes the pull request
    if head == run.head_sha:
        return "already known"
    if head != sha:
        await svc.store.map_commit(run.repo_key, head, run.id)
        sha = head
    await svc.store.set_fields(run.id, head_sha=sha)
    what = f"@{who} pushed {sha[:7]} to {run.branch}" if who else \
        f"someone pushed {run.branch} to {sha[:7]}"
    await svc.store.log(run.id, "push", f"{what}; Conductor builds on it and never "
                        "overwrites it", sha=sha, by=who)
    if run.status is RunStatus.VERIFYING:
        await begin(svc, run.id)
        return f"waiting for CI on {sha[:7]}"
    await tracking.soon(svc, run.id)
    return f"noted {sha[:7]}"

