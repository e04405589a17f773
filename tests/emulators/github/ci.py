"""A CI runner standing in for GitHub Actions: every push to a branch runs the repository's
configured command on the pushed commit and reports the result as a workflow run.

:class:`CIRunner` listens to the state's pushes (smart-HTTP pushes, REST ref updates, merges,
``commit_files``) and re-runs (``rerun-failed-jobs``/``rerun``). For a push it creates a
workflow run with one job through the state's CI API, so a ``github-actions`` check suite and
check run exist and ``workflow_run``/``workflow_job``/``check_run``/``check_suite`` events go
out as on GitHub. The job checks the commit out into a fresh temporary directory, runs the
command in a subprocess (own process group, a time limit, a minimal environment without the
host's secrets), streams the combined output into the job's log with GitHub's timestamp
prefix, and completes the job: ``success``, ``failure`` (the failing part of the output goes
into the check run's output, with annotations) or ``timed_out``.

Modes per repository: ``normal``; ``flaky`` (the first run of each head SHA fails whatever the
command says, re-runs and later runs report the command's result); ``none`` (no CI: pushes
create nothing). A repository that was never configured has no CI either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin import endpoint
from .errors import ApiError, not_found
from .gitrepo import ZERO_SHA, git_env
from .httputil import json_response, read_json, state_of
from .records import Job, Repo, WorkflowRun
from .state import GitHubState

log = logging.getLogger(__name__)

MODES = ("normal", "flaky", "none")
MAX_OUTPUT_TEXT = 60_000  # GitHub caps a check run's output.text at 65535 characters
MAX_ANNOTATIONS = 50
FLAKY_NOTE = "Simulated flaky failure: the first run of each commit fails (CI mode 'flaky')."
_PYTEST_SECTION = re.compile(r"^=+ (FAILURES|ERRORS) =+$")
_PYTEST_SUMMARY = re.compile(
    r"^=*\s*(\d+ (?:failed|passed|errors?|skipped|deselected|xfailed|xpassed)\b.*?)\s*=*$"
)
_LOCATION = re.compile(r"^(?P<path>[\w./-]+\.py):(?P<line>\d+): (?P<message>.+)$")
_FAILED_TEST = re.compile(r"^(FAILED|ERROR) (\S+)")


@dataclass
class CIConfig:
    """What CI does for one repository."""

    command: str
    timeout: float = 600.0
    mode: str = "normal"
    job: str = "test"
    workflow_path: str = ".github/workflows/ci.yml"
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.mode != "none" and not self.command.strip():
            raise ValueError("command must not be empty")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


@dataclass
class CIResult:
    """One job the runner ran (for inspection in tests)."""

    repo: str
    run_id: int
    job_id: int
    attempt: int
    head_sha: str
    command: str
    conclusion: str
    exit_code: int | None
    duration: float
    output: str


def timestamp(epoch: float) -> str:
    """GitHub's log line prefix: ``2024-05-01T12:00:00.1234567Z``."""
    fraction = int((epoch % 1) * 1e7)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(epoch))) + f".{fraction:07d}Z"


