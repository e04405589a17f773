"""Run state in Redis: the run record, its steps, the append-only timeline, and locks.

Every write is safe to repeat (jobs run at least once). Keys:

    conductor:run:{id}             the run record (JSON)
    conductor:run:{id}:steps       hash: step id -> step record (JSON)
    conductor:run:{id}:timeline    list of timeline entries (append-only)
    conductor:issue:{repo}#{n}     the active run of an issue (one at a time)
    conductor:issue:{repo}#{n}:latest  the issue's latest run, active or not
    conductor:runs                 sorted set of run ids by creation time
    conductor:runs:active          sorted set of the runs not ended yet (what reconcile visits)
    conductor:lock:path:{repo}:{branch}:{p}  per-path locks held by running steps (fenced)
    conductor:repo-id:{owner/name}  a repository's id by each name it has had since its runs began
                                   (written as each event is handled), for `conductor trace`

`{repo}` is `id:` and the repository's id (`repo_key`): a repository renamed keeps
its id, and the webhooks that follow carry the new name, which must still find the runs
started under the old one. GitHub redirects API and git requests made with the old name, so a
run goes on using the name it started with.

A run's keys (its record, steps, timeline, usage and model calls) live while it is active and
for `RUN_RETENTION` seconds after its last write once it has ended: weeks of runs on many
repositories must not fill Redis's memory. Entries older than that leave the index too.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

RUN_KEY = "conductor:run:{run_id}"
STEPS_KEY = "conductor:run:{run_id}:steps"
TIMELINE_KEY = "conductor:run:{run_id}:timeline"
ISSUE_KEY = "conductor:issue:{repo}#{number}"
RUNS_INDEX = "conductor:runs"
ACTIVE_INDEX = "conductor:runs:active"
RUN_LOCK_KEY = "conductor:run:{run_id}:lock"
PATH_LOCK_KEY = "conductor:lock:path:{repo}:{branch}:{pattern}"
FENCE_KEY = "conductor:lock:fence"
ATTEMPTS_KEY = "conductor:issue:{repo}#{number}:attempts"
LATEST_KEY = "conductor:issue:{repo}#{number}:latest"
COMMIT_KEY = "conductor:commit:{repo}:{sha}"  # a commit on a run's branch -> the run
COMMIT_TTL = 30 * 24 * 3600
REPO_ID_KEY = "conductor:repo-id:{name}"
USAGE_KEY = "conductor:run:{run_id}:usage"  # app.budget
CALLS_KEY = "conductor:run:{run_id}:calls"  # app.budget
HOLDS_KEY = "conductor:run:{run_id}:holds"  # app.budget
# An ended run's keys, the issue's pointer to it and its pull request's: long enough for the
# pull request to be reviewed and merged (its outcome is recorded on the run), and for the
# dashboard and `conductor replay` to look back a quarter.
RUN_RETENTION = 90 * 24 * 3600
_RUN_DATA_KEYS = (STEPS_KEY, TIMELINE_KEY, USAGE_KEY, CALLS_KEY, HOLDS_KEY)


class RunStatus(StrEnum):
    STARTING = "starting"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    FINALIZING = "finalizing"
    VERIFYING = "verifying"  # PR open, waiting for CI
    FIXING = "fixing"  # CI failed; re-running it or planning a fix
    DONE = "done"
    FAILED = "failed"
    NEEDS_HUMAN = "needs_human"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self not in (RunStatus.DONE, RunStatus.FAILED, RunStatus.NEEDS_HUMAN,
                            RunStatus.CANCELLED)


def repo_key(repo_id: int | None, full_name: str) -> str:
    """What a repository's keys are named by: its id, else (a run recorded before runs kept
    the id) its name."""
    return f"id:{repo_id}" if repo_id else full_name


@dataclass
class Run:
    id: str
    repo: str  # owner/name, as it was when the run started
    installation_id: int
    issue_number: int
    issue_title: str
    triggered_by: str
    trigger_delivery: str
    attempt: int
    branch: str
    default_branch: str = "main"
    status: RunStatus = RunStatus.STARTING
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    base_sha: str | None = None
    plan: dict[str, Any] | None = None
    plan_template: str | None = None
    tracking_comment_id: int | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    head_sha: str | None = None
    stop_reason: str | None = None
    risk_flags: list[str] = field(default_factory=list)
    pr_opened_at: float | None = None
    # CI: one entry per commit the bot waited on (`CIAttempt` as a dict), oldest first.
    ci: list[dict[str, Any]] = field(default_factory=list)
    ci_fixes: int = 0  # CI-fix attempts used since the run started or was last retried
    fix_round: int = 0  # fix plans made over the run's life (names the fix steps)
    fix_steps: list[str] = field(default_factory=list)  # steps that fix CI (get its output)
    diagnosis: str | None = None  # the last CI failure, as told to the fixer and people
    retries: list[dict[str, Any]] = field(default_factory=list)  # {by, at, instructions}
    check_runs: dict[str, int] = field(default_factory=dict)  # head sha -> Conductor check
    outcome: dict[str, Any] | None = None  # set when the pull request is merged or closed
    repo_id: int | None = None  # GitHub's id of the repository, which a rename keeps

    @property
    def repo_key(self) -> str:
        return repo_key(self.repo_id, self.repo)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Run:
        data = json.loads(raw)
        data["status"] = RunStatus(data["status"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StepRecord:
    id: str
    state: str = "pending"  # app.scheduler.StepState values
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    commit: str | None = None
    summary: str | None = None
    rationale: str | None = None
    uncertainties: str | None = None
    error: str | None = None
    files_changed: list[str] = field(default_factory=list)
    lines_changed: int = 0
    review: dict[str, Any] | None = None
    fence: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepRecord:
        data = json.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_run_id(repo: str, issue_number: int, attempt: int) -> str:
    name = repo.split("/")[-1][:20].lower()
    return f"{name}-{issue_number}-{attempt}-{secrets.token_hex(3)}"


class RunStore:
    def __init__(self, redis: Redis) -> None:
        # redis-py types hash and list commands as "Awaitable[T] | T" for both clients.
        self.redis: Any = redis

    # -- runs -------------------------------------------------------------------------------

    async def claim_issue(self, repo: str, number: int, run_id: str) -> str | None:
        """Make `run_id` the issue's active run. Returns the run id that holds the issue
        (this one when the claim succeeded, the other one when a run is already active)."""
        key = ISSUE_KEY.format(repo=repo, number=number)
        if await self.redis.set(key, run_id, nx=True):
            return run_id
        holder = await self.redis.get(key)
        return holder.decode() if isinstance(holder, bytes) else holder

    async def release_issue(self, repo: str, number: int, run_id: str) -> None:
        # Only the holder releases.
        await self.release(ISSUE_KEY.format(repo=repo, number=number), run_id)

    async def active_run_id(self, repo: str, number: int) -> str | None:
        value = await self.redis.get(ISSUE_KEY.format(repo=repo, number=number))
        return _s(value) if value is not None else None

    async def latest_run_id(self, repo: str, number: int) -> str | None:
        """The issue's latest run, also once it has ended (its claim is released then)."""
        value = await self.redis.get(LATEST_KEY.format(repo=repo, number=number))
        return _s(value) if value is not None else None

    async def next_attempt(self, repo: str, number: int) -> int:
        key = ATTEMPTS_KEY.format(repo=repo, number=number)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, RUN_RETENTION)  # numbering restarts on an issue idle for that long
            attempt, _ = await pipe.execute()
        return int(attempt)

    async def create(self, run: Run) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(RUN_KEY.format(run_id=run.id), run.to_json(), nx=True)
            pipe.zadd(RUNS_INDEX, {run.id: run.created_at})
            pipe.zremrangebyscore(RUNS_INDEX, "-inf", f"({time.time() - RUN_RETENTION}")
            if run.status.active:
                pipe.zadd(ACTIVE_INDEX, {run.id: run.created_at})
            pipe.set(LATEST_KEY.format(repo=run.repo_key, number=run.issue_number), run.id,
                     ex=RUN_RETENTION)
            await pipe.execute()

    async def get(self, run_id: str) -> Run | None:
        raw = await self.redis.get(RUN_KEY.format(run_id=run_id))
        return Run.from_json(raw) if raw else None

    async def save(self, run: Run) -> None:
        run.updated_at = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            _write(pipe, run)
            await pipe.execute()

    async def update(self, run_id: str, change: Callable[[Run], None]) -> Run | None:
        """Apply `change` to the stored run atomically (optimistic: retried if another
        writer saved the run meanwhile). Returns the saved run, or None if there is none."""
        key = RUN_KEY.format(run_id=run_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if not raw:
                        return None
                    run = Run.from_json(raw)
                    change(run)
                    run.updated_at = time.time()
                    pipe.multi()
                    _write(pipe, run)
                    await pipe.execute()
                    return run
                except WatchError:
                    continue

    async def set_fields(self, run_id: str, **fields: Any) -> Run | None:
        """Set some fields of the stored run without overwriting the others."""
        def change(run: Run) -> None:
            for name, value in fields.items():
                setattr(run, name, value)
        return await self.update(run_id, change)

    async def recent(self, count: int = 50) -> list[Run]:
        return (await self.page(count))[0]

    async def page(self, count: int, before: float | None = None
                   ) -> tuple[list[Run], float | None]:
        """Up to `count` runs created before `before` (or the latest), newest first, and the
        creation time to ask for the next page with, None when there are no older runs."""
        top = "+inf" if before is None else f"({before!r}"
        entries = await self.redis.zrevrangebyscore(RUNS_INDEX, top, "-inf", start=0, num=count,
                                                    withscores=True)
        keys = [RUN_KEY.format(run_id=_s(run_id)) for run_id, _ in entries]
        raws = await self.redis.mget(keys) if keys else []  # one round trip, not one a run
        older = float(entries[-1][1]) if len(entries) == count else None
        return [Run.from_json(raw) for raw in raws if raw], older

    async def active(self) -> list[Run]:
        """Every run that has not ended, oldest first."""
        runs = []
        for raw_id in await self.redis.zrange(ACTIVE_INDEX, 0, -1):
            run = await self.get(_s(raw_id))
            if run is None or not run.status.active:  # gone, or ended by an older release
                await self.redis.zrem(ACTIVE_INDEX, raw_id)
                continue
            runs.append(run)
        return runs

    async def key_for(self, full_name: str) -> str:
        """The key of the repository last seen under `full_name` (its runs are found by it
        after a rename too), else the name's own key."""
        repo_id = await self.redis.get(REPO_ID_KEY.format(name=full_name.lower()))
        return repo_key(int(repo_id) if repo_id else None, full_name)

    async def map_commit(self, repo: str, sha: str, run_id: str) -> None:
        """Remember that `sha` is a head of `run_id`'s branch (CI results name commits)."""
        await self.redis.set(COMMIT_KEY.format(repo=repo.lower(), sha=sha), run_id,
                             ex=COMMIT_TTL)

    async def run_for_commit(self, repo: str, sha: str) -> str | None:
        value = await self.redis.get(COMMIT_KEY.format(repo=repo.lower(), sha=sha))
        return _s(value) if value is not None else None

    # -- steps ------------------------------------------------------------------------------

    async def init_steps(self, run_id: str, step_ids: list[str]) -> None:
        key = STEPS_KEY.format(run_id=run_id)
        for step_id in step_ids:
            await self.redis.hsetnx(key, step_id, StepRecord(id=step_id).to_json())

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        raw = await self.redis.hgetall(STEPS_KEY.format(run_id=run_id))
        return {_s(k): StepRecord.from_json(v) for k, v in raw.items()}

    async def step(self, run_id: str, step_id: str) -> StepRecord | None:
        raw = await self.redis.hget(STEPS_KEY.format(run_id=run_id), step_id)
        return StepRecord.from_json(raw) if raw else None

    async def save_step(self, run_id: str, record: StepRecord) -> None:
        await self.redis.hset(STEPS_KEY.format(run_id=run_id), record.id, record.to_json())

    # -- timeline ---------------------------------------------------------------------------

    async def log(self, run_id: str, kind: str, message: str, *, step: str | None = None,
                  **data: Any) -> None:
        entry = {"at": time.time(), "kind": kind, "message": message, "step": step}
        if data:
            entry["data"] = data
        await self.redis.rpush(TIMELINE_KEY.format(run_id=run_id), json.dumps(entry))

    async def timeline(self, run_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(TIMELINE_KEY.format(run_id=run_id), 0, -1)
        return [json.loads(item) for item in raw]

    # -- locks ------------------------------------------------------------------------------

    async def acquire(self, key: str, *, ttl_ms: int, wait: float = 0.0) -> str | None:
        """Take the lock `key` (expiring after `ttl_ms`), polling for up to `wait` seconds;
        its token, or None when another holder kept it."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait
        while not await self.redis.set(key, token, nx=True, px=ttl_ms):
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.02)
        return token

    async def lock_run(self, run_id: str, ttl_ms: int = 30_000,
                       wait: float = 0.0) -> str | None:
        return await self.acquire(RUN_LOCK_KEY.format(run_id=run_id), ttl_ms=ttl_ms, wait=wait)

    async def unlock_run(self, run_id: str, token: str) -> None:
        await self.release(RUN_LOCK_KEY.format(run_id=run_id), token)

    async def lock_paths(self, repo: str, branch: str, patterns: list[str], owner: str,
                         ttl_s: int) -> int | None:
        """Take every path lock for `owner` (a run/step) on `branch`, or none. Returns a
        fencing token (strictly increasing across all locks) or None when another owner
        holds one.

        Per branch: steps writing one branch must not edit a path together, but runs on
        other branches of the repository have worktrees of their own and cannot collide."""
        keys = [PATH_LOCK_KEY.format(repo=repo, branch=branch, pattern=p)
                for p in sorted(set(patterns))]
        fence = int(await self.redis.incr(FENCE_KEY))
        value = f"{owner}|{fence}"
        taken: list[str] = []
        for key in keys:
            if await self.redis.set(key, value, nx=True, ex=ttl_s):
                taken.append(key)
                continue
            current = await self.redis.get(key)
            if current is not None and _s(current).split("|")[0] == owner:
                await self.redis.set(key, value, ex=ttl_s)  # re-taken by a re-run of the owner
                taken.append(key)
                continue
            for held in taken:
                await self.release(held, value)
            return None
        return fence

    async def unlock_paths(self, repo: str, branch: str, patterns: list[str],
                           owner: str) -> None:
        for pattern in sorted(set(patterns)):
            key = PATH_LOCK_KEY.format(repo=repo, branch=branch, pattern=pattern)
            current = await self.redis.get(key)
            if current is not None and _s(current).split("|")[0] == owner:
                await self.release(key, _s(current))

    async def release(self, key: str, value: str) -> bool:
        """Delete `key` only if it still holds `value` (atomic compare-and-delete)."""
        result = await self.redis.eval(_COMPARE_AND_DELETE, 1, key, value)
        return bool(result)


def _write(pipe: Any, run: Run) -> None:
    """Queue the writes that store `run`: its record, its place among the active runs, and
    how long its keys live (for ever while active, `RUN_RETENTION` once it has ended)."""
    key = RUN_KEY.format(run_id=run.id)
    data = [k.format(run_id=run.id) for k in _RUN_DATA_KEYS]
    if run.status.active:
        pipe.set(key, run.to_json())
        pipe.zadd(ACTIVE_INDEX, {run.id: run.created_at})
        for name in data:  # a retried run is active again
            pipe.persist(name)
    else:
        pipe.set(key, run.to_json(), ex=RUN_RETENTION)
        pipe.zrem(ACTIVE_INDEX, run.id)
        for name in data:
            pipe.expire(name, RUN_RETENTION)


_COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
