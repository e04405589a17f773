"""The dashboard: runs, plans, steps, CI, the timeline and every model call, in a browser.

Who sees what is GitHub's answer, not a list kept here. A person signs in with GitHub (the
App's OAuth web flow: GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET, and `/dashboard/callback`
among the App's callback URLs). Conductor keeps their login only, in a session in Redis for
eight hours; the user token GitHub hands over is used once to ask who they are, then dropped.
A run is shown to someone with read access or more to its repository (or write, or admin:
`CONDUCTOR_DASHBOARD_PERMISSION`), asked with the installation's token (`app.permissions`,
cached a minute); a run they may not see is a 404, the same as a run that does not exist.
The repository is found by its id, which a rename keeps, and asked about under the name it
has now: a new repository given an old name shows nobody the old one's runs. Runs recorded
before runs kept the id are checked by the name they started with.

The pages are HTML without scripts; what they show came in part from issues, models and CI
logs, so it is escaped (Jinja autoescape, control characters shown as escapes) and the pages
forbid scripts, frames and outside resources (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from githubkit.exception import GitHubException
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.budget import UsageTotal, usage_totals
from app.constants import DASHBOARD_CALLBACK_PATH, DASHBOARD_PREFIX
from app.github import (
    GitHubApp,
    InstallationUnavailable,
    RateLimited,
    SignInFailed,
    describe,
    signed_in_login,
)
from app.logs import get_logger
from app.permissions import Access, access_by_id, permission
from app.render import render
from app.runs import Run, RunStore
from app.settings import Settings
from app.setup import public_url
from app.trace import Trace, assemble, clock, step_order, visible

log = get_logger(__name__)

PREFIX = DASHBOARD_PREFIX
CALLBACK_PATH = DASHBOARD_CALLBACK_PATH
SESSION_COOKIE = "conductor_session"
STATE_COOKIE = "conductor_sign_in"
# The key holds a digest of the cookie's value, so that reading Redis gives no usable session.
SESSION_KEY = "conductor:dashboard:session:{digest}"
SESSION_SECONDS = 8 * 3600
STATE_SECONDS = 600
RECENT_RUNS = 200  # runs a page of the list shows at most
# Runs one page of the list looks through for those the person may see, before it offers the
# next page instead: someone who sees one repository among many still gets an answer promptly.
SCAN_RUNS = 2000
PERMISSION_CHECKS_AT_ONCE = 4
# The REST field `permission` folds maintain into write and triage into read.
LEVELS = ("read", "write", "admin")
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}


@dataclass(frozen=True)
class Dashboard:
    """What the pages need, opened once in the web process's lifespan."""

    settings: Settings
    redis: Any
    github: GitHubApp | None  # None without the App's credentials: nobody can be checked
    http: httpx.AsyncClient

    @property
    def web_url(self) -> str:
        return str(self.settings.github_url).rstrip("/")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _page(name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    # Escaped as HTML by the templates; control characters and bidirectional overrides (which
    # could make text read as something else) are shown as escapes, over the whole page.
    html = visible(render(f"dashboard/{name}.html.j2", **context))
    return HTMLResponse(html, status, headers=HEADERS)


def _message(status: int, title: str, text: str, *, login: str | None = None,
             link: tuple[str, str] | None = None) -> HTMLResponse:
    return _page("message", status, title=title, text=text, login=login, link=link)


def _secure(request: Request, settings: Settings) -> bool:
    public = settings.conductor_public_url
    scheme = public.scheme if public is not None else request.url.scheme
    return scheme == "https"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if (not value or not value.startswith(PREFIX) or "//" in value or "\\" in value
            or any(ord(c) < 0x20 for c in value)):
        return PREFIX
    return value


async def _signed_in(dash: Dashboard, request: Request) -> str | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    raw = await dash.redis.get(SESSION_KEY.format(digest=_digest(cookie)))
    if raw is None:
        return None
    login = json.loads(raw).get("login")
    return login if isinstance(login, str) else None


def _sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", 303,
                            headers=HEADERS)


# --- who may see which repository ---------------------------------------------------------


class AccessUnknown(Exception):
    """GitHub could not say whether the person may read the repository."""


