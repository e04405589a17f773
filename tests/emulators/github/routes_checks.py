"""Check run, check suite and commit status endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authorize
from .errors import not_found
from .httputil import (
    endpoint,
    int_param,
    json_response,
    paged_json,
    paged_wrapped,
    principal_of,
    read_json,
    repo_of,
    require_str,
    state_of,
)
from .records import CheckRun, CommitStatus, Repo
from .routes_repos import resolve_ref
from .shapes_ci import (
    annotation_json,
    check_run_json,
    check_suite_json,
    combined_status_json,
    status_json,
)


def _read(request: Request, resource: str) -> Repo:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, (resource, "read"), "read")
    return repo


def _run(request: Request, repo: Repo) -> CheckRun:
    run = state_of(request).check_runs.get(int_param(request, "check_run_id"))
    if run is None or run.repo_id != repo.id:
        raise not_found()
    return run


def _filter_runs(request: Request, runs: list[CheckRun]) -> list[CheckRun]:
    params = request.query_params
    if params.get("check_name"):
        runs = [r for r in runs if r.name == params["check_name"]]
    if params.get("status"):
        runs = [r for r in runs if r.status == params["status"]]
    if params.get("app_id"):
        runs = [r for r in runs if str(r.app_id) == params["app_id"]]
    if params.get("filter", "latest") == "latest":
        newest: dict[tuple[int, str], CheckRun] = {}
        for run in sorted(runs, key=lambda r: r.id):
            newest[(run.app_id, run.name)] = run
        runs = list(newest.values())
    return sorted(runs, key=lambda r: r.id, reverse=True)


# -- check runs ----------------------------------------------------------------------------


@endpoint
async def create_check_run(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    run = state.rest_create_check_run(principal_of(request), repo, body)
    return json_response(check_run_json(state, run), 201)


@endpoint
async def get_check_run(request: Request) -> Response:
    repo = _read(request, "checks")
    return json_response(check_run_json(state_of(request), _run(request, repo)))


@endpoint
async def update_check_run(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    run = state.rest_update_check_run(
        principal_of(request), repo, int_param(request, "check_run_id"), body
    )
    return json_response(check_run_json(state, run))


@endpoint
async def list_annotations(request: Request) -> Response:
    repo = _read(request, "checks")
    run = _run(request, repo)
    state = state_of(request)
    return paged_json(request, run.annotations, lambda a: annotation_json(state, run, a))


@endpoint
async def rerequest_check_run(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.rerequest_check_run(principal_of(request), repo, int_param(request, "check_run_id"))
    return json_response({}, 201)


@endpoint
async def runs_for_ref(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "checks")
    sha = resolve_ref(request, repo, request.path_params["ref"])
    runs = _filter_runs(
        request,
        [r for r in state.check_runs.values() if r.repo_id == repo.id and r.head_sha == sha],
    )
    return paged_wrapped(request, runs, "check_runs", lambda r: check_run_json(state, r))


# -- check suites --------------------------------------------------------------------------


@endpoint
async def create_check_suite(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    suite, created = state.rest_create_check_suite(
        principal_of(request), repo, require_str(body, "head_sha", "CheckSuite")
    )
    return json_response(check_suite_json(state, suite), 201 if created else 200)


@endpoint
async def get_check_suite(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "checks")
    suite = state.check_suites.get(int_param(request, "check_suite_id"))
    if suite is None or suite.repo_id != repo.id:
        raise not_found()
    return json_response(check_suite_json(state, suite))


@endpoint
async def runs_for_suite(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "checks")
    suite_id = int_param(request, "check_suite_id")
    suite = state.check_suites.get(suite_id)
    if suite is None or suite.repo_id != repo.id:
        raise not_found()
    runs = _filter_runs(
        request, [r for r in state.check_runs.values() if r.check_suite_id == suite_id]
    )
    return paged_wrapped(request, runs, "check_runs", lambda r: check_run_json(state, r))


@endpoint
async def rerequest_check_suite(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.rerequest_check_suite(principal_of(request), repo, int_param(request, "check_suite_id"))
    return json_response({}, 201)


@endpoint
async def suites_for_ref(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "checks")
    sha = resolve_ref(request, repo, request.path_params["ref"])
    suites = [s for s in state.check_suites.values() if s.repo_id == repo.id and s.head_sha == sha]
    if request.query_params.get("app_id"):
        suites = [s for s in suites if str(s.app_id) == request.query_params["app_id"]]
    if request.query_params.get("check_name"):
        name = request.query_params["check_name"]
        suites = [
            s
            for s in suites
            if any(r.check_suite_id == s.id and r.name == name for r in state.check_runs.values())
        ]
    suites.sort(key=lambda s: s.id)
    return paged_wrapped(request, suites, "check_suites", lambda s: check_suite_json(state, s))


# -- statuses ------------------------------------------------------------------------------


@endpoint
async def create_status(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    status = state.rest_create_status(principal_of(request), repo, request.path_params["sha"], body)
    return json_response(status_json(state, status), 201)


@endpoint
async def list_statuses(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "statuses")
    sha = resolve_ref(request, repo, request.path_params["ref"])
    statuses = sorted(
        (s for s in state.statuses.values() if s.repo_id == repo.id and s.sha == sha),
        key=lambda s: s.id,
        reverse=True,
    )
    return paged_json(request, statuses, lambda s: status_json(state, s))


@endpoint
async def combined_status(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request, "statuses")
    sha = resolve_ref(request, repo, request.path_params["ref"])
    latest: dict[str, CommitStatus] = {}
    for status in sorted(state.statuses.values(), key=lambda s: s.id):
        if status.repo_id == repo.id and status.sha == sha:
            latest[status.context] = status
    statuses = sorted(latest.values(), key=lambda s: s.id)
    return json_response(combined_status_json(state, repo.id, sha, statuses))


P = "/repos/{owner}/{repo}"
ROUTES = [
    Route(f"{P}/check-runs", create_check_run, methods=["POST"]),
    Route(f"{P}/check-runs/{{check_run_id}}", get_check_run, methods=["GET"]),
    Route(f"{P}/check-runs/{{check_run_id}}", update_check_run, methods=["PATCH"]),
    Route(f"{P}/check-runs/{{check_run_id}}/annotations", list_annotations, methods=["GET"]),
    Route(f"{P}/check-runs/{{check_run_id}}/rerequest", rerequest_check_run, methods=["POST"]),
    Route(f"{P}/check-suites", create_check_suite, methods=["POST"]),
    Route(f"{P}/check-suites/{{check_suite_id}}", get_check_suite, methods=["GET"]),
    Route(f"{P}/check-suites/{{check_suite_id}}/check-runs", runs_for_suite, methods=["GET"]),
    Route(
        f"{P}/check-suites/{{check_suite_id}}/rerequest", rerequest_check_suite, methods=["POST"]
    ),
    Route(f"{P}/commits/{{ref:path}}/check-runs", runs_for_ref, methods=["GET"]),
    Route(f"{P}/commits/{{ref:path}}/check-suites", suites_for_ref, methods=["GET"]),
    Route(f"{P}/commits/{{ref:path}}/statuses", list_statuses, methods=["GET"]),
    Route(f"{P}/commits/{{ref:path}}/status", combined_status, methods=["GET"]),
    Route(f"{P}/statuses/{{sha}}", create_status, methods=["POST"]),
    Route(f"{P}/statuses/{{ref:path}}", list_statuses, methods=["GET"]),
]
