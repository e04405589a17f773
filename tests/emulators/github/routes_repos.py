"""Repository, branch, commit, contents and collaborator-permission endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authorize, user_role
from .errors import ApiError, not_found, validation_failed
from .gitrepo import EMPTY_TREE
from .httputil import endpoint, json_response, principal_of, repo_of, state_of
from .records import Repo
from .shapes import (
    branch_json,
    commit_json,
    content_item_json,
    repo_json,
    status_check_policy_json,
    user_json,
)

LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


def resolve_ref(request: Request, repo: Repo, ref: str) -> str:
    sha = state_of(request).git(repo).resolve_commit(ref)
    if sha is None:
        raise validation_failed(message=f"No commit found for SHA: {ref}")
    return sha


@endpoint
async def get_repo(request: Request) -> Response:
    state = state_of(request)
    principal = principal_of(request)
    repo = repo_of(request)
    authorize(state, principal, repo, ("metadata", "read"), "read")
    return json_response(
        repo_json(state, repo, principal.login if principal.kind == "user" else None)
    )


@endpoint
async def get_branch(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    branch = request.path_params["branch"]
    git = state.git(repo)
    sha = git.ref_sha(f"refs/heads/{branch}")
    info = git.commit(sha) if sha else None
    if info is None:
        raise ApiError(404, "Branch not found")
    protection = state.find_branch_protection(repo, branch)
    return json_response(branch_json(state, repo, branch, info, protection))


@endpoint
async def get_required_status_checks(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    # Reading branch protection needs `administration: read` (users: the admin role).
    authorize(state, principal_of(request), repo, ("administration", "read"), "admin")
    branch = request.path_params["branch"]
    if state.git(repo).ref_sha(f"refs/heads/{branch}") is None:
        raise ApiError(404, "Branch not found")
    rule = state.find_branch_protection(repo, branch)
    if rule is None:
        raise ApiError(404, "Branch not protected")
    return json_response(status_check_policy_json(state, repo, rule))


@endpoint
async def get_commit(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    git = state.git(repo)
    sha = resolve_ref(request, repo, request.path_params["ref"])
    info = git.commit(sha)
    assert info is not None
    parent = info.parents[0] if info.parents else EMPTY_TREE
    files = git.diff_files(parent, sha)
    return json_response(commit_json(state, repo, info, files))


@endpoint
async def get_contents(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    git = state.git(repo)
    ref = request.query_params.get("ref") or repo.default_branch
    sha = git.resolve_commit(ref)
    if sha is None:
        raise ApiError(404, f"No commit found for the ref {ref}")
    path = request.path_params.get("path", "").strip("/")
    entry = git.entry(sha, path)
    if entry is None:
        raise not_found()
    if entry.type == "tree":
        children = git.tree(f"{sha}:{path}" if path else sha) or []
        for child in children:
            child.path = f"{path}/{child.path}" if path else child.path
        return json_response([content_item_json(state, repo, c, ref) for c in children])
    data = git.blob(entry.sha) if entry.type == "blob" else None
    return json_response(content_item_json(state, repo, entry, ref, data))


@endpoint
async def collaborator_permission(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("metadata", "read"), "read")
    account = state.find_account(request.path_params["username"])
    if account is None or account.type == "Bot":
        raise ApiError(404, f"{request.path_params['username']} is not a user")
    role = user_role(repo, account.login)
    user = user_json(state, account.login)
    assert user is not None
    rank = ("none", "read", "triage", "write", "maintain", "admin").index(role)
    user["permissions"] = {
        "admin": rank >= 5,
        "maintain": rank >= 4,
        "push": rank >= 3,
        "triage": rank >= 2,
        "pull": rank >= 1,
    }
    user["role_name"] = role
    return json_response({"permission": LEGACY_PERMISSION[role], "role_name": role, "user": user})


ROUTES = [
    Route("/repos/{owner}/{repo}", get_repo, methods=["GET"]),
    # Before the branch route: branch names may contain slashes.
    Route(
        "/repos/{owner}/{repo}/branches/{branch:path}/protection/required_status_checks",
        get_required_status_checks,
        methods=["GET"],
    ),
    Route("/repos/{owner}/{repo}/branches/{branch:path}", get_branch, methods=["GET"]),
    Route("/repos/{owner}/{repo}/contents", get_contents, methods=["GET"]),
    Route("/repos/{owner}/{repo}/contents/{path:path}", get_contents, methods=["GET"]),
    Route(
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        collaborator_permission,
        methods=["GET"],
    ),
]

# Registered after the more specific /commits/{ref}/... routes of the checks module.
LATE_ROUTES = [
    Route("/repos/{owner}/{repo}/commits/{ref:path}", get_commit, methods=["GET"]),
]
