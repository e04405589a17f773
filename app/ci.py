"""Reading a commit's CI: is it finished, did it pass, and if not, what kind of failure.

Pure: the jobs read check suites, check runs and commit statuses from GitHub and pass them in;
nothing here does I/O. Conductor's own check run never counts (it is filtered by app id
before anything else), and a check suite that an app created but never ran checks in (GitHub
makes one per app that can write checks) stops counting once the no-CI timeout has passed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

OK_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
# "stale" is set by GitHub on a check that sat incomplete for 14 days.
FAILED_CONCLUSIONS = frozenset({"failure", "timed_out", "cancelled", "action_required",
                                "startup_failure", "stale"})
OK_STATES = frozenset({"success"})
FAILED_STATES = frozenset({"failure", "error"})


class Verdict(StrEnum):
    PENDING = "pending"  # something is still running, or the settle window is open
    GREEN = "green"
    RED = "red"
    NO_CI = "no_ci"  # nothing reported within the no-CI timeout
    MISSING = "missing"  # a required check never reported


@dataclass(frozen=True)
class Suite:
    id: int
    app_id: int | None
    app: str
    status: str | None
    conclusion: str | None
    check_runs: int  # latest_check_runs_count


@dataclass(frozen=True)
class CheckRun:
    id: int
    name: str
    app_id: int | None
    app: str
    status: str | None
    conclusion: str | None
    title: str = ""
    summary: str = ""
    text: str = ""
    details_url: str | None = None


@dataclass(frozen=True)
class Status:
    context: str
    state: str
    description: str = ""
    target_url: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What GitHub reports for one commit."""

    suites: Sequence[Suite] = ()
    runs: Sequence[CheckRun] = ()
    statuses: Sequence[Status] = ()  # the latest per context

    def failed(self, own_app_id: int | None) -> tuple[list[CheckRun], list[Status]]:
        """The completed check runs (not Conductor's own) and statuses that failed."""
        return ([r for r in self.runs if r.app_id != own_app_id or own_app_id is None
                 if r.status == "completed" and r.conclusion in FAILED_CONCLUSIONS],
                [s for s in self.statuses if s.state in FAILED_STATES])

    def failed_suites(self, own_app_id: int | None) -> list[Suite]:
        """The completed suites (not Conductor's own) that failed without a check run to show
        for it: a GitHub Actions workflow that could not start (an invalid workflow file
        concludes its suite `startup_failure` and creates no job)."""
        return [s for s in self.suites if (s.app_id != own_app_id or own_app_id is None)
                and s.status == "completed" and s.conclusion in FAILED_CONCLUSIONS
                and s.check_runs == 0]


@dataclass(frozen=True)
class Timing:
    now: float
    started: float  # when the bot began waiting for this commit's CI
    last_event: float | None  # the newest CI webhook for the commit
    settle: float
    no_ci_timeout: float


@dataclass(frozen=True)
class Reading:
    verdict: Verdict
    failing: list[str] = field(default_factory=list)  # names of failed checks and statuses
    waiting: list[str] = field(default_factory=list)  # names still running or missing
    passed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.verdict is Verdict.GREEN:
            return "passed: " + ", ".join(self.passed) if self.passed else "passed"
        if self.verdict is Verdict.RED:
            return "failed: " + ", ".join(self.failing)
        if self.verdict is Verdict.NO_CI:
            return "no CI reported for this commit"
        if self.verdict is Verdict.MISSING:
            return "required checks never reported: " + ", ".join(self.waiting)
        return "waiting for " + (", ".join(self.waiting) or "results")


