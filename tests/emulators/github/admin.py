"""The admin API over HTTP (``/_admin/...``, JSON, no authentication): the same operations as
the Python methods of :class:`GitHubState`, for tests and tools in other processes."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .actor import PushRejected
from .errors import ApiError
from .httputil import Handler, int_param, json_response, no_content, read_json, state_of
from .httputil import endpoint as api_endpoint
from .records import Comment, Issue, Label, PullRequest, Reaction
from .shapes import repo_json, status_check_policy_json
from .shapes_ci import job_json, workflow_run_json
from .shapes_issues import comment_json, issue_json, label_json, pull_json, reaction_json

ACTOR_ACTIONS = (
    "open_issue",
    "edit_issue",
    "close_issue",
    "reopen_issue",
    "add_labels",
    "remove_label",
    "comment",
    "edit_comment",
    "delete_comment",
    "react",
    "open_pull",
    "close_pull",
    "reopen_pull",
    "merge_pull",
    "mark_ready",
    "request_reviewers",
    "push",
    "press_check_run_action",
)


def endpoint(handler: Handler) -> Handler:
    """Like the API's, and a missing or mistyped field answers 422 rather than 500."""

    async def checked(request: Request) -> Response:
        try:
            return await handler(request)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(422, f"Invalid admin request: {exc!r}") from exc

    checked.__name__ = handler.__name__
    return api_endpoint(checked)


def render(state: Any, value: Any) -> Any:
    if isinstance(value, Issue):
        return issue_json(state, value)
    if isinstance(value, Comment):
        return comment_json(state, value)
    if isinstance(value, PullRequest):
        return pull_json(state, value)
    if isinstance(value, Reaction):
        return reaction_json(state, value)
    if isinstance(value, list):
        return [label_json(state, v) if isinstance(v, Label) else v for v in value]
    if isinstance(value, str):
        return {"sha": value}
    return {} if value is None else value


def app_settings(state: Any) -> dict[str, Any]:
    app = state.app
    return {
        "id": app.id,
        "slug": app.slug,
        "name": app.name,
        "node_id": app.node_id,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "webhook_secret": app.webhook_secret,
        "bot_login": app.bot_login,
        "callback_urls": list(app.callback_urls),
        "pem": state.private_key(),
        "private_key_path": state.private_key_path(),
    }


@endpoint
async def get_app(request: Request) -> Response:
    return json_response(app_settings(state_of(request)))


@endpoint
async def update_app(request: Request) -> Response:
    """Edit the App's registration; only its callback URLs (the OAuth web flow's redirects)."""
    state = state_of(request)
    body = await read_json(request)
    urls = body["callback_urls"]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise TypeError("callback_urls must be a list of URLs")
    state.set_callback_urls(urls)
    return json_response(app_settings(state))