async def _access(dash: Dashboard, run: Run, login: str) -> Access:
    """`login`'s permission on the run's repository, and the repository's name now."""
    if dash.github is None:
        raise AccessUnknown(f"{run.repo}: GITHUB_APP_ID and GITHUB_PRIVATE_KEY are not set")
    try:
        if run.repo_id is not None:
            return await access_by_id(dash.redis, dash.github, run.installation_id,
                                      run.repo_id, login)
        # Recorded before runs kept the repository's id: its name is all there is.
        level = await permission(dash.redis, dash.github, run.installation_id, run.repo, login)
        return Access(level=level, repo=run.repo)
    except (GitHubException, InstallationUnavailable, RateLimited, httpx.HTTPError) as exc:
        said = describe(exc) if isinstance(exc, GitHubException) else str(exc)
        raise AccessUnknown(f"{run.repo}: {said or type(exc).__name__}") from None


async def _may_view(dash: Dashboard, run: Run, login: str) -> str | None:
    """The run's repository as named now, if `login` may see the run; None if not."""
    access = await _access(dash, run, login)
    needed = LEVELS.index(dash.settings.conductor_dashboard_permission)
    return access.repo if access.repo is not None and access.level in LEVELS[needed:] else None


async def _visible_repos(dash: Dashboard, runs: list[Run], login: str
                         ) -> tuple[dict[str, str], list[str]]:
    """The repositories among `runs` that `login` may read (by `Run.repo_key`, each with its
    name now), and those GitHub would not say about."""
    first: dict[str, Run] = {}
    for run in runs:
        first.setdefault(run.repo_key, run)
    # One check per repository not cached yet; a few at a time, not a burst.
    gate = asyncio.Semaphore(PERMISSION_CHECKS_AT_ONCE)

    async def check(run: Run) -> str | None:
        async with gate:
            return await _may_view(dash, run, login)

    checks = await asyncio.gather(*(check(run) for run in first.values()),
                                  return_exceptions=True)
    visible: dict[str, str] = {}
    unknown: list[str] = []
    for key, answer in zip(first, checks, strict=True):
        if isinstance(answer, AccessUnknown):
            unknown.append(str(answer))
        elif isinstance(answer, BaseException):
            raise answer
        elif answer is not None:
            visible[key] = answer
    return visible, unknown


# --- outcome metrics ----------------------------------------------------------------------


def outcome_metrics(runs: list[Run], costs: dict[str, float]) -> dict[str, Any]:
    """What the runs came to: how many ended how, how many pull requests were merged, how
    long that took from the label, and what it cost."""
    by_status = Counter(run.status.value for run in runs)
    merged = [run for run in runs if run.outcome and run.outcome.get("merged")]
    closed = [run for run in runs if run.outcome and not run.outcome.get("merged")]
    lead_times = [float(run.outcome["lead_time_s"]) for run in merged
                  if run.outcome and run.outcome.get("lead_time_s") is not None]
    total = sum(costs.get(run.id, 0.0) for run in runs)
    decided = len(merged) + len(closed)
    return {
        "runs": len(runs),
        "by_status": sorted(by_status.items(), key=lambda item: (-item[1], item[0])),
        "pull_requests": sum(1 for run in runs if run.pr_number is not None),
        "merged": len(merged),
        "closed": len(closed),
        "merge_rate": (len(merged) / decided) if decided else None,
        "median_lead_time_s": statistics.median(lead_times) if lead_times else None,
        "cost_usd": total,
        "cost_per_run_usd": total / len(runs) if runs else None,
        "cost_per_merge_usd": total / len(merged) if merged else None,
    }


# --- pages --------------------------------------------------------------------------------


async def runs_page(request: Request) -> Response:
    dash: Dashboard = request.state.dashboard
    login = await _signed_in(dash, request)
    if login is None:
        return _sign_in_redirect(request)
    try:
        before = _before(request.query_params.get("before"))
    except ValueError:
        return _message(400, "Not a page of runs",
                        "The link asks for the runs before a time, and what it gives is not "
                        "one. Start again from the latest runs.", login=login,
                        link=(PREFIX, "Latest runs"))
    wanted = request.query_params.get("repo")
    runs, names, unknown, older = await _runs_for(dash, login, wanted, before)
    totals: dict[str, UsageTotal] = {}
    for run in runs:
        totals[run.id] = (await usage_totals(dash.redis, run.id)).overall
    metrics = outcome_metrics(runs, {run_id: t.cost_usd for run_id, t in totals.items()})
    here = {"repo": wanted} if wanted else {}
    return _page("runs", login=login, runs=runs,
                 permission=dash.settings.conductor_dashboard_permission, totals=totals,
                 metrics=metrics, repos=sorted(set(names.values())), names=names,
                 repo=wanted, unknown=unknown,
                 recent=RECENT_RUNS, paged=before is not None,
                 first_page=f"{PREFIX}?{urlencode(here)}" if here else PREFIX,
                 older_page=f"{PREFIX}?{urlencode({**here, 'before': repr(older)})}"
                 if older is not None else None,
                 when=_when, duration=_duration, web_url=dash.web_url)


