"""Git database endpoints: refs, commits, trees, blobs — read from the bare repository."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authorize
from .errors import ApiError, invalid_field, not_found, validation_failed
from .gitrepo import SHA_RE
from .httputil import (
    bool_param,
    endpoint,
    json_response,
    no_content,
    principal_of,
    read_json,
    repo_of,
    require_str,
    state_of,
)
from .shapes import blob_json, git_commit_json, ref_json, tree_json


def _full_ref(partial: str) -> str:
    return partial if partial.startswith("refs/") else f"refs/{partial}"


@endpoint
async def get_ref(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    ref = _full_ref(request.path_params["ref"])
    git = state.git(repo)
    sha = git.ref_sha(ref)
    if sha is None:
        raise not_found()
    return json_response(ref_json(state, repo, ref, sha, git.object_type(sha) or "commit"))


@endpoint
async def matching_refs(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    prefix = _full_ref(request.path_params.get("ref", ""))
    git = state.git(repo)
    return json_response(
        [
            ref_json(state, repo, ref, sha, git.object_type(sha) or "commit")
            for ref, sha in sorted(git.refs("refs/").items())
            if ref.startswith(prefix)
        ]
    )


@endpoint
async def create_ref(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    ref = require_str(body, "ref", "Reference")
    sha = require_str(body, "sha", "Reference")
    kind = state.create_git_ref(principal_of(request), repo, ref, sha)
    return json_response(ref_json(state, repo, ref, sha, kind), 201)


@endpoint
async def update_ref(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    sha = require_str(body, "sha", "Reference")
    ref = _full_ref(request.path_params["ref"])
    kind = state.update_git_ref(
        principal_of(request), repo, ref, sha, force=bool_param(body.get("force"))
    )
    return json_response(ref_json(state, repo, ref, sha, kind))


@endpoint
async def delete_ref(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.delete_git_ref(principal_of(request), repo, _full_ref(request.path_params["ref"]))
    return no_content()


@endpoint
async def get_git_commit(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    sha = request.path_params["sha"]
    info = state.git(repo).commit(sha) if SHA_RE.match(sha) else None
    if info is None:
        raise not_found()
    return json_response(git_commit_json(state, repo, info))


@endpoint
async def get_tree(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    git = state.git(repo)
    name = request.path_params["sha"]
    tree_sha = git.rev_parse(f"{name}^{{tree}}")
    if tree_sha is None:
        raise not_found()
    recursive = request.query_params.get("recursive") not in (None, "", "0", "false")
    entries = git.tree(tree_sha, recursive=recursive) or []
    return json_response(tree_json(state, repo, tree_sha, entries))


@endpoint
async def get_blob(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "read"), "read")
    sha = request.path_params["sha"]
    data = state.git(repo).blob(sha) if SHA_RE.match(sha) else None
    if data is None:
        raise not_found()
    return json_response(blob_json(state, repo, sha, data))


@endpoint
async def create_blob(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("contents", "write"), "write")
    body = await read_json(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise validation_failed(invalid_field("Blob", "content", "missing_field"))
    if body.get("encoding", "utf-8") == "base64":
        try:
            data = base64.b64decode(content)
        except binascii.Error as exc:
            raise ApiError(422, "Invalid base64") from exc
    else:
        data = content.encode()
    sha = state.git(repo).out("hash-object", "-w", "--stdin", input=data)
    return json_response(
        {"sha": sha, "url": state.api(f"/repos/{repo.full_name}/git/blobs/{sha}")}, 201
    )


ROUTES = [
    Route("/repos/{owner}/{repo}/git/ref/{ref:path}", get_ref, methods=["GET"]),
    Route("/repos/{owner}/{repo}/git/matching-refs/{ref:path}", matching_refs, methods=["GET"]),
    Route("/repos/{owner}/{repo}/git/refs", create_ref, methods=["POST"]),
    Route("/repos/{owner}/{repo}/git/refs/{ref:path}", update_ref, methods=["PATCH"]),
    Route("/repos/{owner}/{repo}/git/refs/{ref:path}", delete_ref, methods=["DELETE"]),
    Route("/repos/{owner}/{repo}/git/commits/{sha}", get_git_commit, methods=["GET"]),
    Route("/repos/{owner}/{repo}/git/trees/{sha:path}", get_tree, methods=["GET"]),
    Route("/repos/{owner}/{repo}/git/blobs", create_blob, methods=["POST"]),
    Route("/repos/{owner}/{repo}/git/blobs/{sha}", get_blob, methods=["GET"]),
]
