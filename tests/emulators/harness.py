"""The whole stack for end-to-end tests: the stand-ins, Redis, and Conductor's real processes.

``Stack(workdir)`` starts, all on loopback with free ports and everything under ``workdir``:
the GitHub emulator with webhook delivery and the CI runner, the Anthropic stand-in, a real
``redis-server`` (append-only file on), one ``conductor web`` and ``workers`` ``conductor
worker`` processes configured only through their environment. It creates ``acme/widgets`` (a
tiny Python package whose pytest suite passes, unless ``files`` says otherwise), installs the
App on ``acme`` with the permissions Conductor's ``app.yml`` asks for, and creates ``alice``
(write), ``maggie`` (maintain), ``rita`` (read) and ``tina`` (triage)::

    with Stack(tmp_path) as stack:
        number = stack.label_issue("Add subtraction", "Please add subtract(a, b).")
        stack.wait_for(lambda: stack.comments(number), 30, "a comment on the issue")
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import redis
import yaml

from app.paths import MANIFEST_PATH
from app.redis import RedisProcess, free_port, redis_server_binary, start_redis_on_free_port

from .anthropic_api import AnthropicServer, AnthropicStandIn, Match, Rule, use_tool
from .github import GitHubServer, GitHubState
from .github.ci import CIRunner
from .github.delivery import WebhookDelivery
from .github.records import Comment, Installation, Repo

T = TypeVar("T")

REPO = "acme/widgets"
TRIGGER_LABEL = "agent:implement"
WEBHOOK_PATH = "/api/github/webhooks"
MODEL_KEY = "sk-ant-emulated-0123456789abcdef"
USERS = {"alice": "write", "maggie": "maintain", "rita": "read", "tina": "triage"}
PROJECT_FILES: dict[str, str | bytes] = {
    "README.md": "# Widgets\n\nSmall arithmetic helpers.\n",
    "pyproject.toml": (
        '[project]\nname = "widgets"\nversion = "0.1.0"\n\n'
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
    ),
    "widgets/__init__.py": '"""Small arithmetic helpers."""\n',
    "widgets/core.py": 'def add(a: int, b: int) -> int:\n    """a + b"""\n    return a + b\n',
    "tests/test_core.py": (
        "from widgets.core import add\n\n\ndef test_add() -> None:\n    assert add(2, 3) == 5\n"
    ),
    ".github/workflows/ci.yml": (
        "name: CI\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - run: python -m pytest -q\n"
    ),
}
DEFAULT_PLAN: dict[str, Any] = {
    "summary": "Add subtract(a, b) to the widgets package.",
    "rationale": "A new module keeps the change small and separate from add().",
    "steps": [
        {
            "id": "add-subtract",
            "role": "implementer",
            "title": "Add widgets.ops.subtract",
            "description": "Create widgets/ops.py with subtract(a, b) returning a - b.",
            "files": ["widgets/ops.py"],
            "depends_on": [],
            "acceptance": ["widgets/ops.py defines subtract(a, b) returning a - b."],
            "rationale": "The issue asks for subtraction.",
        }
    ],
}
SUBTRACT = 'def subtract(a: int, b: int) -> int:\n    """a - b"""\n    return a - b\n'
READY_LINE = "Starting worker for"  # arq logs this once it is connected to Redis


def default_script(plan: dict[str, Any] | None = None) -> list[Rule]:
    """Model rules that carry a run through to a draft pull request: the planner submits
    ``plan`` (by default one implementer step that creates ``widgets/ops.py``), a worker
    creates the file once and then finishes, reviewers accept. The rules only look at the
    tools a request offers, so they fit any plan whose steps need no particular edits."""
    return [
        use_tool("submit_plan", plan or DEFAULT_PLAN, match=Match(tool="submit_plan"),
                 rule_name="plan"),
        use_tool("submit_review", {"verdict": "accept", "comments": [], "risk_flags": [],
                                   "risk_notes": ""},
                 match=Match(tool="submit_review"), rule_name="review"),
        use_tool("create_file", {"path": "widgets/ops.py", "content": SUBTRACT},
                 match=Match(tool="create_file"), times=1, rule_name="edit"),
        use_tool("finish_step", {"summary": "Done.", "rationale": "As planned.",
                                 "uncertainties": ""},
                 match=Match(tool="finish_step"), rule_name="finish"),
    ]


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST_PATH.read_text())
    return data


@dataclass
class BotProcess:
    """One ``conductor`` subprocess; its combined output goes to ``log_path``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 30) -> list[str]:
        return self.logs().splitlines()[-lines:]

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