def read_ci(snapshot: Snapshot, timing: Timing, *, own_app_id: int | None,
            required: Iterable[str] = ()) -> Reading:
    """The verdict on one commit's CI.

    Finished means every counted suite and status has completed and no webhook arrived for
    `settle` seconds. With `required` (the branch's required checks), each must have reported
    and passed; one that never reports is `MISSING` once the no-CI timeout has passed.
    """
    timed_out = timing.now - timing.started >= timing.no_ci_timeout
    suites = [s for s in snapshot.suites if s.app_id != own_app_id or own_app_id is None]
    runs = [r for r in snapshot.runs if r.app_id != own_app_id or own_app_id is None]
    waiting: list[str] = []
    failing: list[str] = []
    passed: list[str] = []
    counted = 0
    for suite in suites:
        if suite.status != "completed" and suite.check_runs == 0 and timed_out:
            continue  # an app that can write checks but runs none here
        counted += 1
        if suite.status != "completed":
            waiting.append(f"{suite.app} checks")
    failing += [f"{suite.app} checks" for suite in snapshot.failed_suites(own_app_id)]
    for run in runs:
        if run.status != "completed":
            waiting.append(run.name)
        elif run.conclusion in FAILED_CONCLUSIONS:
            failing.append(run.name)
        else:
            passed.append(run.name)
    for status in snapshot.statuses:
        counted += 1
        if status.state in FAILED_STATES:
            failing.append(status.context)
        elif status.state in OK_STATES:
            passed.append(status.context)
        else:
            waiting.append(status.context)
    reported = {r.name for r in runs} | {s.context for s in snapshot.statuses}
    missing = [name for name in required if name not in reported]
    settled = timing.last_event is None or timing.now - timing.last_event >= timing.settle

    if waiting or not settled:
        return Reading(Verdict.PENDING, failing, waiting + missing, passed)
    if failing:
        return Reading(Verdict.RED, failing, missing, passed)
    if missing:
        return Reading(Verdict.MISSING if timed_out else Verdict.PENDING, [], missing, passed)
    if counted == 0 and not runs:
        return Reading(Verdict.NO_CI if timed_out else Verdict.PENDING, [], [], [])
    return Reading(Verdict.GREEN, [], [], passed)


# -- failures ----------------------------------------------------------------------------------

class FailureKind(StrEnum):
    TEST = "test failure"
    LINT = "lint or type error"
    BUILD = "build error"
    INFRA = "infrastructure or flaky"


_TEST = re.compile(
    r"^(FAILED|ERROR) \S+|^=+ FAILURES =+$|\bAssertionError\b|^\s*\d+ failed\b|"
    r"^--- FAIL: |^FAIL\s|^\s*✕|Tests? failed|test(s)? failed|^not ok \d+",
    re.MULTILINE)
_LINT = re.compile(
    r"^\S+\.\w+:\d+:(\d+:)? [A-Z]{1,3}\d{2,4}\b|^\S+\.py:\d+: error: |Found \d+ errors? in \d+ "
    r"files?|\beslint\b.*\d+ problems?|^\s*\d+:\d+\s+error\s|would reformat|ruff|flake8|"
    r"\bmypy\b.*error|tsc.*error TS\d+|error TS\d+:",
    re.MULTILINE | re.IGNORECASE)
_BUILD = re.compile(
    r"SyntaxError|IndentationError|ModuleNotFoundError|ImportError|cannot find module|"
    r"error\[E\d+\]|compilation (failed|terminated)|BUILD FAILED|error: could not compile|"
    r"Could not resolve dependencies|No matching distribution found|undefined reference",
    re.IGNORECASE)
_INFRA = re.compile(
    r"The (operation|job) was canceled|exceeded the maximum execution time|runner has "
    r"received a shutdown signal|lost communication with the server|No space left on "
    r"device|Could not resolve host|Connection (reset|refused|timed out)|ETIMEDOUT|"
    r"ECONNRESET|rate limit|503 Service Unavailable|502 Bad Gateway|flaky|"
    r"The hosted runner .* lost|Error: The process '.*' failed with exit code 137|"
    r"Killed\b|OOMKilled",
    re.IGNORECASE)
_PASSED_ONLY = re.compile(r"^=*\s*\d+ passed\b(?!.*\bfailed\b)", re.MULTILINE)


