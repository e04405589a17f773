"""A labeled issue becomes a run: check who labeled it, claim the issue, acknowledge, plan.
A labeled pull request or closed issue gets one reply saying why nothing started.

Safe to run twice for one delivery (arq runs jobs at least once): the run id is derived from
the delivery, the issue claim is compare-and-set, and every GitHub write is find-or-create.
"""

from __future__ import annotations

import re
from typing import Any

from app import tracking
from app.constants import Job
from app.events import Event, record
from app.logs import get_logger
from app.permissions import may_steer
from app.routing import COMMAND, START_RUN
from app.runs import Run, RunStatus, repo_key
from app.services import Services

log = get_logger(__name__)

REPLIED_KEY = "conductor:replied:{delivery}"
_SLUG = re.compile(r"[^a-z0-9]+")


def branch_name(number: int, title: str, attempt: int) -> str:
    slug = _SLUG.sub("-", title.lower()).strip("-")[:40].rstrip("-") or "change"
    suffix = f"-{attempt}" if attempt > 1 else ""
    return f"conductor/issue-{number}-{slug}{suffix}"


def run_id_for(repo: str, number: int, delivery: str) -> str:
    name = _SLUG.sub("-", repo.split("/")[-1].lower()).strip("-")[:20]
    return f"{name}-{number}-{_SLUG.sub('', delivery.lower())[:12]}"


async def reply_once(svc: Services, delivery: str, installation_id: int, repo: str,
                     number: int, body: str) -> None:
    """Post `body` on the issue unless this delivery already got its reply."""
    if not await svc.redis.set(REPLIED_KEY.format(delivery=delivery), 1, nx=True,
                               ex=7 * 24 * 3600):
        return
    owner, name = repo.split("/", 1)
    try:
        async with svc.github.installation(installation_id) as gh:
            await gh.rest.issues.async_create_comment(owner, name, number, body=body)
    except BaseException:
        await svc.redis.delete(REPLIED_KEY.format(delivery=delivery))
        raise


async def report_failed_event(ctx: dict[str, Any], event: Event, why: str) -> None:
    """An event whose handling failed for good: recorded on the event log with the reason,
    and, when a person asked for something (the label, a command), answered on the issue or
    pull request, so that nobody waits for a reply that will not come."""
    log.error("event failed", delivery=event.delivery_id, github_event=event.name,
              kind=event.kind, repo=event.repo_full_name, reason=why)
    try:
        await record(ctx["redis"], event, f"failed: {why}")
    except Exception:
        log.exception("could not record a failed event", delivery=event.delivery_id)
    svc: Services | None = ctx.get("services")
    if svc is None or event.kind not in (START_RUN, COMMAND):
        return
    payload = event.payload
    thread = payload.get("issue") or payload.get("pull_request")
    number = thread.get("number") if isinstance(thread, dict) else None
    sender = payload.get("sender")
    login = sender.get("login") if isinstance(sender, dict) else None
    repo, installation_id = event.repo_full_name, event.installation_id
    if not (isinstance(number, int) and isinstance(repo, str) and "/" in repo
            and isinstance(installation_id, int)):
        return
    if event.kind == START_RUN:
        await _abandon_start(svc, event, repo, number, why)
    mention = f"@{login} " if isinstance(login, str) else ""
    again = ("remove and add the label again" if event.kind == START_RUN
             else "comment the command again")
    body = (f"{mention}Conductor could not finish handling this: {why}. To try again, "
            f"{again}; if it keeps failing, the server's logs have the details under delivery "
            f"`{event.delivery_id}`.")
    try:
        await reply_once(svc, f"{event.delivery_id}:failed", installation_id, repo, number,
                         body)
    except Exception:
        log.exception("could not report a failed event", delivery=event.delivery_id)


async def _abandon_start(svc: Services, event: Event, repo: str, number: int, why: str) -> None:
    """The run this delivery claimed, if it never got as far as planning, gives the issue
    back: otherwise it would hold the issue with no job to carry it on, and the advice to
    label the issue again would meet "a run is already active"."""
    run_id = run_id_for(repo, number, event.delivery_id)
    abandoned = False

    def abandon(run: Run) -> None:
        nonlocal abandoned
        abandoned = run.status is RunStatus.STARTING
        if abandoned:
            run.status = RunStatus.FAILED
            run.stop_reason = f"could not start: {why}"

    try:
        await svc.store.update(run_id, abandon)
        if not abandoned:
            return
        await svc.store.release_issue(repo_key(event.repo_id, repo), number, run_id)
        await svc.store.log(run_id, "stop", f"could not start: {why}")
    except Exception:
        log.exception("could not give up a run that did not start", run=run_id)


