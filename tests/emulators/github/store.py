"""Storage under the work dir: collections, locking, the clock, persistence and event fan-out.

Every mutation runs inside :meth:`Store.transaction`. Events and callbacks queued during a
transaction are delivered after the outermost transaction has saved and released the lock,
in the thread that made the change (a server thread for REST calls, the caller's thread for
Python calls). Subscribers must therefore be quick and thread-safe: hand work to a queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import not_found
from .gitrepo import GitRepo
from .ids import node_id
from .records import (
    Account,
    AppRecord,
    BranchProtection,
    CheckRun,
    CheckSuite,
    Comment,
    CommitStatus,
    Fault,
    Installation,
    Issue,
    Job,
    Label,
    ManifestCode,
    OAuthCode,
    PullRequest,
    Reaction,
    RecordedRequest,
    Repo,
    Token,
    Workflow,
    WorkflowRun,
)

log = logging.getLogger(__name__)

EventSubscriber = Callable[[str, dict[str, Any]], None]
PushCallback = Callable[[Repo, str, str, str, str], None]

# collection name -> (record class, key attribute)
COLLECTIONS: dict[str, tuple[type, str]] = {
    "apps": (AppRecord, "id"),
    "accounts": (Account, "login"),
    "installations": (Installation, "id"),
    "tokens": (Token, "token"),
    "repos": (Repo, "id"),
    "branch_protections": (BranchProtection, "id"),
    "labels": (Label, "id"),
    "issues": (Issue, "id"),
    "comments": (Comment, "id"),
    "reactions": (Reaction, "id"),
    "pulls": (PullRequest, "id"),
    "check_suites": (CheckSuite, "id"),
    "check_runs": (CheckRun, "id"),
    "statuses": (CommitStatus, "id"),
    "workflows": (Workflow, "id"),
    "workflow_runs": (WorkflowRun, "id"),
    "jobs": (Job, "id"),
    "faults": (Fault, "id"),
    "manifest_codes": (ManifestCode, "code"),
    "oauth_codes": (OAuthCode, "code"),
}

# Each emulator state in this process takes the next id base (see `Store.__init__`).
_ID_BASES = itertools.count(secrets.randbelow(90_000))


class Store:
    """Collections of records plus the machinery every domain mixin relies on."""

    def __init__(self, workdir: str | Path, *, persist: bool = True) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "git").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        (self.workdir / "apps").mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.persist = persist
        self._lock = threading.RLock()
        self._depth = 0
        self._after: list[Callable[[], None]] = []
        self._events_cond = threading.Condition()
        self._requests_cond = threading.Condition()

        self.apps: dict[int, AppRecord] = {}
        self.accounts: dict[str, Account] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Token] = {}
        self.repos: dict[int, Repo] = {}
        self.branch_protections: dict[int, BranchProtection] = {}
        self.labels: dict[int, Label] = {}
        self.issues: dict[int, Issue] = {}
        self.comments: dict[int, Comment] = {}
        self.reactions: dict[int, Reaction] = {}
        self.pulls: dict[int, PullRequest] = {}
        self.check_suites: dict[int, CheckSuite] = {}
        self.check_runs: dict[int, CheckRun] = {}
        self.statuses: dict[int, CommitStatus] = {}
        self.workflows: dict[int, Workflow] = {}
        self.workflow_runs: dict[int, WorkflowRun] = {}
        self.jobs: dict[int, Job] = {}
        self.faults: dict[int, Fault] = {}
        self.manifest_codes: dict[str, ManifestCode] = {}
        self.oauth_codes: dict[str, OAuthCode] = {}
        # Names repositories had before a rename ("owner/name", lowercased) -> repository id,
        # which the API and git redirect to the repository's current name.
        self.moved: dict[str, int] = {}

        # Not persisted: observers and logs of this process.
        self.subscribers: list[EventSubscriber] = []
        self.push_callbacks: list[PushCallback] = []
        self.rerun_callbacks: list[Callable[[WorkflowRun, list[Job]], None]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.subscriber_errors: list[BaseException] = []
        self.requests: list[RecordedRequest] = []
        # Attached by ``WebhookDelivery.start()`` and ``CIRunner.start()`` for the admin API.
        self.webhook_delivery: Any = None
        self.ci_runner: Any = None

        # Settings, persisted.
        self.base_url = "http://127.0.0.1"
        self.clock_offset = 0.0
        self.token_ttl = 3600.0
        self.rate_limit = 5000
        # Secondary limits on content creation, per installation; 0 lifts one.
        self.content_per_minute = 80
        self.content_per_hour = 500
        self.app_id = 0  # the emulated App; set by the App mixin
        # Ids start at a base of their own so that two emulators in one process never share
        # ids: githubkit caches JWTs (8 minutes) and tokens process-wide by app and installation
        # id, and a JWT signed with another emulator's key is a 401. Consecutive bases within a
        # process; a random start keeps processes apart.
        self._next_id = 100_000_000 + next(_ID_BASES) % 90_000 * 10_000

        self._load()

    # -- clock and ids -----------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock (token expiry, JWT checks, timestamps) forward."""
        with self.transaction():
            self.clock_offset += seconds

    def new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    # -- transactions and events -------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                after: list[Callable[[], None]] = []
                if self._depth == 0:
                    after, self._after = self._after, []
                    self.save()
        for callback in after:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction is over (now if there is none)."""
        with self._lock:
            if self._depth:
                self._after.append(callback)
                return
        callback()

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Publish a webhook-shaped event to :attr:`subscribers` after the transaction."""
        self.after_commit(lambda: self._dispatch(event, payload))

    def _dispatch(self, event: str, payload: dict[str, Any]) -> None:
        with self._events_cond:
            self.events.append((event, payload))
            self._events_cond.notify_all()
        for subscriber in list(self.subscribers):
            try:
                subscriber(event, payload)
            except Exception as exc:  # a broken subscriber must not break the API call
                log.exception("event subscriber failed for %s", event)
                self.subscriber_errors.append(exc)

    def subscribe(self, callback: EventSubscriber) -> Callable[[], None]:
        """Call ``callback(event_name, payload)`` for every event; returns an unsubscribe."""
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def on_push(self, callback: PushCallback) -> Callable[[], None]:
        """Call ``callback(repo, ref, before, after, pusher_login)`` after every ref update."""
        self.push_callbacks.append(callback)
        return lambda: self.push_callbacks.remove(callback)

    def on_rerun(self, callback: Callable[[WorkflowRun, list[Job]], None]) -> Callable[[], None]:
        """Call ``callback(run, jobs_to_run)`` when a workflow run (or its failed jobs) re-runs."""
        self.rerun_callbacks.append(callback)
        return lambda: self.rerun_callbacks.remove(callback)

    def wait_for_event(
        self,
        predicate: Callable[[str, dict[str, Any]], bool],
        timeout: float = 10.0,
        start: int = 0,
    ) -> tuple[str, dict[str, Any]]:
        """Block until an event from index ``start`` on matches; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._events_cond:
            while True:
                for event, payload in self.events[start:]:
                    if predicate(event, payload):
                        return event, payload
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching event")
                self._events_cond.wait(remaining)

    def record_request(self, request: RecordedRequest) -> None:
        with self._requests_cond:
            self.requests.append(request)
            self._requests_cond.notify_all()

    def wait_for_requests(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 10.0
    ) -> bool:
        """Block until ``predicate(requests so far)`` holds; False when ``timeout`` passes.
        (A request is recorded just after its answer is sent.)"""
        with self._requests_cond:
            return self._requests_cond.wait_for(lambda: predicate(list(self.requests)), timeout)

    def events_named(self, event: str, action: str | None = None) -> list[dict[str, Any]]:
        with self._events_cond:
            return [
                payload
                for name, payload in self.events
                if name == event and (action is None or payload.get("action") == action)
            ]

    # -- persistence -------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    def save(self) -> None:
        if not self.persist:
            return
        with self._lock:
            data: dict[str, Any] = {
                name: [dataclasses.asdict(r) for r in getattr(self, name).values()]
                for name in COLLECTIONS
            }
            data["moved"] = self.moved
            data["settings"] = {
                "base_url": self.base_url,
                "clock_offset": self.clock_offset,
                "token_ttl": self.token_ttl,
                "rate_limit": self.rate_limit,
                "content_per_minute": self.content_per_minute,
                "content_per_hour": self.content_per_hour,
                "app_id": self.app_id,
                "next_id": self._next_id,
            }
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.state_file)

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text())
        for name, (cls, key) in COLLECTIONS.items():
            records = [cls(**item) for item in data.get(name, [])]
            setattr(self, name, {getattr(r, key): r for r in records})
        self.moved = dict(data.get("moved", {}))
        settings = data.get("settings", {})
        self.base_url = settings.get("base_url", self.base_url)
        self.clock_offset = settings.get("clock_offset", 0.0)
        self.token_ttl = settings.get("token_ttl", self.token_ttl)
        self.rate_limit = settings.get("rate_limit", self.rate_limit)
        self.content_per_minute = settings.get("content_per_minute", self.content_per_minute)
        self.content_per_hour = settings.get("content_per_hour", self.content_per_hour)
        self.app_id = settings.get("app_id", 0)
        self._next_id = settings.get("next_id", self._next_id)

    # -- lookups -----------------------------------------------------------------------------

    def api(self, path: str = "") -> str:
        return f"{self.base_url}{path}"

    def find_repo(self, owner: str, name: str) -> Repo | None:
        full = f"{owner}/{name}".lower()
        for repo in self.repos.values():
            if repo.full_name.lower() == full:
                return repo
        return None

    def find_moved(self, owner: str, name: str) -> Repo | None:
        """The repository once called ``owner/name`` and renamed since, if it still exists
        and nothing has taken the name over."""
        if self.find_repo(owner, name) is not None:
            return None
        repo_id = self.moved.get(f"{owner}/{name}".lower())
        return self.repos.get(repo_id) if repo_id is not None else None

    def get_repo(self, owner: str, name: str) -> Repo:
        repo = self.find_repo(owner, name)
        if repo is None:
            raise not_found()
        return repo

    def resolve_repo(self, repo: Repo | str) -> Repo:
        """A repository given as a record or as ``"owner/name"``."""
        if isinstance(repo, Repo):
            return repo
        owner, _, name = repo.partition("/")
        return self.get_repo(owner, name)

    def git(self, repo: Repo) -> GitRepo:
        return GitRepo(self.repo_path(repo), self.workdir / "tmp")

    def repo_path(self, repo: Repo) -> Path:
        return self.workdir / "git" / repo.owner / f"{repo.name}.git"

    def find_account(self, login: str) -> Account | None:
        account = self.accounts.get(login)
        if account is not None:
            return account
        lowered = login.lower()
        for candidate in self.accounts.values():
            if candidate.login.lower() == lowered:
                return candidate
        return None

    def ensure_account(
        self, login: str, type_: str = "User", *, account_id: int | None = None
    ) -> Account:
        """The account named ``login``, created (as ``type_``) when missing."""
        with self.transaction():
            account = self.find_account(login)
            if account is None:
                number = account_id or self.new_id()
                account = Account(
                    login=login,
                    id=number,
                    node_id=node_id(type_, number),
                    type=type_,
                    created_at=self.now(),
                )
                self.accounts[login] = account
            return account

    def find_issue(self, repo: Repo, number: int) -> Issue | None:
        for issue in self.issues.values():
            if issue.repo_id == repo.id and issue.number == number:
                return issue
        return None

    def find_pull(self, repo: Repo, number: int) -> PullRequest | None:
        for pull in self.pulls.values():
            if pull.repo_id == repo.id and pull.number == number:
                return pull
        return None

    def find_branch_protection(self, repo: Repo, branch: str) -> BranchProtection | None:
        for rule in self.branch_protections.values():
            if rule.repo_id == repo.id and rule.branch == branch:
                return rule
        return None

    def find_label(self, repo: Repo, name: str) -> Label | None:
        lowered = name.lower()
        for label in self.labels.values():
            if label.repo_id == repo.id and label.name.lower() == lowered:
                return label
        return None

    @property
    def app(self) -> AppRecord:
        """The emulated App (the one the code under test is)."""
        return self.apps[self.app_id]