class CIRunner:
    """``CIRunner(state).start()``; ``configure("acme/widgets", "python -m pytest -q")``."""

    def __init__(
        self,
        state: GitHubState,
        *,
        workers: int = 2,
        workdir: str | Path | None = None,
        keep_workspaces: bool = False,
    ) -> None:
        self.state = state
        self.workdir = Path(workdir) if workdir else state.workdir / "ci"
        self.keep_workspaces = keep_workspaces
        self.results: list[CIResult] = []
        self._workers = workers
        self._configs: dict[int, CIConfig] = {}  # by repository id, which a rename keeps
        self._runs_per_sha: dict[tuple[int, str], int] = {}
        self._cond = threading.Condition()
        self._pending = 0
        self._intake: queue.Queue[tuple[Repo, str, str, str] | None] = queue.Queue()
        self._intake_thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._stopping = False
        self._unsubscribe: list[Callable[[], None]] = []
        self._runner_numbers = iter(range(1, 1_000_000))

    # -- configuration -----------------------------------------------------------------------

    def configure(
        self,
        repo: Repo | str,
        command: str = "",
        *,
        timeout: float = 600.0,
        mode: str = "normal",
        job: str = "test",
        workflow_path: str = ".github/workflows/ci.yml",
        env: dict[str, str] | None = None,
    ) -> CIConfig:
        """Run ``command`` (a shell command line) on every push to ``repo``."""
        record = self.state.resolve_repo(repo)
        config = CIConfig(
            command=command,
            timeout=timeout,
            mode=mode,
            job=job,
            workflow_path=workflow_path,
            env=dict(env or {}),
        )
        with self._cond:
            self._configs[record.id] = config
        return config

    def configured(self, repo: Repo | str) -> CIConfig | None:
        """The configuration set for ``repo`` (mode ``none`` included), if any."""
        if not isinstance(repo, Repo):
            owner, _, name = repo.partition("/")
            found = self.state.find_repo(owner, name)
            if found is None:
                return None
            repo = found
        with self._cond:
            return self._configs.get(repo.id)

    def config_for(self, repo: Repo | str) -> CIConfig | None:
        """The configuration CI runs with, or ``None`` when the repository has no CI."""
        config = self.configured(repo)
        return config if config is not None and config.mode != "none" else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CIRunner:
        if self._pool is not None:
            return self
        self._stopping = False
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ci-runner")
        self._intake_thread = threading.Thread(target=self._take_pushes, name="ci-intake",
                                               daemon=True)
        self._intake_thread.start()
        self._unsubscribe = [
            self.state.on_push(self._on_push),
            self.state.on_rerun(self._on_rerun),
        ]
        self.state.ci_runner = self
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, kill running commands (their jobs end ``cancelled``), wait."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self.state.ci_runner is self:
            self.state.ci_runner = None
        if self._pool is None:
            return
        self._stopping = True
        self._intake.put(None)
        if self._intake_thread is not None:
            self._intake_thread.join(timeout)
        with self._cond:
            running = list(self._processes)
        for process in running:
            _kill_group(process)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def __enter__(self) -> CIRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until every push and re-run seen so far has finished; ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._pending} CI jobs still queued or running")
                self._cond.wait(remaining)

    # -- events ------------------------------------------------------------------------------

    def _on_push(self, repo: Repo, ref: str, before: str, after: str, pusher: str) -> None:
        # In the pushing thread: just hand over. Tags and deleted branches run nothing.
        if not ref.startswith("refs/heads/") or after == ZERO_SHA or self._stopping:
            return
        if self.config_for(repo) is None:
            return
        self._change_pending(+1)
        self._intake.put((repo, ref, after, pusher))

    def _on_rerun(self, run: WorkflowRun, jobs: list[Job]) -> None:
        if self._stopping:
            return
        for job in jobs:
            self._submit(job.id)

    def _take_pushes(self) -> None:
        # Creates workflow runs in push order, at once, however busy the job pool is.
        while True:
            item = self._intake.get()
            if item is None:
                return
            repo, ref, sha, pusher = item
            try:
                config = self.config_for(repo)
                if config is not None and not self._stopping:
                    run = self.state.create_workflow_run(
                        repo,
                        head_sha=sha,
                        head_branch=ref.removeprefix("refs/heads/"),
                        workflow_path=config.workflow_path,
                        event="push",
                        jobs=[config.job],
                        actor=pusher,
                    )
                    for job in self.state.workflow_jobs(run.id):
                        self._submit(job.id)
            except Exception:
                log.exception("CI could not start for %s %s", repo.full_name, sha)
            finally:
                self._change_pending(-1)

    def _submit(self, job_id: int) -> None:
        if self._pool is None:
            return
        self._change_pending(+1)
        try:
            self._pool.submit(self._run_job, job_id)
        except RuntimeError:  # the pool shut down meanwhile
            self._change_pending(-1)

    def _change_pending(self, delta: int) -> None:
        with self._cond:
            self._pending += delta
            self._cond.notify_all()

    # -- running a job -----------------------------------------------------------------------

    def _run_job(self, job_id: int) -> None:
        try:
            self._execute(job_id)
        except Exception as exc:
            log.exception("CI job %s failed to run", job_id)
            with contextlib.suppress(Exception):
                self.state.append_job_log(job_id, f"##[error]The runner failed: {exc!r}\n")
                self.state.complete_job(job_id, "failure")
        finally:
            self._change_pending(-1)

    def _execute(self, job_id: int) -> None:
        state = self.state
        job = state.jobs[job_id]
        run = state.workflow_runs[job.run_id]
        repo = state.repos[run.repo_id]
        config = self.config_for(repo)
        started = time.monotonic()
        state.start_job(job_id, runner_name=f"emulated-runner-{next(self._runner_numbers)}")
        logger = JobLog(state, job_id)
        if config is None:
            logger.line("##[error]No CI is configured for this repository any more.")
            state.complete_job(job_id, "cancelled")
            return
        with self._cond:
            key = (repo.id, run.head_sha)
            runs_before = self._runs_per_sha.get(key, 0)
            self._runs_per_sha[key] = runs_before + 1
        workspace = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self.workdir))
        try:
            checkout = workspace / repo.name
            logger.line("##[group]Set up job")
            logger.line(f"Current runner version: 'emulated'; job '{job.name}' on {run.head_sha}")
            logger.line("##[endgroup]")
            logger.line("##[group]Run actions/checkout@v4")
            error = self._checkout(repo, run.head_sha, checkout)
            logger.line(f"Checked out {run.head_sha}" if error is None else f"##[error]{error}")
            logger.line("##[endgroup]")
            if error is not None:
                exit_code, timed_out = None, False
            else:
                logger.line(f"##[group]Run {config.command}")
                logger.line(config.command)
                logger.line("##[endgroup]")
                exit_code, timed_out = self._run_command(
                    config, repo, run, job, checkout, workspace, logger
                )
        finally:
            if not self.keep_workspaces:
                shutil.rmtree(workspace, ignore_errors=True)

        flaky = config.mode == "flaky" and runs_before == 0
        if self._stopping and exit_code is None and not timed_out:
            conclusion = "cancelled"
            logger.line("##[error]The operation was canceled.")
        elif timed_out:
            conclusion = "timed_out"
            logger.line(f"##[error]The job has exceeded the maximum execution time of "
                        f"{config.timeout:g}s and was killed.")
        elif exit_code == 0 and not flaky:
            conclusion = "success"
        else:
            conclusion = "failure"
            if flaky and exit_code == 0:
                logger.line(f"##[error]{FLAKY_NOTE}")
            if exit_code:
                logger.line(f"##[error]Process completed with exit code {exit_code}.")
        logger.line("Cleaning up orphan processes")
        output = report(job.name, config.command, logger.output, conclusion, exit_code,
                        config.timeout, flaky)
        state.complete_job(job_id, conclusion, steps=logger.steps(conclusion, config.command),
                           output=output)
        with self._cond:
            self.results.append(
                CIResult(
                    repo=repo.full_name,
                    run_id=run.id,
                    job_id=job_id,
                    attempt=job.run_attempt,
                    head_sha=run.head_sha,
                    command=config.command,
                    conclusion=conclusion,
                    exit_code=exit_code,
                    duration=time.monotonic() - started,
                    output=logger.output,
                )
            )

    def _checkout(self, repo: Repo, sha: str, target: Path) -> str | None:
        env = git_env(target.parent)
        bare = str(self.state.repo_path(repo))
        for args in (
            ["git", "clone", "--quiet", "--no-checkout", "--no-hardlinks", bare, str(target)],
            ["git", "-C", str(target), "-c", "advice.detachedHead=false", "checkout",
             "--quiet", "--detach", sha],
        ):
            proc = subprocess.run(args, capture_output=True, env=env, check=False, timeout=120)
            if proc.returncode != 0:
                return f"checkout failed: {proc.stderr.decode(errors='replace').strip()}"
        return None

    def _run_command(
        self,
        config: CIConfig,
        repo: Repo,
        run: WorkflowRun,
        job: Job,
        checkout: Path,
        workspace: Path,
        logger: JobLog,
    ) -> tuple[int | None, bool]:
        (workspace / "tmp").mkdir()
        env = {
            # The interpreter running the emulator first, as actions/setup-python would.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": str(workspace),
            "TMPDIR": str(workspace / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": repo.full_name,
            "GITHUB_SHA": run.head_sha,
            "GITHUB_REF": f"refs/heads/{run.head_branch}" if run.head_branch else "",
            "GITHUB_RUN_ID": str(run.id),
            "GITHUB_RUN_ATTEMPT": str(job.run_attempt),
            "GITHUB_JOB": job.name,
            "GITHUB_WORKSPACE": str(checkout),
            "RUNNER_TEMP": str(workspace / "tmp"),
            **config.env,
        }
        process = subprocess.Popen(
            ["/bin/sh", "-c", config.command],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._cond:
            self._processes.add(process)
        reader = threading.Thread(target=logger.follow, args=(process.stdout,), daemon=True,
                                  name=f"ci-log-{job.id}")
        reader.start()
        timed_out = False
        try:
            process.wait(config.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process)  # also whatever the command left running in the background
            process.wait()
            reader.join(10)
            with self._cond:
                self._processes.discard(process)
        if timed_out or (self._stopping and process.returncode < 0):
            return None, timed_out
        return process.returncode, False


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class JobLog:
    """A job's log, written to the state line by line with GitHub's timestamp prefix."""

    def __init__(self, state: GitHubState, job_id: int) -> None:
        self.state = state
        self.job_id = job_id
        self.command_lines: list[str] = []
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.state.append_job_log(self.job_id, f"{timestamp(self.state.now())} {text}\n")

    def follow(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace").rstrip("\r\n")
            self.command_lines.append(text)
            self.line(text)
        stream.close()

    @property
    def output(self) -> str:
        return "\n".join(self.command_lines)

    def steps(self, conclusion: str, command: str) -> list[dict[str, Any]]:
        ran = "success" if conclusion != "cancelled" else "cancelled"
        return [
            {"name": "Set up job", "status": "completed", "conclusion": "success"},
            {"name": "Run actions/checkout@v4", "status": "completed", "conclusion": ran},
            {"name": f"Run {command}"[:100], "status": "completed", "conclusion": conclusion},
            {"name": "Complete job", "status": "completed", "conclusion": "success"},
        ]


def report(
    job: str,
    command: str,
    output: str,
    conclusion: str,
    exit_code: int | None,
    timeout: float,
    flaky: bool,
) -> dict[str, Any]:
    """The check run's ``output``: on failure the failing part of the log and annotations."""
    lines = output.splitlines()
    summary_line = next(
        (m.group(1).strip() for line in reversed(lines) if (m := _PYTEST_SUMMARY.match(line))),
        None,
    )
    if conclusion == "success":
        text = summary_line or "The command succeeded."
        return {"title": f"{job}: success", "summary": f"`{command}` succeeded: {text}"}
    if conclusion == "cancelled":
        return {"title": f"{job}: cancelled", "summary": "The run was cancelled."}
    failed_tests = [m.group(2) for line in lines if (m := _FAILED_TEST.match(line))]
    start = next((i for i, line in enumerate(lines) if _PYTEST_SECTION.match(line)), None)
    failing = lines[start:] if start is not None else lines[-120:]
    text = "\n".join(failing)
    if len(text) > MAX_OUTPUT_TEXT:
        text = "…\n" + text[-MAX_OUTPUT_TEXT:]
    if conclusion == "timed_out":
        title = f"{job}: timed out after {timeout:g}s"
        summary = f"`{command}` did not finish within {timeout:g} seconds and was killed."
    elif flaky and exit_code == 0:
        title = f"{job}: failed (flaky)"
        summary = FLAKY_NOTE
    else:
        count = f"{len(failed_tests)} failed" if failed_tests else f"exit code {exit_code}"
        title = f"{job}: {count}"
        summary = f"`{command}` failed (exit code {exit_code})"
        summary += f": {summary_line}." if summary_line else "."
    if failed_tests:
        summary += "\n\nFailed:\n" + "\n".join(f"- `{name}`" for name in failed_tests)
    annotations: list[dict[str, Any]] = []
    for line in failing:
        match = _LOCATION.match(line)
        if match and len(annotations) < MAX_ANNOTATIONS - 1:
            number = int(match.group("line"))
            annotations.append({
                "path": match.group("path"),
                "start_line": number,
                "end_line": number,
                "annotation_level": "failure",
                "message": match.group("message")[:1000],
            })
    annotations.append({
        "path": ".github",
        "start_line": 1,
        "end_line": 1,
        "annotation_level": "failure",
        "title": job,
        "message": summary.splitlines()[0],
    })
    return {"title": title, "summary": summary, "text": text, "annotations": annotations}


# -- admin HTTP API ----------------------------------------------------------------------------


def runner_of(request: Request) -> CIRunner:
    runner = state_of(request).ci_runner
    if runner is None:
        raise ApiError(404, "The CI runner is not running in this emulator")
    return runner  # type: ignore[no-any-return]


def _repo_name(request: Request) -> str:
    state = state_of(request)
    repo = state.find_repo(request.path_params["owner"], request.path_params["repo"])
    if repo is None:
        raise not_found()
    return repo.full_name


@endpoint
async def get_ci(request: Request) -> Response:
    config = runner_of(request).configured(_repo_name(request))
    return json_response(dataclasses.asdict(config) if config else {"mode": "none"})


@endpoint
async def put_ci(request: Request) -> Response:
    runner = runner_of(request)
    name = _repo_name(request)
    body = await read_json(request)
    try:
        config = runner.configure(
            name,
            body.get("command") or "",
            timeout=float(body.get("timeout", 600.0)),
            mode=body.get("mode", "normal"),
            job=body.get("job", "test"),
            workflow_path=body.get("workflow_path", ".github/workflows/ci.yml"),
            env=body.get("env"),
        )
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc
    return json_response(dataclasses.asdict(config))


@endpoint
async def wait_idle(request: Request) -> Response:
    runner = runner_of(request)
    body = await read_json(request)
    try:
        await run_in_threadpool(runner.wait_idle, float(body.get("timeout", 60.0)))
    except TimeoutError as exc:
        raise ApiError(504, str(exc)) from exc
    return json_response({"idle": True})


@endpoint
async def list_results(request: Request) -> Response:
    return json_response([dataclasses.asdict(r) for r in list(runner_of(request).results)])


A = "/_admin"
ROUTES = [
    Route(f"{A}/repos/{{owner}}/{{repo}}/ci", get_ci, methods=["GET"]),
    Route(f"{A}/repos/{{owner}}/{{repo}}/ci", put_ci, methods=["PUT"]),
    Route(f"{A}/ci/wait-idle", wait_idle, methods=["POST"]),
    Route(f"{A}/ci/results", list_results, methods=["GET"]),
]
