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

from app import tracking
from app.agent import valid_text
from app.checkrun import RETRY_ID
from app.constants import Job
from app.events import Event
from app.logs import get_logger
from app.permissions import may_steer
from app.retrying import retry
from app.runs import Run, RunStatus, repo_key
from app.services import Services
from app.stopping import abort_steps, stop_run

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
    # The text goes to the model and into comments: both need valid UTF-8.
    return Command(verb=verb, text=valid_text(match.group("rest").strip()), raw_verb=raw)


async def _react(gh: Any, owner: str, name: str, comment_id: int, content: str) -> None:
    await gh.rest.reactions.async_create_for_issue_comment(owner, name, comment_id,
                                                           content=content)


async def handle_command(ctx: dict[str, Any], event: Event) -> str:
    if event.name == "check_run":
        return await handle_check_action(ctx, event)
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

    run = await run_for(svc, repo_key(event.repo_id, repo), number)
    if run is None:
        await answer("confused", f"@{author} there is no Conductor run here.")
        return "no run"
    if command.verb == "approve":
        return await _approve(svc, run, author, answer)
    if command.verb == "cancel":
        return await _cancel(svc, run, author, answer)
    return await retry(svc, run, author, command.text, answer, installation_id=installation_id)


async def handle_check_action(ctx: dict[str, Any], event: Event) -> str:
    """The Retry button on Conductor's check run: `/agent retry`, answered on the PR."""
    svc: Services = ctx["services"]
    payload = event.payload
    check = payload.get("check_run") or {}
    identifier = (payload.get("requested_action") or {}).get("identifier")
    if identifier != RETRY_ID or event.installation_id is None:
        return f"ignored: unknown check run action {identifier!r}"
    repo: str = payload["repository"]["full_name"]
    owner, name = repo.split("/", 1)
    author: str = payload["sender"]["login"]
    installation_id = event.installation_id
    key = repo_key(event.repo_id, repo)
    run = await svc.store.get(str(check.get("external_id") or ""))
    if run is None or run.repo_key != key:
        run_id = await svc.store.run_for_commit(key, str(check.get("head_sha") or ""))
        run = await svc.store.get(run_id) if run_id else None
    if run is None:
        return "ignored: the check run belongs to no run"
    number = run.pr_number or run.issue_number

    async def answer(emoji: str, reply: str | None = None) -> None:
        text = reply or (f"@{author} pressed **Retry** on the `Conductor` check: trying run "
                         f"`{run.id}` again." if emoji == "rocket" else None)
        if text:
            async with svc.github.installation(installation_id) as gh:
                await gh.rest.issues.async_create_comment(owner, name, number, body=text)

    if not await may_steer(svc.redis, svc.github, installation_id, repo, author):
        await answer("confused", f"@{author} only people with write, maintain or admin "
                     "permission on this repository can retry Conductor.")
        return f"refused: {author} may not retry"
    return await retry(svc, run, author, "", answer, installation_id=installation_id)


async def run_for(svc: Services, repo: str, number: int) -> Run | None:
    """The run an issue or pull request comment refers to: the issue's active run, else the
    pull request's run, else the issue's latest run (a stopped run is retried on its issue).
    `repo` is the repository's key (`app.runs.repo_key`)."""
    run_id = await svc.store.active_run_id(repo, number)
    if run_id is None:
        value = await svc.redis.get(PR_KEY.format(repo=repo, number=number))
        run_id = value.decode() if isinstance(value, bytes) else value
    if run_id is None:
        run_id = await svc.store.latest_run_id(repo, number)
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
    aborted = await abort_steps(svc, run)
    await answer("rocket")
    return f"cancelled by {author} ({aborted} running steps aborted)"