def _before(value: str | None) -> float | None:
    """The `before` of a page link: a run's creation time, None without one; ValueError for
    anything else."""
    if value is None:
        return None
    moment = float(value)
    if not math.isfinite(moment) or moment <= 0:
        raise ValueError(value)
    return moment


async def _runs_for(dash: Dashboard, login: str, wanted: str | None, before: float | None
                    ) -> tuple[list[Run], dict[str, str], list[str], float | None]:
    """Up to RECENT_RUNS runs created before `before`, newest first, in repositories `login`
    may read (and only `wanted`, by its name now, if given); the readable repositories met on
    the way (by `Run.repo_key`, each with its name now), those GitHub would not say about, and
    the `before` of the next page (None: nothing older)."""
    store = RunStore(dash.redis)
    shown: list[Run] = []
    names: dict[str, str] = {}
    unknown: list[str] = []
    looked, cursor = 0, before
    while True:
        batch, older = await store.page(RECENT_RUNS, before=cursor)
        looked += RECENT_RUNS
        visible, missing = await _visible_repos(dash, batch, login)
        names |= visible
        unknown += [item for item in missing if item not in unknown]
        for run in batch:
            name = visible.get(run.repo_key)
            if name is not None and (not wanted or name.lower() == wanted.lower()):
                shown.append(run)
                if len(shown) == RECENT_RUNS:
                    # The next page starts after the last run shown, not the last one read.
                    return shown, names, unknown, run.created_at
        if older is None:
            return shown, names, unknown, None
        if looked >= SCAN_RUNS:
            return shown, names, unknown, older
        cursor = older


async def run_page(request: Request) -> Response:
    dash: Dashboard = request.state.dashboard
    login = await _signed_in(dash, request)
    if login is None:
        return _sign_in_redirect(request)
    run_id = request.path_params["run_id"]
    # Only the run's record is read before GitHub says whether this person may see it.
    run = await RunStore(dash.redis).get(run_id)
    try:
        current = None if run is None else await _may_view(dash, run, login)
    except AccessUnknown as exc:
        return _message(503, "GitHub could not be asked",
                        f"Whether you may read this run's repository is GitHub's to say, and "
                        f"it could not be asked just now ({exc}). Try again in a minute.",
                        login=login)
    if run is None or current is None:
        return _message(404, "No such run",
                        "There is no run with this id that you can see. Runs are shown to "
                        f"people with {dash.settings.conductor_dashboard_permission} access "
                        "or more to their repository.", login=login,
                        link=(PREFIX, "All runs"))
    trace = await assemble(dash.redis, run)
    return _page("run", login=login, **_run_context(trace, dash.web_url, current))


def _run_context(trace: Trace, web_url: str, current: str) -> dict[str, Any]:
    """What the run page shows; `current` is the repository's name now, which the links use:
    once a repository is renamed, its old name may belong to another one."""
    run = trace.run
    specs = {s.get("id"): s for s in (run.plan or {}).get("steps", [])}
    order = step_order(run, trace.steps)
    started = [r.started_at for r in trace.steps.values() if r.started_at]
    finished = [r.finished_at for r in trace.steps.values() if r.finished_at]
    bars = []
    if started:
        origin = min(started)
        span = max([*finished, *started]) - origin or 1.0
        for step_id in order:
            record = trace.steps[step_id]
            if record.started_at:
                end = record.finished_at or record.started_at
                bars.append({"id": step_id, "left": 100 * (record.started_at - origin) / span,
                             "width": max(0.5, 100 * (end - record.started_at) / span),
                             "state": record.state})
    calls = []
    for number, call in enumerate(trace.calls, 1):
        calls.append({
            "number": number, "call": call, "step": (call.trace or {}).get("step"),
            "request": json.dumps(call.request, indent=2, ensure_ascii=False, default=str),
            "response": (json.dumps(call.response, indent=2, ensure_ascii=False, default=str)
                         if call.response is not None else None),
        })
    return {
        "run": run, "steps": [(i, trace.steps[i], specs.get(i, {})) for i in order],
        "timeline": trace.timeline, "usage": trace.usage, "calls": calls, "bars": bars,
        "repo": current, "repo_url": f"{web_url}/{current}", "when": _when, "clock": clock,
        "duration": _duration,
    }


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --- signing in and out -------------------------------------------------------------------