@endpoint
async def create_repo(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    repo = await run_in_threadpool(
        lambda: state.create_repo(
            body["full_name"],
            source_dir=body.get("source_dir"),
            files=body.get("files"),
            default_branch=body.get("default_branch", "main"),
            private=body.get("private", True),
            description=body.get("description"),
        )
    )
    return json_response(repo_json(state, repo), 201)


@endpoint
async def set_collaborator(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
    state.set_collaborator(full_name, request.path_params["login"], body.get("role", "write"))
    return no_content()


@endpoint
async def protect_branch(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
    contexts = body.get("contexts") or []
    if not isinstance(contexts, list):
        raise TypeError("contexts must be a list")
    rule = state.protect_branch(
        full_name,
        request.path_params["branch"],
        contexts,
        strict=bool(body.get("strict", False)),
    )
    return json_response(status_check_policy_json(state, state.repos[rule.repo_id], rule))


@endpoint
async def unprotect_branch(request: Request) -> Response:
    state = state_of(request)
    full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
    if not state.unprotect_branch(full_name, request.path_params["branch"]):
        raise ApiError(404, "Branch not protected")
    return no_content()


@endpoint
async def commit_files(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
    sha = await run_in_threadpool(
        lambda: state.commit_files(
            full_name,
            body["branch"],
            body["files"],
            body.get("message", "Update files"),
            author=body.get("author"),
            base=body.get("base"),
        )
    )
    return json_response({"sha": sha}, 201)


@endpoint
async def install(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    inst = state.install_app(
        body["account"],
        permissions=body.get("permissions"),
        repositories=body.get("repositories"),
        events=body.get("events"),
        app=body.get("app_id"),
    )
    return json_response(
        {"id": inst.id, "account": inst.account, "permissions": inst.permissions}, 201
    )


@endpoint
async def installation_token(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    token = state.create_installation_token(
        int_param(request, "installation_id"),
        permissions=body.get("permissions"),
        repositories=body.get("repositories"),
    )
    return json_response(state.token_response(token), 201)


@endpoint
async def create_user(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    account = state.create_user(
        body["login"], repos=body.get("repos"), name=body.get("name"), email=body.get("email")
    )
    return json_response({"login": account.login, "id": account.id, "token": account.token}, 201)


@endpoint
async def act(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    action = body.get("action")
    if action not in ACTOR_ACTIONS:
        raise ApiError(422, f"action must be one of {', '.join(ACTOR_ACTIONS)}")
    args = body.get("args") or []
    kwargs = body.get("kwargs") or {}
    actor = state.as_user(request.path_params["login"])
    try:
        # In a worker thread: a push runs git against this very server.
        result = await run_in_threadpool(getattr(actor, action), *args, **kwargs)
    except PushRejected as exc:
        return json_response({"message": "git push failed", "stderr": exc.stderr}, 422)
    return json_response(render(state, result))


@endpoint
async def add_fault(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    kind = body.pop("kind", "status")
    try:
        fault = state.add_fault(kind, **body)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, str(exc)) from exc
    return json_response(dataclasses.asdict(fault), 201)


@endpoint
async def list_faults(request: Request) -> Response:
    return json_response([dataclasses.asdict(f) for f in state_of(request).faults.values()])


@endpoint
async def clear_faults(request: Request) -> Response:
    state_of(request).clear_faults()
    return no_content()


@endpoint
async def remove_fault(request: Request) -> Response:
    state_of(request).remove_fault(int_param(request, "fault_id"))
    return no_content()


@endpoint
async def manifest_code(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    code = state.register_manifest_code(body.get("code"), body.get("manifest"), body.get("owner"))
    return json_response({"code": code}, 201)


@endpoint
async def list_requests(request: Request) -> Response:
    return json_response([dataclasses.asdict(r) for r in state_of(request).requests])


@endpoint
async def clear_requests(request: Request) -> Response:
    state_of(request).requests.clear()
    return no_content()


@endpoint
async def list_events(request: Request) -> Response:
    state = state_of(request)
    since = int(request.query_params.get("since", 0))
    return json_response(
        [
            {"index": since + i, "event": name, "payload": payload}
            for i, (name, payload) in enumerate(state.events[since:])
        ]
    )


@endpoint
async def clock(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    state.advance_clock(float(body.get("advance", 0)))
    return json_response({"now": state.now()})


@endpoint
async def expire_tokens(request: Request) -> Response:
    state_of(request).expire_tokens()
    return no_content()


@endpoint
async def create_workflow_run(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
    run = await run_in_threadpool(
        lambda: state.create_workflow_run(
            full_name,
            head_sha=body["head_sha"],
            workflow_path=body.get("workflow_path", ".github/workflows/ci.yml"),
            head_branch=body.get("head_branch"),
            event=body.get("event", "push"),
            name=body.get("name"),
            jobs=body.get("jobs", ["build"]),
        )
    )
    result = workflow_run_json(state, run)
    result["jobs"] = [job_json(state, j) for j in state.workflow_jobs(run.id)]
    return json_response(result, 201)


@endpoint
async def complete_job(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request)
    job = state.complete_job(
        int_param(request, "job_id"), body.get("conclusion", "success"), log=body.get("log")
    )
    return json_response(job_json(state, job))


@endpoint
async def set_job_log(request: Request) -> Response:
    state = state_of(request)
    state.set_job_log(int_param(request, "job_id"), (await request.body()).decode())
    return no_content()


A = "/_admin"
ROUTES = [
    Route(f"{A}/app", get_app, methods=["GET"]),
    Route(f"{A}/app", update_app, methods=["PATCH"]),
    Route(f"{A}/repos", create_repo, methods=["POST"]),
    Route(
        f"{A}/repos/{{owner}}/{{repo}}/collaborators/{{login}}", set_collaborator, methods=["PUT"]
    ),
    Route(f"{A}/repos/{{owner}}/{{repo}}/commits", commit_files, methods=["POST"]),
    Route(
        f"{A}/repos/{{owner}}/{{repo}}/branches/{{branch:path}}/protection",
        protect_branch,
        methods=["PUT"],
    ),
    Route(
        f"{A}/repos/{{owner}}/{{repo}}/branches/{{branch:path}}/protection",
        unprotect_branch,
        methods=["DELETE"],
    ),
    Route(f"{A}/repos/{{owner}}/{{repo}}/workflow-runs", create_workflow_run, methods=["POST"]),
    Route(f"{A}/jobs/{{job_id}}/complete", complete_job, methods=["POST"]),
    Route(f"{A}/jobs/{{job_id}}/log", set_job_log, methods=["PUT"]),
    Route(f"{A}/installations", install, methods=["POST"]),
    Route(f"{A}/installations/{{installation_id}}/tokens", installation_token, methods=["POST"]),
    Route(f"{A}/users", create_user, methods=["POST"]),
    Route(f"{A}/users/{{login}}/actions", act, methods=["POST"]),
    Route(f"{A}/faults", add_fault, methods=["POST"]),
    Route(f"{A}/faults", list_faults, methods=["GET"]),
    Route(f"{A}/faults", clear_faults, methods=["DELETE"]),
    Route(f"{A}/faults/{{fault_id}}", remove_fault, methods=["DELETE"]),
    Route(f"{A}/manifest-codes", manifest_code, methods=["POST"]),
    Route(f"{A}/requests", list_requests, methods=["GET"]),
    Route(f"{A}/requests", clear_requests, methods=["DELETE"]),
    Route(f"{A}/events", list_events, methods=["GET"]),
    Route(f"{A}/clock", clock, methods=["POST"]),
    Route(f"{A}/tokens/expire", expire_tokens, methods=["POST"]),
]