class Stack:
    """Everything Conductor talks to, and Conductor itself. See the module docstring."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        files: dict[str, str | bytes] | None = None,
        default_branch: str = "main",
        workers: int = 1,
        job_timeout: int = 20,
        worker_concurrency: int = 4,
        run_concurrency: int = 2,
        ci_command: str = "python -m pytest -q",
        ci_mode: str = "normal",
        ci_timeout: float = 120.0,
        script: list[Rule] | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.options = {
            "job_timeout": job_timeout,
            "worker_concurrency": worker_concurrency,
            "run_concurrency": run_concurrency,
            "log_level": log_level,
        }
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._files = PROJECT_FILES if files is None else files  # {}: an empty repository
        self._default_branch = default_branch
        self._initial_workers = workers
        self._ci = (ci_command, ci_mode, ci_timeout)
        self._script = script
        self.web: BotProcess | None = None
        self.workers: list[BotProcess] = []
        self._clients: list[redis.Redis] = []
        self._stack = contextlib.ExitStack()
        self.logs_dir = self.workdir / "logs"
        self.web_port = 0
        self._web_log_start = 0

    # -- starting and stopping ---------------------------------------------------------------

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        spec = manifest()
        permissions = dict(spec["default_permissions"])
        events = list(spec["default_events"])
        state = GitHubState(self.workdir / "github", app_slug="conductor", app_name="Conductor",
                            app_permissions=permissions, app_events=events)
        self.state = state
        self.repo: Repo = state.create_repo(REPO, files=self._files,
                                             default_branch=self._default_branch)
        self.installation: Installation = state.install_app("acme")
        for login, role in USERS.items():
            state.create_user(login, repos={REPO: role})

        self.github = self._stack.enter_context(GitHubServer(state))
        self.model = AnthropicStandIn(api_key=MODEL_KEY)
        self.model.script(self._script if self._script is not None else default_script())
        self.anthropic = self._stack.enter_context(AnthropicServer(self.model))
        self.hooks = self._stack.enter_context(WebhookDelivery(state))
        self.ci = self._stack.enter_context(CIRunner(state))
        command, mode, timeout = self._ci
        self.ci.configure(REPO, command, mode=mode, timeout=timeout)
        self.redis: RedisProcess = start_redis_on_free_port(
            self.workdir / "redis", appendonly=True,
            binary=redis_server_binary(prefer_system=True),
        )
        self._stack.callback(self.redis.stop)

        deadline = time.monotonic() + self.startup_timeout
        self._start_web()
        for _ in range(self._initial_workers):
            self.workers.append(self._spawn_worker())
        self._wait_web(deadline)
        for worker in self.workers:
            self._wait_worker(worker, deadline)
        self.hooks.set_url(self.web_url + WEBHOOK_PATH)
        # The dashboard's sign-in comes back here, as the App's settings on GitHub would say.
        state.set_callback_urls([self.web_url + "/dashboard/callback"])

    def stop(self) -> None:
        """SIGTERM every process (SIGKILL the stubborn), then stop the stand-ins and Redis."""
        if self.web is None and not self.workers and not self._clients:
            self._stack.close()
            return
        hooks = getattr(self, "hooks", None)
        if hooks is not None:
            hooks.set_url(None)
        processes = [p for p in [self.web, *self.workers] if p is not None]
        for process in processes:
            process.signal(signal.SIGTERM)
        for process in processes:
            process.stop(timeout=15)
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients = []
        self._stack.close()
        self.final_logs = {p.name: p.logs() for p in processes}

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the bot's processes -----------------------------------------------------------------

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, data_dir: Path) -> dict[str, str]:
        """The whole environment of a ``conductor`` process: nothing from the host but PATH."""
        state = self.state
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir / "home"),
            "LANG": "C.UTF-8",
            "GITHUB_APP_ID": str(state.app_id),
            "GITHUB_PRIVATE_KEY_PATH": str(state.private_key_path()),
            "GITHUB_WEBHOOK_SECRET": state.webhook_secret,
            "GITHUB_APP_SLUG": state.app.slug,
            "GITHUB_CLIENT_ID": state.app.client_id,
            "GITHUB_CLIENT_SECRET": state.app.client_secret,
            "GITHUB_API_URL": self.github.url,
            "GITHUB_URL": self.github.url,
            "ANTHROPIC_API_KEY": MODEL_KEY,
            "ANTHROPIC_BASE_URL": self.anthropic.url,
            "REDIS_URL": self.redis.url,
            "CONDUCTOR_DATA_DIR": str(data_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.web_port),
            "LOG_LEVEL": str(self.options["log_level"]),
            "CONDUCTOR_JOB_TIMEOUT": str(self.options["job_timeout"]),
            "CONDUCTOR_WORKER_CONCURRENCY": str(self.options["worker_concurrency"]),
            "CONDUCTOR_RUN_CONCURRENCY": str(self.options["run_concurrency"]),
            # A second between writes would double most runs' time here; the tests that need
            # GitHub's spacing set it back (tests/e2e/test_conductor.py).
            "CONDUCTOR_GITHUB_WRITE_INTERVAL": "0",
        }
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, command: str, data_dir: Path) -> BotProcess:
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", command],
                cwd=data_dir,  # no stray .env is read from the caller's directory
                env=self.env(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return BotProcess(name=name, popen=popen, log_path=log_path)

    def _spawn_worker(self) -> BotProcess:
        index = len(self.workers)
        return self._spawn(f"worker-{index}", "worker", self.workdir / "data" / f"worker-{index}")

    def _start_web(self) -> None:
        self.web_port = free_port()
        self._web_log_start = self.web_log.stat().st_size if self.web_log.exists() else 0
        self.web = self._spawn("web", "web", self.workdir / "data" / "web")

    @property
    def web_log(self) -> Path:
        return self.logs_dir / "web.log"

    def _wait_web(self, deadline: float, attempts: int = 5) -> None:
        """Wait until ``conductor web`` answers /healthz, on another port if its was taken.

        Tests run in parallel processes, each picking ports: two may pick the same one, and
        the loser's uvicorn exits with "address already in use" a moment after it starts.
        """
        with httpx.Client(timeout=1.0) as client:
            while True:
                assert self.web is not None
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.web_url + "/healthz").status_code == 200:
                        return
                if not self.web.alive and attempts > 1 and self._web_bind_failed():
                    attempts -= 1
                    self._start_web()
                    continue
                self._check_startup(self.web, deadline, "answer /healthz")
                time.sleep(0.05)

    def _web_bind_failed(self) -> bool:
        with self.web_log.open("rb") as log:
            log.seek(self._web_log_start)
            return b"address already in use" in log.read()

    def _wait_worker(self, worker: BotProcess, deadline: float) -> None:
        while READY_LINE not in worker.logs():
            self._check_startup(worker, deadline, f"log {READY_LINE!r}")
            time.sleep(0.05)

    def _check_startup(self, process: BotProcess, deadline: float, what: str) -> None:
        if not process.alive:
            raise RuntimeError(
                f"conductor {process.name} exited ({process.popen.returncode}) before it "
                f"could {what}:\n" + "\n".join(process.tail(40))
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"conductor {process.name} did not {what} within {self.startup_timeout:g}s:\n"
                + "\n".join(process.tail(40))
            )

    def add_worker(self) -> BotProcess:
        """Start one more ``conductor worker`` and wait until it takes jobs."""
        worker = self._spawn_worker()
        self.workers.append(worker)
        self._wait_worker(worker, time.monotonic() + self.startup_timeout)
        return worker

    def kill_worker(self, index: int, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int:
        """Send ``sig`` to worker ``index`` and wait for it to exit; its exit code."""
        worker = self.workers[index]
        worker.signal(sig)
        return worker.popen.wait(timeout)

    def worker_logs(self, index: int = 0) -> str:
        return self.workers[index].logs()

    def web_logs(self) -> str:
        return self.web.logs() if self.web is not None else ""

    def log_records(self, process: BotProcess) -> list[dict[str, Any]]:
        """A process's JSON log lines, parsed (other lines are skipped)."""
        records = []
        for line in process.logs().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    records.append(value)
        return records

    def redis_client(self) -> redis.Redis:
        """A client on the stack's Redis (closed by :meth:`stop`), answers decoded to str."""
        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self._clients.append(client)
        return client

    # -- acting and observing ----------------------------------------------------------------

    def label_issue(self, title: str, body: str = "", as_user: str = "alice",
                    label: str = TRIGGER_LABEL) -> int:
        """``as_user`` opens an issue on ``acme/widgets`` and labels it; the issue number."""
        user = self.state.as_user(as_user)
        issue = user.open_issue(REPO, title, body)
        user.add_labels(REPO, issue.number, label)
        return issue.number

    def comments(self, number: int) -> list[Comment]:
        return sorted(
            (c for c in self.state.comments.values()
             if c.repo_id == self.repo.id and c.issue_number == number),
            key=lambda c: c.id,
        )

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0,
                 what: str = "the condition") -> T:
        """Poll ``predicate`` until it returns something truthy; on timeout fail with the
        recent logs, deliveries, model calls and CI results."""
        deadline = time.monotonic() + timeout
        error: BaseException | None = None
        while True:
            try:
                value = predicate()
            except Exception as exc:  # a predicate reading half-written state: try again
                error, value = exc, None
            if value:
                return value
            if time.monotonic() > deadline:
                because = f" (last error: {error!r})" if error else ""
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}{because}\n\n"
                    + self.diagnostics()
                )
            time.sleep(0.05)

    def diagnostics(self, lines: int = 25) -> str:
        """Recent web and worker log lines, deliveries, model calls and CI results."""
        parts: list[str] = []
        for process in [self.web, *self.workers]:
            if process is None:
                continue
            state = "running" if process.alive else f"exited {process.popen.returncode}"
            parts.append(f"--- conductor {process.name} ({state}), last {lines} lines:")
            parts.extend(process.tail(lines))
        hooks: WebhookDelivery | None = getattr(self, "hooks", None)
        if hooks is not None:
            parts.append("--- webhook deliveries (latest 15):")
            for d in hooks.deliveries()[-15:]:
                answer = (d.response_body or d.error or "")[:160]
                parts.append(f"#{d.id} {d.event}.{d.action} {d.status} {d.status_code} {answer}")
        model: AnthropicStandIn | None = getattr(self, "model", None)
        if model is not None:
            parts.append("--- model requests (latest 10):")
            for e in model.requests[-10:]:
                parts.append(f"#{e.seq} {e.method} {e.path} {e.status} rule={e.rule}")
        ci: CIRunner | None = getattr(self, "ci", None)
        if ci is not None:
            parts.append("--- CI results:")
            for r in ci.results[-10:]:
                parts.append(f"{r.head_sha[:10]} attempt {r.attempt}: {r.conclusion}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_stack(workdir: str | Path, **options: Any) -> Iterator[Stack]:
    with Stack(workdir, **options) as stack:
        yield stack