async def login(request: Request) -> Response:
    dash: Dashboard = request.state.dashboard
    settings = dash.settings
    if not settings.has_oauth_client:
        return _message(
            503, "Signing in is not set up",
            "The dashboard signs people in with GitHub, as the App. Set GITHUB_CLIENT_ID and "
            "GITHUB_CLIENT_SECRET (the App's settings page on GitHub has both) and add "
            f"{public_url(settings, request)}{CALLBACK_PATH} to the App's callback URLs, then "
            "restart Conductor.")
    state = secrets.token_urlsafe(24)
    target = _safe_next(request.query_params.get("next"))
    query = urlencode({"client_id": settings.github_client_id, "state": state,
                       "redirect_uri": public_url(settings, request) + CALLBACK_PATH,
                       "allow_signup": "false"})
    response = RedirectResponse(f"{dash.web_url}/login/oauth/authorize?{query}", 303,
                                headers=HEADERS)
    # The state is bound to this browser by a cookie (with the page to return to), not kept
    # on the server: a sign-in started elsewhere is refused, and an anonymous visitor asking
    # for sign-in pages stores nothing. GitHub's code itself works once.
    pending = state + "." + base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")
    response.set_cookie(STATE_COOKIE, pending, max_age=STATE_SECONDS, path=PREFIX,
                        httponly=True, samesite="lax", secure=_secure(request, settings))
    return response


def _pending_target(cookie: str, state: str) -> str | None:
    """The page to return to, if `state` is the one this browser's sign-in was started with."""
    expected, _, encoded = cookie.partition(".")
    if not state or not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        return None
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        return _safe_next(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        return PREFIX


async def callback(request: Request) -> Response:
    dash: Dashboard = request.state.dashboard
    settings = dash.settings
    again = (f"{PREFIX}/login", "Sign in again")
    state = request.query_params.get("state", "")
    cookie = request.cookies.get(STATE_COOKIE, "")
    if request.query_params.get("error"):
        # The person declined on GitHub (error=access_denied), or GitHub refused the request.
        said = request.query_params.get("error_description") or request.query_params["error"]
        return _message(400, "Not signed in", f"GitHub did not sign you in: {said}.",
                        link=again)
    target = _pending_target(cookie, state)
    if target is None:
        return _message(400, "This sign-in has expired",
                        "The link back from GitHub does not belong to a sign-in started in "
                        "this browser in the last ten minutes, so it was not used.",
                        link=again)
    code = request.query_params.get("code", "")
    try:
        who = await signed_in_login(dash.http, settings, code,
                                    public_url(settings, request) + CALLBACK_PATH)
    except SignInFailed as exc:
        log.warning("dashboard_sign_in_failed", reason=str(exc))
        return _message(502, "Not signed in", f"{exc}.", link=again)
    session = secrets.token_urlsafe(32)
    await dash.redis.set(SESSION_KEY.format(digest=_digest(session)),
                         json.dumps({"login": who, "at": time.time()}), ex=SESSION_SECONDS)
    log.info("dashboard_signed_in", login=who)
    response = RedirectResponse(target, 303, headers=HEADERS)
    response.delete_cookie(STATE_COOKIE, path=PREFIX)
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_SECONDS, path=PREFIX,
                        httponly=True, samesite="lax", secure=_secure(request, settings))
    return response


async def logout(request: Request) -> Response:
    dash: Dashboard = request.state.dashboard
    # A sign-out posted from another site is refused: only this origin's form may send it.
    origin = request.headers.get("origin")
    if origin is not None and origin != public_url(dash.settings, request):
        return _message(403, "Not signed out", "The request did not come from this dashboard.")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await dash.redis.delete(SESSION_KEY.format(digest=_digest(cookie)))
    response = _message(200, "Signed out", "You are signed out of the Conductor dashboard.",
                        link=(PREFIX, "Sign in again"))
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


async def _guarded(request: Request, page: Any) -> Response:
    try:
        response: Response = await page(request)
    except (RedisError, OSError) as exc:
        log.warning("dashboard_unavailable", error=str(exc))
        return _message(503, "Try again shortly",
                        "Conductor's Redis could not be reached; nothing was changed.")
    return response


def _route(path: str, page: Any, methods: list[str] | None = None) -> Route:
    async def endpoint(request: Request) -> Response:
        return await _guarded(request, page)
    return Route(path, endpoint, methods=methods, name=page.__name__)


ROUTES = [
    _route(PREFIX, runs_page),
    _route(PREFIX + "/runs/{run_id}", run_page),
    _route(PREFIX + "/login", login),
    _route(CALLBACK_PATH, callback),
    _route(PREFIX + "/logout", logout, methods=["POST"]),
]
