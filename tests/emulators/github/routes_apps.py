"""App endpoints (JWT), installation tokens, installation repositories, manifests, rate limit."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import Principal, can_see, installation_repo_ids
from .auth import jwt_error
from .errors import ApiError, not_found, validation_failed
from .httputil import (
    endpoint,
    json_response,
    no_content,
    paged_json,
    paginate,
    principal_of,
    read_json,
    state_of,
)
from .ratelimit import caller_key, limit_for
from .shapes import app_json, installation_json, repo_json


def require_app(request: Request) -> Principal:
    principal = principal_of(request)
    if principal.kind != "app":
        raise jwt_error("A JSON web token could not be decoded")
    return principal


@endpoint
async def get_app(request: Request) -> Response:
    principal = require_app(request)
    state = state_of(request)
    assert principal.app_id is not None
    return json_response(app_json(state, state.apps[principal.app_id]))


@endpoint
async def list_installations(request: Request) -> Response:
    principal = require_app(request)
    state = state_of(request)
    found = sorted(
        (i for i in state.installations.values() if i.app_id == principal.app_id),
        key=lambda i: i.id,
    )
    return paged_json(request, found, lambda i: installation_json(state, i))


def _own_installation(request: Request, principal: Principal) -> Any:
    state = state_of(request)
    try:
        inst = state.installations.get(int(request.path_params["installation_id"]))
    except ValueError:
        inst = None
    if inst is None or inst.app_id != principal.app_id:
        raise not_found()
    return inst


@endpoint
async def get_installation(request: Request) -> Response:
    principal = require_app(request)
    return json_response(
        installation_json(state_of(request), _own_installation(request, principal))
    )


@endpoint
async def repo_installation(request: Request) -> Response:
    principal = require_app(request)
    state = state_of(request)
    repo = state.find_repo(request.path_params["owner"], request.path_params["repo"])
    if repo is not None:
        for inst in state.installations.values():
            if inst.app_id == principal.app_id and repo.id in installation_repo_ids(state, inst.id):
                return json_response(installation_json(state, inst))
    raise not_found()


@endpoint
async def create_access_token(request: Request) -> Response:
    principal = require_app(request)
    state = state_of(request)
    inst = _own_installation(request, principal)
    body = await read_json(request)
    permissions = body.get("permissions")
    if permissions is not None and not isinstance(permissions, dict):
        raise validation_failed(message="Invalid request.")
    token = state.create_installation_token(
        inst.id,
        permissions=permissions,
        repositories=body.get("repositories"),
        repository_ids=body.get("repository_ids"),
    )
    return json_response(state.token_response(token), 201)


@endpoint
async def installation_repositories(request: Request) -> Response:
    principal = principal_of(request)
    state = state_of(request)
    if principal.kind != "installation":
        raise ApiError(
            403,
            "You must authenticate with an installation access token in order "
            "to list repositories for an installation.",
        )
    assert principal.installation_id is not None
    inst = state.installations[principal.installation_id]
    repos = sorted(
        (r for r in state.repos.values() if can_see(state, principal, r)), key=lambda r: r.id
    )
    chunk, headers = paginate(request, repos)
    return json_response(
        {
            "total_count": len(repos),
            "repository_selection": "selected"
            if principal.repository_ids
            else (inst.repository_selection),
            "repositories": [repo_json(state, r) for r in chunk],
        },
        headers=headers,
    )


@endpoint
async def revoke_token(request: Request) -> Response:
    principal = principal_of(request)
    if principal.kind != "installation" or principal.token is None:
        raise ApiError(401, "Bad credentials")
    state = state_of(request)
    with state.transaction():
        state.tokens.pop(principal.token, None)
    return no_content()


@endpoint
async def manifest_conversion(request: Request) -> Response:
    state = state_of(request)
    return json_response(state.convert_manifest(request.path_params["code"]), 201)


@endpoint
async def rate_limit(request: Request) -> Response:
    state = state_of(request)
    principal_of(request)  # a bad token is still a 401
    client = request.client.host if request.client else "local"
    key, authenticated = caller_key(request.headers.get("authorization"), client)
    limit = limit_for(state, authenticated)
    now = state.now()

    def resource(name: str, size: int) -> dict[str, int]:
        window = state.rate_limiter.peek(key, name, now)
        used = min(window.used, size)
        return {"limit": size, "used": used, "remaining": size - used, "reset": int(window.reset)}

    resources = {
        "core": resource("core", limit),
        "graphql": resource("graphql", limit),
        "search": resource("search", 30),
        "code_search": resource("code_search", 10),
        "integration_manifest": resource("integration_manifest", 5000),
    }
    return json_response({"resources": resources, "rate": resources["core"]})


ROUTES = [
    Route("/app", get_app, methods=["GET"]),
    Route("/app/installations", list_installations, methods=["GET"]),
    Route("/app/installations/{installation_id}", get_installation, methods=["GET"]),
    Route(
        "/app/installations/{installation_id}/access_tokens", create_access_token, methods=["POST"]
    ),
    Route("/repos/{owner}/{repo}/installation", repo_installation, methods=["GET"]),
    Route("/installation/repositories", installation_repositories, methods=["GET"]),
    Route("/installation/token", revoke_token, methods=["DELETE"]),
    Route("/app-manifests/{code}/conversions", manifest_conversion, methods=["POST"]),
    Route("/rate_limit", rate_limit, methods=["GET"]),
]
