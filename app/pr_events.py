"""Events on a run's pull request.

- `synchronize` not sent by the bot: a person pushed to the branch, perhaps force-pushed it
  back to a commit the bot made. The branch's head is kept and built on (the bot never
  force-pushes); a run waiting on CI waits on that head instead.
- `closed`: the run is finalised for later metrics: merged or not, the lead time from the
  label to the merge, and the number of commits people added after the PR opened. A run still
  active stops (its running steps are aborted).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from app import tracking, verify
from app.budget import usage_totals
from app.commands import PR_KEY
from app.events import Event
from app.github import items
from app.logs import get_logger
from app.report import duration
from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import abort_steps, stop_run

log = get_logger(__name__)

METRICS_KEY = "conductor:metrics"
METRICS_LENGTH = 10_000


async def handle_pull_request(ctx: dict[str, Any], event: Event) -> str:
    svc: Services = ctx["services"]
    payload = event.payload
    pull = payload.get("pull_request") or {}
    repo = event.repo_key
    if repo is None or "number" not in pull:
        return "ignored: no pull request"
    value = await svc.redis.get(PR_KEY.format(repo=repo, number=pull["number"]))
    run = await svc.store.get(value.decode() if isinstance(value, bytes) else value) \
        if value else None
    if run is None:
        return "ignored: not a Conductor pull request"
    who = event.sender or "someone"
    if event.action == "synchronize":
        sha = payload.get("after") or (pull.get("head") or {}).get("sha")
        if not isinstance(sha, str):
            return "ignored: no head commit"
        return await verify.pushed_by_person(svc, run, sha, who)
    if event.action == "closed":
        return await closed(svc, run, pull, who)
    return f"ignored: pull_request.{event.action}"


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def closed(svc: Services, run: Run, pull: dict[str, Any], who: str) -> str:
    if run.outcome is not None:
        return "outcome already recorded"
    merged = bool(pull.get("merged"))
    ended = _time(pull.get("merged_at") if merged else pull.get("closed_at")) or time.time()
    people = await _commits_by_people(svc, run, since=run.pr_opened_at or run.created_at)
    totals = (await usage_totals(svc.redis, run.id)).overall
    outcome = {
        "merged": merged, "by": who, "ended_at": ended,
        "lead_time_s": round(ended - run.created_at, 1),
        "human_commits_after_pr": people,
        "ci_attempts": len(run.ci), "ci_fixes": sum(1 for a in run.ci if a.get("fix")),
        "retries": len(run.retries), "status_at_close": run.status.value,
        "cost_usd": round(totals.cost_usd, 4), "tokens": totals.tokens,
    }
    if run.status.active:
        await stop_run(svc, run, RunStatus.CANCELLED,
                       f"the pull request was {'merged' if merged else 'closed'} by @{who}",
                       notify=False)
        await abort_steps(svc, run)
    fresh = await svc.store.set_fields(run.id, outcome=outcome) or run
    await svc.redis.lpush(METRICS_KEY, json.dumps({"run": run.id, "repo": run.repo,
                                                   "issue": run.issue_number,
                                                   "pr": run.pr_number, **outcome}))
    await svc.redis.ltrim(METRICS_KEY, 0, METRICS_LENGTH - 1)
    verb = "merged" if merged else "closed without merging"
    await svc.store.log(run.id, "pr", f"pull request #{run.pr_number} {verb} by @{who}, "
                        f"{duration(ended - run.created_at)} after the label; {people} "
                        f"commit(s) by people after it opened", outcome=outcome)
    await tracking.refresh(svc, fresh)
    return f"outcome recorded: {verb}"


async def _commits_by_people(svc: Services, run: Run, since: float) -> int:
    """Commits on the PR without Conductor's trailers, committed after `since`."""
    assert run.pr_number is not None
    owner, name = run.repo.split("/", 1)
    count = 0
    async with svc.github.installation(run.installation_id) as gh:
        for page in range(1, 4):  # GitHub lists at most 250 commits of a pull request
            batch = items(await gh.rest.pulls.async_list_commits(
                owner, name, run.pr_number, per_page=100, page=page))
            for commit in batch:
                if "Conductor-Run:" in (commit.commit.message or ""):
                    continue
                committer = commit.commit.committer
                when = committer.date if committer else None
                if when is None or when.timestamp() >= since - 1:
                    count += 1
            if len(batch) < 100:
                break
    return count
