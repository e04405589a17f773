"""GitHub Actions endpoints: workflows, workflow runs, jobs, job logs, re-runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .access import authorize
from .errors import not_found
from .httputil import (
    endpoint,
    int_param,
    json_response,
    paged_wrapped,
    principal_of,
    repo_of,
    state_of,
)
from .records import Job, Repo, WorkflowRun
from .shapes_ci import job_json, workflow_run_json


def _read(request: Request) -> Repo:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("actions", "read"), "read")
    return repo


def _run(request: Request, repo: Repo) -> WorkflowRun:
    run = state_of(request).workflow_runs.get(int_param(request, "run_id"))
    if run is None or run.repo_id != repo.id:
        raise not_found()
    return run


def _job(request: Request, repo: Repo) -> Job:
    job = state_of(request).jobs.get(int_param(request, "job_id"))
    if job is None or job.repo_id != repo.id:
        raise not_found()
    return job


@endpoint
async def list_workflows(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request)
    workflows = sorted(
        (w for w in state.workflows.values() if w.repo_id == repo.id), key=lambda w: w.id
    )
    return paged_wrapped(request, workflows, "workflows", state.workflow_json)


@endpoint
async def list_runs(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request)
    params = request.query_params
    runs = [r for r in state.workflow_runs.values() if r.repo_id == repo.id]
    if params.get("head_sha"):
        runs = [r for r in runs if r.head_sha == params["head_sha"]]
    if params.get("branch"):
        runs = [r for r in runs if r.head_branch == params["branch"]]
    if params.get("event"):
        runs = [r for r in runs if r.event == params["event"]]
    if params.get("actor"):
        runs = [r for r in runs if r.actor.lower() == params["actor"].lower()]
    if params.get("status"):
        wanted = params["status"]
        runs = [r for r in runs if wanted in (r.status, r.conclusion)]
    if params.get("check_suite_id"):
        runs = [r for r in runs if str(r.check_suite_id) == params["check_suite_id"]]
    runs.sort(key=lambda r: r.id, reverse=True)
    return paged_wrapped(request, runs, "workflow_runs", lambda r: workflow_run_json(state, r))


@endpoint
async def get_run(request: Request) -> Response:
    repo = _read(request)
    return json_response(workflow_run_json(state_of(request), _run(request, repo)))


@endpoint
async def list_jobs(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request)
    run = _run(request, repo)
    latest = request.query_params.get("filter", "latest") != "all"
    jobs = state.workflow_jobs(run.id, latest=latest)
    attempt = request.path_params.get("attempt")
    if attempt is not None:
        jobs = [
            j for j in state.workflow_jobs(run.id, latest=False) if str(j.run_attempt) == attempt
        ]
    return paged_wrapped(request, jobs, "jobs", lambda j: job_json(state, j))


@endpoint
async def get_job(request: Request) -> Response:
    repo = _read(request)
    return json_response(job_json(state_of(request), _job(request, repo)))


@endpoint
async def job_logs(request: Request) -> Response:
    state = state_of(request)
    repo = _read(request)
    job = _job(request, repo)
    return RedirectResponse(state.job_log_url(job), status_code=302)


async def download_log(request: Request) -> Response:
    """The pre-signed log URL a job-logs redirect points at; no authentication."""
    state = state_of(request)
    try:
        job = state.jobs.get(int(request.path_params["job_id"]))
    except ValueError:
        job = None
    if job is None or request.query_params.get("key") != job.log_key:
        return PlainTextResponse("Not Found", status_code=404)
    return PlainTextResponse(state.job_log(job.id))


@endpoint
async def rerun_failed(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.rerun_workflow(
        principal_of(request), repo, int_param(request, "run_id"), failed_only=True
    )
    return json_response({}, 201)


@endpoint
async def rerun_all(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.rerun_workflow(
        principal_of(request), repo, int_param(request, "run_id"), failed_only=False
    )
    return json_response({}, 201)


P = "/repos/{owner}/{repo}/actions"
ROUTES = [
    Route(f"{P}/workflows", list_workflows, methods=["GET"]),
    Route(f"{P}/runs", list_runs, methods=["GET"]),
    Route(f"{P}/runs/{{run_id}}", get_run, methods=["GET"]),
    Route(f"{P}/runs/{{run_id}}/jobs", list_jobs, methods=["GET"]),
    Route(f"{P}/runs/{{run_id}}/attempts/{{attempt}}/jobs", list_jobs, methods=["GET"]),
    Route(f"{P}/runs/{{run_id}}/rerun-failed-jobs", rerun_failed, methods=["POST"]),
    Route(f"{P}/runs/{{run_id}}/rerun", rerun_all, methods=["POST"]),
    Route(f"{P}/jobs/{{job_id}}", get_job, methods=["GET"]),
    Route(f"{P}/jobs/{{job_id}}/logs", job_logs, methods=["GET"]),
    Route("/_logs/jobs/{job_id}", download_log, methods=["GET"]),
]
