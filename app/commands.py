"""`/agent …` commands in issue and pull request comments.

Parsing is pure: a command counts only at the very start of a comment (quoted lines and code
blocks do not), one comment is one command. Handling checks the author's permission first (a
read, cached): every reaction and reply is a write, and an installation has only so many for
all its repositories (`app.pacing`). Someone who may steer gets 👀 on receipt, then 🚀 when
done or 😕 with one short reply when refused. Someone who may not gets one reply per issue a
day and nothing else. Edited comments never reach here (the router ignores
`issue_comment.edited`), and the delivery dedupe makes one comment one job.

arq runs that job at least once: again after a transient failure, and after its worker died.
So a command is never marked handled before it is: its progress (👀 posted, the run it acts
on, what it did and the answer, the answer posted) is kept per comment, and a job run again
carries on from there. An answer is decided once, so a run again never answers twice or
answers "still active" to its own retry; the action itself carries on where an earlier try
stopped (`retry` recognises its own retry by the comment).
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
DONE_KEY = "conductor:command:{comment_id}"  # set once the command took effect and was answered
PROGRESS_KEY = "conductor:command:{comment_id}:progress"  # a hash: what of it is done so far
OUTSIDER_KEY = "conductor:command:outsider:{repo}#{number}:{user}"
DONE_SECONDS = 7 * 24 * 3600
OUTSIDER_SECONDS = 24 * 3600

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
    # GitHub answers 200 with the existing reaction for the same one again: posting it twice
    # (a job run again) leaves one.
    await gh.rest.reactions.async_create_for_issue_comment(owner, name, comment_id,
                                                           content=content)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    if await svc.redis.exists(DONE_KEY.format(comment_id=comment_id)):
        return "ignored: this comment was already handled"
    repo: str = payload["repository"]["full_name"]
    owner, name = repo.split("/", 1)
    number = int(payload["issue"]["number"])
    author: str = payload["sender"]["login"]
    installation_id = event.installation_id
    if not await may_steer(svc.redis, svc.github, installation_id, repo, author):
        return await _answer_outsider(svc, event, command, repo, number, author)

    progress_key = PROGRESS_KEY.format(comment_id=comment_id)
    progress = {_text(k): _text(v) for k, v in (await svc.redis.hgetall(progress_key)).items()}

    async def mark(**fields: str) -> None:
        await svc.redis.hset(progress_key, mapping=fields)
        await svc.redis.expire(progress_key, DONE_SECONDS)

    if "eyes" not in progress:
        async with svc.github.installation(installation_id) as gh:
            await _react(gh, owner, name, comment_id, "eyes")
        await mark(eyes="1")
    if "emoji" in progress:  # decided by an earlier try, whose answer did not get out
        outcome, emoji, reply = progress["outcome"], progress["emoji"], progress.get("reply")
    else:
        outcome, emoji, reply = await _carry_out(svc, event, command, number, author,
                                                 progress, mark)
        await mark(outcome=outcome, emoji=emoji, reply=reply or "")
    async with svc.github.installation(installation_id) as gh:
        if "reacted" not in progress:
            await _react(gh, owner, name, comment_id, emoji)
            await mark(reacted="1")
        if reply:
            await gh.rest.issues.async_create_comment(owner, name, number, body=reply)
    await svc.redis.set(DONE_KEY.format(comment_id=comment_id), 1, ex=DONE_SECONDS)
    await svc.redis.delete(progress_key)
    return outcome


async def _carry_out(svc: Services, event: Event, command: Command, number: int, author: str,
                     progress: dict[str, str], mark: Any) -> tuple[str, str, str | None]:
    """Do what the command asks, once; the outcome and the answer (reaction, reply)."""
    said: list[tuple[str, str | None]] = []

    async def answer(emoji: str, reply: str | None = None) -> None:
        said.append((emoji, reply))

    if command.verb == "help":
        return "help", "rocket", HELP.format(label=svc.settings.conductor_trigger_label)
    if not command.verb:
        return (f"unknown command {command.raw_verb!r}", "confused",
                f"@{author} I don't know `/agent {command.raw_verb}`. Try `/agent help`.")
    # An earlier try of this command that got this far acted on this run, and may have
    # changed it: it is the one to carry on with, and how it was then tells what was done.
    if "run" in progress:
        run = await svc.store.get(progress["run"])
        before: RunStatus | None = RunStatus(progress["status"])
    else:
        run = await run_for(svc, repo_key(event.repo_id, event.payload["repository"]
                                          ["full_name"]), number)
        before = None
    if run is None:
        return "no run", "confused", f"@{author} there is no Conductor run here."
    if before is None:
        await mark(run=run.id, status=run.status.value)
    if command.verb == "approve":
        outcome = await _approve(svc, run, author, answer, before=before)
    elif command.verb == "cancel":
        outcome = await _cancel(svc, run, author, answer, before=before)
    else:
        comment_id = event.payload["comment"]["id"]
        outcome = await retry(svc, run, author, command.text, answer,
                              installation_id=event.installation_id,
                              key=f"comment:{comment_id}")
    [(emoji, reply)] = said
    return outcome, emoji, reply


async def _answer_outsider(svc: Services, event: Event, command: Command, repo: str,
                           number: int, author: str) -> str:
    """Someone who may not steer, typically anyone at all on a public repository: one reply
    per person and issue a day, no reactions, so that nobody without write access can spend
    the installation's writes. The first command of the day gets its answer: `/agent help`
    the commands (whose table says they need write access, which is what someone asking
    wants to know), anything else the refusal. Later ones that day are left unanswered: the
    person was told already, right there."""
    key = OUTSIDER_KEY.format(repo=repo_key(event.repo_id, repo), number=number,
                              user=author.lower())
    if not await svc.redis.set(key, 1, nx=True, ex=OUTSIDER_SECONDS):
        return (f"ignored: {author} may not steer Conductor and was answered on #{number} "
                "today")
    if command.verb == "help":
        outcome, body = "help", HELP.format(label=svc.settings.conductor_trigger_label)
    else:
        outcome = f"refused: {author} may not run /agent {command.verb}"
        body = (f"@{author} only people with write, maintain or admin permission on this "
                "repository can steer Conductor.")
    owner, name = repo.split("/", 1)
    assert event.installation_id is not None
    try:
        async with svc.github.installation(event.installation_id) as gh:
            await gh.rest.issues.async_create_comment(owner, name, number, body=body)
    except BaseException:
        await svc.redis.delete(key)  # not answered: the job's next try answers
        raise
    return outcome


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
    return await retry(svc, run, author, "", answer, installation_id=installation_id,
                       key=f"delivery:{event.delivery_id}")


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


async def _approve(svc: Services, run: Run, author: str, answer: Any, *,
                   before: RunStatus | None = None) -> str:
    """`before`: the run's status when an earlier try of this command began, if one did."""
    if run.status is RunStatus.AWAITING_APPROVAL:
        run.status = RunStatus.RUNNING
        await svc.store.save(run)
        await svc.store.log(run.id, "approval", f"plan approved by @{author}")
    elif not (before is RunStatus.AWAITING_APPROVAL and run.status is RunStatus.RUNNING):
        await answer("confused", f"@{author} run `{run.id}` is not waiting for approval "
                     f"(it is {run.status.value.replace('_', ' ')}).")
        return "approve: nothing to approve"
    # (Else an earlier try approved it and failed after: the rest again, which is idempotent.)
    await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, "approved",
                                _job_id=f"schedule:{run.id}:approved")
    await tracking.refresh(svc, run)
    await answer("rocket")
    return f"approved by {author}"


async def _cancel(svc: Services, run: Run, author: str, answer: Any, *,
                  before: RunStatus | None = None) -> str:
    """`before`: the run's status when an earlier try of this command began, if one did."""
    reason = f"cancelled by @{author}"
    if run.status.active:
        await stop_run(svc, run, RunStatus.CANCELLED, reason, notify=False)
    elif (before is not None and before.active and run.status is RunStatus.CANCELLED
          and run.stop_reason == reason):
        # An earlier try stopped it and failed after: what `stop_run` does after the stop.
        await tracking.refresh(svc, run)
        await svc.store.release_issue(run.repo_key, run.issue_number, run.id)
    else:
        await answer("confused", f"@{author} run `{run.id}` has already ended "
                     f"({run.status.value.replace('_', ' ')}).")
        return "cancel: not active"
    aborted = await abort_steps(svc, run)
    await answer("rocket")
    return f"cancelled by {author} ({aborted} running steps aborted)"
