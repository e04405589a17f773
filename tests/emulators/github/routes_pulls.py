"""Pull request endpoints."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authorize
from .errors import ApiError, invalid_field, validation_failed
from .httputil import (
    body_text,
    bool_param,
    endpoint,
    int_param,
    json_response,
    paged_json,
    principal_of,
    read_json,
    repo_of,
    require_str,
    state_of,
)
from .shapes import commit_json, diff_entry_json
from .shapes_issues import pull_json


@endpoint
async def list_pulls(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("pull_requests", "read"), "read")
    params = request.query_params
    wanted = params.get("state", "open")
    pulls = []
    for pull in state.pulls.values():
        if pull.repo_id != repo.id:
            continue
        issue = state.find_issue(repo, pull.number)
        assert issue is not None
        if wanted != "all" and issue.state != wanted:
            continue
        if params.get("head"):
            owner, _, ref = params["head"].rpartition(":")
            if ref != pull.head_ref or (owner and owner.lower() != repo.owner.lower()):
                continue
        if params.get("base") and params["base"] != pull.base_ref:
            continue
        pulls.append(pull)
    pulls.sort(key=lambda p: p.number, reverse=params.get("direction", "desc") != "asc")
    return paged_json(request, pulls, lambda p: pull_json(state, p, simple=True))


@endpoint
async def create_pull(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    if body.get("issue") is not None:
        raise validation_failed(invalid_field("PullRequest", "issue"))
    pull = state.open_pull(
        principal_of(request),
        repo,
        title=require_str(body, "title", "PullRequest"),
        head=require_str(body, "head", "PullRequest"),
        base=require_str(body, "base", "PullRequest"),
        body=body_text(body, "PullRequest"),
        draft=bool_param(body.get("draft")),
        maintainer_can_modify=bool_param(body.get("maintainer_can_modify")),
    )
    return json_response(pull_json(state, pull), 201)


@endpoint
async def get_pull(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("pull_requests", "read"), "read")
    pull = state.get_pull(repo, int_param(request, "number"))
    return json_response(pull_json(state, pull))


@endpoint
async def update_pull(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    pull = state.update_pull(
        principal_of(request),
        repo,
        int_param(request, "number"),
        title=body.get("title"),
        body=body_text(body, "PullRequest"),
        state=body.get("state"),
        base=body.get("base"),
    )
    return json_response(pull_json(state, pull))


def _pull_range(request: Request) -> tuple[Any, Any, Any, str, Any]:
    """For reads of a PR's changes: the state, repo, its git, the merge base and the PR."""
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("pull_requests", "read"), "read")
    pull = state.get_pull(repo, int_param(request, "number"))
    git = state.git(repo)
    return state, repo, git, git.merge_base(pull.base_sha, pull.head_sha) or pull.base_sha, pull


@endpoint
async def list_files(request: Request) -> Response:
    state, repo, git, base, pull = _pull_range(request)
    files = git.diff_files(base, pull.head_sha)
    return paged_json(request, files, lambda f: diff_entry_json(state, repo, pull.head_sha, f))


# GitHub lists at most this many commits of a pull request (then: the List commits API).
PULL_COMMITS_LIMIT = 250


@endpoint
async def list_commits(request: Request) -> Response:
    state, repo, git, base, pull = _pull_range(request)
    shas = git.rev_list("--reverse", f"{base}..{pull.head_sha}")[:PULL_COMMITS_LIMIT]

    def render(sha: str) -> dict[str, Any]:  # only the commits of the requested page
        info = git.commit(sha)
        assert info is not None
        return commit_json(state, repo, info)

    return paged_json(request, shas, render)


@endpoint
async def request_reviewers(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    reviewers = body.get("reviewers") or []
    if not isinstance(reviewers, list) or not (reviewers or body.get("team_reviewers")):
        raise validation_failed(invalid_field("PullRequest", "reviewers", "missing_field"))
    pull = state.request_reviewers(
        principal_of(request), repo, int_param(request, "number"), [str(r) for r in reviewers]
    )
    return json_response(pull_json(state, pull, simple=True), 201)


@endpoint
async def list_requested_reviewers(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("pull_requests", "read"), "read")
    body = pull_json(state, state.get_pull(repo, int_param(request, "number")), simple=True)
    return json_response({"users": body["requested_reviewers"], "teams": []})


@endpoint
async def merge_pull(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    sha = state.merge_pull(
        principal_of(request),
        repo,
        int_param(request, "number"),
        merge_method=body.get("merge_method") or "merge",
        commit_title=body.get("commit_title"),
        commit_message=body.get("commit_message"),
        sha=body.get("sha"),
    )
    return json_response(
        {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
    )


@endpoint
async def check_merged(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("pull_requests", "read"), "read")
    pull = state.get_pull(repo, int_param(request, "number"))
    if not pull.merged:
        raise ApiError(404, "Not Found")
    return Response(status_code=204)


P = "/repos/{owner}/{repo}/pulls"
ROUTES = [
    Route(P, list_pulls, methods=["GET"]),
    Route(P, create_pull, methods=["POST"]),
    Route(f"{P}/{{number}}", get_pull, methods=["GET"]),
    Route(f"{P}/{{number}}", update_pull, methods=["PATCH"]),
    Route(f"{P}/{{number}}/files", list_files, methods=["GET"]),
    Route(f"{P}/{{number}}/commits", list_commits, methods=["GET"]),
    Route(f"{P}/{{number}}/requested_reviewers", request_reviewers, methods=["POST"]),
    Route(f"{P}/{{number}}/requested_reviewers", list_requested_reviewers, methods=["GET"]),
    Route(f"{P}/{{number}}/merge", merge_pull, methods=["PUT"]),
    Route(f"{P}/{{number}}/merge", check_merged, methods=["GET"]),
]
