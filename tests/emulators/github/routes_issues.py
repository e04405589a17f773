"""Issue, issue comment, label and reaction endpoints."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authorize
from .errors import invalid_field, not_found, validation_failed
from .httputil import (
    body_text,
    endpoint,
    int_param,
    json_response,
    no_content,
    paged_json,
    principal_of,
    read_any_json,
    read_json,
    repo_of,
    require_str,
    state_of,
)
from .records import Issue
from .shapes_issues import comment_json, issue_json, label_json, reaction_json


def _label_names(body: Any) -> list[str]:
    """``{"labels": [...]}``, a bare list, or label objects with ``name``."""
    raw = body.get("labels", []) if isinstance(body, dict) else body
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise validation_failed(invalid_field("Label", "labels"))
    names = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name:
            raise validation_failed(invalid_field("Label", "name", "missing_field"))
        names.append(name)
    return names


def _read_issue(request: Request) -> tuple[Any, Issue]:
    state = state_of(request)
    repo = repo_of(request)
    issue = state.get_issue(repo, int_param(request, "number"))
    permission = (
        "pull_requests"
        if issue.is_pull and principal_of(request).permissions.get("pull_requests")
        else "issues"
    )
    authorize(state, principal_of(request), repo, (permission, "read"), "read")
    return repo, issue


# -- issues --------------------------------------------------------------------------------


@endpoint
async def list_issues(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    params = request.query_params
    wanted_state = params.get("state", "open")
    labels = [name.strip().lower() for name in params.get("labels", "").split(",") if name.strip()]
    issues = [i for i in state.issues.values() if i.repo_id == repo.id]
    if wanted_state != "all":
        issues = [i for i in issues if i.state == wanted_state]
    if labels:
        issues = [i for i in issues if set(labels) <= {n.lower() for n in i.labels}]
    if params.get("creator"):
        issues = [i for i in issues if i.user.lower() == params["creator"].lower()]
    if params.get("assignee") not in (None, "*"):
        issues = [i for i in issues if params["assignee"] in i.assignees]
    sort = params.get("sort", "created")
    key = {"updated": lambda i: (i.updated_at, i.id)}.get(sort, lambda i: (i.created_at, i.id))
    issues.sort(key=key, reverse=params.get("direction", "desc") != "asc")
    return paged_json(request, issues, lambda i: issue_json(state, i))


@endpoint
async def create_issue(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    issue = state.open_issue(
        principal_of(request),
        repo,
        require_str(body, "title", "Issue"),
        body_text(body, "Issue"),
        _label_names(body) if body.get("labels") else None,
        body.get("assignees"),
    )
    return json_response(issue_json(state, issue), 201)


@endpoint
async def get_issue(request: Request) -> Response:
    _, issue = _read_issue(request)
    return json_response(issue_json(state_of(request), issue))


@endpoint
async def update_issue(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    issue = state.update_issue(
        principal_of(request),
        repo,
        int_param(request, "number"),
        title=body.get("title"),
        body=body_text(body, "Issue"),
        state=body.get("state"),
        state_reason=body.get("state_reason"),
        labels=_label_names(body) if "labels" in body else None,
        assignees=body.get("assignees"),
    )
    return json_response(issue_json(state, issue))


# -- labels --------------------------------------------------------------------------------


@endpoint
async def list_issue_labels(request: Request) -> Response:
    state = state_of(request)
    _, issue = _read_issue(request)
    return paged_json(request, state.issue_label_records(issue), lambda lb: label_json(state, lb))


@endpoint
async def add_labels(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    raw = await read_any_json(request)
    labels = state.add_labels(
        principal_of(request), repo, int_param(request, "number"), _label_names(raw)
    )
    return json_response([label_json(state, lb) for lb in labels])


@endpoint
async def set_labels(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    raw = await read_any_json(request)
    labels = state.set_labels(
        principal_of(request), repo, int_param(request, "number"), _label_names(raw)
    )
    return json_response([label_json(state, lb) for lb in labels])


@endpoint
async def remove_label(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    labels = state.remove_label(
        principal_of(request), repo, int_param(request, "number"), request.path_params["name"]
    )
    return json_response([label_json(state, lb) for lb in labels])


@endpoint
async def list_repo_labels(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    labels = sorted(
        (lb for lb in state.labels.values() if lb.repo_id == repo.id),
        key=lambda lb: lb.name.lower(),
    )
    return paged_json(request, labels, lambda lb: label_json(state, lb))


@endpoint
async def get_label(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    label = state.find_label(repo, request.path_params["name"])
    if label is None:
        raise not_found()
    return json_response(label_json(state, label))


@endpoint
async def create_label(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    label = state.create_label(
        principal_of(request),
        repo,
        require_str(body, "name", "Label"),
        str(body.get("color") or "ededed"),
        body.get("description"),
    )
    return json_response(label_json(state, label), 201)


# -- comments ------------------------------------------------------------------------------


@endpoint
async def list_comments(request: Request) -> Response:
    state = state_of(request)
    repo, issue = _read_issue(request)
    comments = sorted(
        (
            c
            for c in state.comments.values()
            if c.repo_id == repo.id and c.issue_number == issue.number
        ),
        key=lambda c: c.id,
    )
    return paged_json(request, comments, lambda c: comment_json(state, c))


@endpoint
async def list_repo_comments(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    comments = sorted(
        (c for c in state.comments.values() if c.repo_id == repo.id),
        key=lambda c: c.id,
        reverse=request.query_params.get("direction") == "desc",
    )
    return paged_json(request, comments, lambda c: comment_json(state, c))


@endpoint
async def create_comment(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    comment = state.add_comment(
        principal_of(request),
        repo,
        int_param(request, "number"),
        body_text(body, "IssueComment", required=True),
    )
    return json_response(comment_json(state, comment), 201)


@endpoint
async def get_comment(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    comment = state.get_comment(repo, int_param(request, "comment_id"))
    return json_response(comment_json(state, comment))


@endpoint
async def update_comment(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    comment = state.edit_comment(
        principal_of(request),
        repo,
        int_param(request, "comment_id"),
        body_text(body, "IssueComment", required=True),
    )
    return json_response(comment_json(state, comment))


@endpoint
async def delete_comment(request: Request) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    state.delete_comment(principal_of(request), repo, int_param(request, "comment_id"))
    return no_content()


# -- reactions -----------------------------------------------------------------------------


async def _create_reaction(request: Request, subject: str, key: str) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    body = await read_json(request)
    reaction, created = state.add_reaction(
        principal_of(request),
        repo,
        subject,
        int_param(request, key),
        require_str(body, "content", "Reaction"),
    )
    return json_response(reaction_json(state, reaction), 201 if created else 200)


async def _list_reactions(request: Request, subject: str, key: str) -> Response:
    state = state_of(request)
    repo = repo_of(request)
    authorize(state, principal_of(request), repo, ("issues", "read"), "read")
    number = int_param(request, key)
    if subject == "issue":
        target = state.get_issue(repo, number).id
    else:
        target = state.get_comment(repo, number).id
    reactions = state.reactions_for(subject, target)
    if request.query_params.get("content"):
        reactions = [r for r in reactions if r.content == request.query_params["content"]]
    return paged_json(request, reactions, lambda r: reaction_json(state, r))


@endpoint
async def create_issue_reaction(request: Request) -> Response:
    return await _create_reaction(request, "issue", "number")


@endpoint
async def list_issue_reactions(request: Request) -> Response:
    return await _list_reactions(request, "issue", "number")


@endpoint
async def create_comment_reaction(request: Request) -> Response:
    return await _create_reaction(request, "comment", "comment_id")


@endpoint
async def list_comment_reactions(request: Request) -> Response:
    return await _list_reactions(request, "comment", "comment_id")


P = "/repos/{owner}/{repo}"
ROUTES = [
    Route(f"{P}/issues", list_issues, methods=["GET"]),
    Route(f"{P}/issues", create_issue, methods=["POST"]),
    Route(f"{P}/issues/comments", list_repo_comments, methods=["GET"]),
    Route(f"{P}/issues/comments/{{comment_id}}", get_comment, methods=["GET"]),
    Route(f"{P}/issues/comments/{{comment_id}}", update_comment, methods=["PATCH"]),
    Route(f"{P}/issues/comments/{{comment_id}}", delete_comment, methods=["DELETE"]),
    Route(f"{P}/issues/comments/{{comment_id}}/reactions", list_comment_reactions, methods=["GET"]),
    Route(
        f"{P}/issues/comments/{{comment_id}}/reactions", create_comment_reaction, methods=["POST"]
    ),
    Route(f"{P}/issues/{{number}}", get_issue, methods=["GET"]),
    Route(f"{P}/issues/{{number}}", update_issue, methods=["PATCH"]),
    Route(f"{P}/issues/{{number}}/comments", list_comments, methods=["GET"]),
    Route(f"{P}/issues/{{number}}/comments", create_comment, methods=["POST"]),
    Route(f"{P}/issues/{{number}}/labels", list_issue_labels, methods=["GET"]),
    Route(f"{P}/issues/{{number}}/labels", add_labels, methods=["POST"]),
    Route(f"{P}/issues/{{number}}/labels", set_labels, methods=["PUT"]),
    Route(f"{P}/issues/{{number}}/labels/{{name:path}}", remove_label, methods=["DELETE"]),
    Route(f"{P}/issues/{{number}}/reactions", list_issue_reactions, methods=["GET"]),
    Route(f"{P}/issues/{{number}}/reactions", create_issue_reaction, methods=["POST"]),
    Route(f"{P}/labels", list_repo_labels, methods=["GET"]),
    Route(f"{P}/labels", create_label, methods=["POST"]),
    Route(f"{P}/labels/{{name:path}}", get_label, methods=["GET"]),
]
