"""`/agent …` commands in issue and pull request comments.

Parsing is pure: a command counts only at the very start of a comment (quoted lines and code
blocks do not), one comment is one command. Handling checks the author's permission, reacts
👀 on receipt and 🚀 when done or 😕 with one short reply when refused. Edited comments never
reach here (the router ignores `issue_comment.edited`), and the delivery dedupe makes one
comment trigger at most once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from arq.jobs import Job as ArqJob

from app import tracking
from app.constants import QUEUE_NAME, Job
from app.events import Event
from app.logs import get_logger
from app.permissions import may_steer
from app.runs import Run, RunStatus
from app.scheduling import step_owner
from app.services import Services
from app.stopping import stop_run

log = get_logger(__name__)

VERBS = ("retry", "approve", "cancel", "help")
_COMMAND = re.compile(r"\A[ \t]*/agent(?:[ \t]+(?P<verb>[A-Za-z]+))?(?P<rest>.*)\Z",
                      re.IGNORECASE | re.DOTALL)
PR_KEY = "conductor:pr:{repo}#{number}"
DONE_KEY = "conductor:command:{comment_id}"

HELP = """\
**Conductor commands** (comment on the issue or its pull request; write access required)

| command | what it does |
| --- | --- |
| `/agent approve` | start the steps of a plan that waits for approval |
| `/agent retry [instructions]` | try again from where the last attempt stopped |
| `/agent cancel` | stop the run; the branch and pull request stay as they are |
| `/agent help` | this table |

Label an issue `{label}` to start a run."""


@dataclass(frozen=True)
class Command:
    verb: str  # one of VERBS, or "" when missing/unknown
    text: str  # what followed the verb (instructions for retry)
    raw_verb: str


def parse(body: str | None) -> Command | None:
    if not body:
        return None
    match = _COMMAND.match(body)
    if match is None:
        return None
    raw = (match.group("verb") or "").lower()
    verb = raw if raw in VERBS else ""
    return Command(verb=verb, text=match.group("rest").strip(), raw_verb=raw)


async def _react(gh: Any, owner: str, name: str, comment_id: int, content: str) -> None:
    await gh.rest.reactions.async_create_for_issue_comment(owner, name, comment_id,
                                                           content=content)


async def handle_command(ctx: dict[str, Any], event: Event) -> str:
    svc: Services = ctx["services"]
    payload = event.payload
    comment = payload.get("comment") or {}
    command = parse(comment.get("body"))
    if command is None or event.installation_id is None:
        return "ignored: not a command"
    comment_id = int(comment["id"])
    if not await svc.redis.set(DONE_KEY.format(comment_id=comment_id), 1, nx=True,
                               ex=7 * 24 * 3600):
        return "ignored: this comment was already handled"
    repo: str = payload["repository"]["full_name"]
    owner, name = repo.split("/", 1)
    number = int(payload["issue"]["number"])
    author: str = payload["sender"]["login"]
    installation_id = event.installation_id

    async def answer(emoji: str, reply: str | None = None) -> None:
        async with svc.github.installation(installation_id) as gh:
            await _react(gh, owner, name, comment_id, emoji)
            if reply:
                await gh.rest.issues.async_create_comment(owner, name, number, body=reply)

    async with svc.github.installation(installation_id) as gh:
        await _react(gh, owner, name, comment_id, "eyes")

    if command.verb == "help":
        await answer("rocket", HELP.format(label=svc.settings.conductor_trigger_label))
        return "help"
    if not await may_steer(svc.redis, svc.github, installation_id, repo, author):
        await answer("confused", f"@{author} only people with write, maintain or admin "
                     "permission on this repository can steer Conductor.")
        return f"refused: {author} may not run /agent {command.verb}"
    if not command.verb:
        await answer("confused", f"@{author} I don't know `/agent {command.raw_verb}`. "
                     "Try `/agent help`.")
        return f"unknown command {command.raw_verb!r}"

    run = await run_for(svc, repo, number)
    if run is None:
        await answer("confused", f"@{author} there is no Conductor run here.")
        return "no run"
    if command.verb == "approve":
        return await _approve(svc, run, author, answer)
    if command.verb == "cancel":
        return await _cancel(svc, run, author, answer)
    await answer("confused", f"@{author} `/agent retry` is not available in this version; "
                 "label the issue again to start a new attempt.")
    return "retry unavailable"


async def run_for(svc: Services, repo: str, number: int) -> Run | None:
    """The run an issue or pull request comment refers to: the active one, else the latest."""
    run_id = await svc.store.active_run_id(repo, number)
    if run_id is None:
        value = await svc.redis.get(PR_KEY.format(repo=repo, number=number))
        run_id = value.decode() if isinstance(value, bytes) else value
    return await svc.store.get(run_id) if run_id else None


async def _approve(svc: Services, run: Run, author: str, answer: Any) -> str:
    if run.status is not RunStatus.AWAITING_APPROVAL:
        await answer("confused", f"@{author} run `{run.id}` is not waiting for approval "
                     f"(it is {run.status.value.replace('_', ' ')}).")
        return "approve: nothing to approve"
    run.status = RunStatus.RUNNING
    await svc.store.save(run)
    await svc.store.log(run.id, "approval", f"plan approved by @{author}")
    await tracking.refresh(svc, run)
    await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, "approved",
                                _job_id=f"schedule:{run.id}:approved")
    await answer("rocket")
    return f"approved by {author}"


async def _cancel(svc: Services, run: Run, author: str, answer: Any) -> str:
    if not run.status.active:
        await answer("confused", f"@{author} run `{run.id}` has already ended "
                     f"({run.status.value.replace('_', ' ')}).")
        return "cancel: not active"
    await stop_run(svc, run, RunStatus.CANCELLED, f"cancelled by @{author}", notify=False)
    plan_steps = {s["id"]: s for s in (run.plan or {}).get("steps", [])}
    aborted = 0
    for record in (await svc.store.steps(run.id)).values():
        if record.state != "running":
            continue
        job = ArqJob(f"step:{run.id}:{record.id}:{record.attempt}", svc.redis,
                     _queue_name=QUEUE_NAME)
        await job.abort(timeout=0)  # asks the worker to cancel it; does not wait
        aborted += 1
        files = plan_steps.get(record.id, {}).get("files") or [f"__step__/{record.id}"]
        await svc.store.unlock_paths(run.repo, files, step_owner(run.id, record.id))
    await answer("rocket")
    return f"cancelled by {author} ({aborted} running steps aborted)"