def classify(evidence: str, conclusions: Iterable[str] = ()) -> FailureKind:
    """What kind of failure the logs and outputs of the failing checks show.

    A failure with no failing test, lint or build error in its output — a timeout, a
    cancelled runner, a network error, or a job whose tests all passed and that failed
    anyway — is infrastructure or flakiness: worth re-running before changing any code.
    """
    conclusions = set(conclusions)
    if conclusions and conclusions <= {"timed_out", "cancelled", "startup_failure", "stale"}:
        return FailureKind.INFRA
    if _BUILD.search(evidence) and not _TEST.search(evidence):
        return FailureKind.BUILD
    if _TEST.search(evidence):
        return FailureKind.TEST
    if _LINT.search(evidence):
        return FailureKind.LINT
    if _BUILD.search(evidence):
        return FailureKind.BUILD
    if _INFRA.search(evidence) or _PASSED_ONLY.search(evidence) or not evidence.strip():
        return FailureKind.INFRA
    return FailureKind.TEST  # an unrecognised failure: let the fixer read it


_FAILED_NAME = re.compile(r"^(?:FAILED|ERROR) (\S+)|^--- FAIL: (\S+)|^not ok \d+ - (.+)$",
                          re.MULTILINE)


def failing_tests(evidence: str, limit: int = 20) -> list[str]:
    """Names of failing tests found in the output (pytest, go test, TAP)."""
    names: list[str] = []
    for match in _FAILED_NAME.finditer(evidence):
        name = next(g for g in match.groups() if g)
        if name not in names:
            names.append(name)
        if len(names) == limit:
            break
    return names


# -- logs --------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ?", re.MULTILINE)
_MARKERS = re.compile(
    r"##\[error\]|^=+ (FAILURES|ERRORS|short test summary info) =+$|^(FAILED|ERROR) |"
    r"Traceback \(most recent call last\)|\berror\b|--- FAIL|AssertionError|exit code",
    re.IGNORECASE | re.MULTILINE)
_NOISE = re.compile(r"^##\[(group|endgroup)\]|^\s*$")


def excerpt(log: str, max_lines: int = 120, max_chars: int = 12_000) -> str:
    """The relevant part of a CI log: from a little before the first failure marker to the
    end (where summaries are), with runner timestamps and group markers removed, trimmed in
    the middle when too long."""
    lines = [line for line in _TIMESTAMP.sub("", log).splitlines() if not _NOISE.match(line)]
    first = next((i for i, line in enumerate(lines) if _MARKERS.search(line)), None)
    if first is not None:
        lines = lines[max(0, first - 5):]
    if len(lines) > max_lines:
        head = max_lines // 3
        lines = [*lines[:head], f"… ({len(lines) - max_lines} lines left out) …",
                 *lines[-(max_lines - head):]]
    text = "\n".join(lines)
    if len(text) > max_chars:
        text = text[: max_chars // 3] + "\n… (trimmed) …\n" + text[-(2 * max_chars) // 3:]
    return text


def snapshot_from_api(suites: Iterable[Any], runs: Iterable[Any],
                      statuses: Iterable[Any]) -> Snapshot:
    """A `Snapshot` from githubkit's parsed models (CheckSuite, CheckRun, Status)."""
    def app_of(obj: Any) -> tuple[int | None, str]:
        app = getattr(obj, "app", None)
        return (getattr(app, "id", None), str(getattr(app, "slug", None) or "app"))

    latest: dict[str, Status] = {}
    for status in statuses:  # newest first, as GitHub lists them
        context = str(status.context)
        if context not in latest:
            latest[context] = Status(context=context, state=str(status.state),
                                     description=str(status.description or ""),
                                     target_url=status.target_url)
    return Snapshot(
        suites=[Suite(id=int(s.id), app_id=app_of(s)[0], app=app_of(s)[1],
                      status=_str(s.status), conclusion=_str(s.conclusion),
                      check_runs=int(getattr(s, "latest_check_runs_count", 0) or 0))
                for s in suites],
        runs=[CheckRun(id=int(r.id), name=str(r.name), app_id=app_of(r)[0], app=app_of(r)[1],
                       status=_str(r.status), conclusion=_str(r.conclusion),
                       title=str(getattr(r.output, "title", None) or ""),
                       summary=str(getattr(r.output, "summary", None) or ""),
                       text=str(getattr(r.output, "text", None) or ""),
                       details_url=r.details_url)
              for r in runs],
        statuses=list(latest.values()),
    )


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))