def not_startable(event: Event, label: str) -> tuple[str, str] | None:
    """Why the trigger label on this issue or pull request starts no run, and what to tell
    the labeler (None when it starts one)."""
    issue = event.payload.get("issue") or {}
    if event.name == "pull_request" or issue.get("pull_request") is not None:
        return "a pull request", (
            f"the `{label}` label starts Conductor on an issue, not on a pull request: "
            "label the issue that asks for the change instead. On a pull request Conductor "
            "opened, comment `/agent retry` to try again.")
    if issue.get("state") == "closed":
        return "the issue is closed", (
            f"issue #{issue.get('number')} is closed, so Conductor did not start. Reopen it, "
            f"then remove and add the `{label}` label again.")
    return None


async def start_run(ctx: dict[str, Any], event: Event) -> str:
    svc: Services = ctx["services"]
    payload = event.payload
    repo: str = payload["repository"]["full_name"]
    issue: dict[str, Any] = payload.get("issue") or payload["pull_request"]
    number: int = issue["number"]
    labeler: str = payload["sender"]["login"]
    installation_id = event.installation_id
    if installation_id is None:
        return "ignored: no installation"
    label = (payload.get("label") or {}).get("name") or svc.settings.conductor_trigger_label
    refused = not_startable(event, label)
    if refused is not None:
        await reply_once(svc, event.delivery_id, installation_id, repo, number,
                         f"@{labeler} {refused[1]}")
        return f"not started: {refused[0]}"

    if not await may_steer(svc.redis, svc.github, installation_id, repo, labeler):
        await reply_once(
            svc, event.delivery_id, installation_id, repo, number,
            f"@{labeler} thanks — only people with write, maintain or admin permission on "
            f"this repository can start Conductor with `{label}`. Ask a maintainer to add "
            "the label.",
        )
        return f"refused: {labeler} may not trigger runs"

    run_id = run_id_for(repo, number, event.delivery_id)
    key = repo_key(event.repo_id, repo)
    holder = await svc.store.claim_issue(key, number, run_id)
    if holder != run_id:
        active = await svc.store.get(holder) if holder else None
        # No record yet means the holder's job is still creating it: that run is active.
        if active is None or active.status.active:
            return f"ignored: run {holder} is already active on this issue"
        # The holder ended without releasing its claim; take the issue over.
        await svc.store.release_issue(key, number, active.id)
        if await svc.store.claim_issue(key, number, run_id) != run_id:
            return "ignored: another run claimed the issue first"

    run = await svc.store.get(run_id)
    if run is None:
        attempt = await svc.store.next_attempt(key, number)
        run = Run(
            id=run_id, repo=repo, repo_id=event.repo_id, installation_id=installation_id,
            issue_number=number,
            issue_title=str(issue.get("title") or ""), triggered_by=labeler,
            trigger_delivery=event.delivery_id, attempt=attempt,
            branch=branch_name(number, str(issue.get("title") or ""), attempt),
            default_branch=str(payload["repository"].get("default_branch") or "main"),
        )
        await svc.store.create(run)
        await svc.store.log(run_id, "trigger",
                            f"labeled by @{labeler}; attempt {attempt} on {run.branch}")
    owner, name = repo.split("/", 1)
    async with svc.github.installation(installation_id) as gh:
        # Creating the same reaction again answers 200 with the existing one.
        await gh.rest.reactions.async_create_for_issue(owner, name, number, content="eyes")
    if run.status is RunStatus.STARTING:
        run.status = RunStatus.PLANNING
        await svc.store.save(run)
    await svc.redis.enqueue_job(Job.PLAN_RUN, run_id, _job_id=f"plan:{run_id}")
    # The run is under way now. A tracking comment GitHub refuses for a while (a secondary
    # rate limit, say) is left to the tracking job, which tries again: it delays the comment,
    # not the run, and does not fail this event.
    try:
        await tracking.refresh(svc, run)
    except Exception as exc:
        log.warning("tracking comment not posted yet; its job tries again", run=run_id,
                    error=f"{type(exc).__name__}: {exc}")
        await tracking.soon(svc, run_id)
    log.info("run started", run=run_id, repo=repo, issue=number, by=labeler)
    return f"run {run_id} started"
