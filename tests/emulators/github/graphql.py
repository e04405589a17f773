"""``POST /graphql``: only ``markPullRequestReadyForReview``, with GraphQL-shaped errors.

A small parser reads the operation (variables, aliases, nested selections) so answers carry
exactly the fields asked for; anything else gets the ``errors`` GitHub would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import ApiError
from .httputil import endpoint, json_response, principal_of, read_json, state_of
from .records import PullRequest

TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[_A-Za-z][_0-9A-Za-z]*)'
    r"|(?P<punct>\.\.\.|[{}()\[\]:$!,=@]))"
)


class GraphQLSyntaxError(Exception):
    pass


@dataclass
class Field:
    name: str
    alias: str
    arguments: dict[str, Any] = field(default_factory=dict)
    selections: list[Field] | None = None


@dataclass
class Variable:
    name: str


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        position = 0
        text = re.sub(r"#[^\n]*", "", text)
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = TOKEN.match(text, position)
            if match is None:
                raise GraphQLSyntaxError(f"Parse error on {text[position : position + 10]!r}")
            self.tokens.append(match.group(match.lastgroup or "name"))
            position = match.end()
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise GraphQLSyntaxError(f'Parse error on "{token or "end of input"}"')
        self.index += 1
        return token

    def operation(self) -> tuple[str, list[Field]]:
        kind = "query"
        if self.peek() in ("query", "mutation", "subscription"):
            kind = self.take()
            if self.peek() not in ("{", "("):
                self.take()  # operation name
            if self.peek() == "(":
                depth = 0
                while True:
                    token = self.take()
                    depth += token == "("
                    depth -= token == ")"
                    if depth == 0:
                        break
        selections = self.selection_set()
        if self.peek() is not None:
            raise GraphQLSyntaxError(f'Parse error on "{self.peek()}"')
        return kind, selections

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields = []
        while self.peek() != "}":
            if self.peek() == "...":
                raise GraphQLSyntaxError("Fragments are not supported by this emulator")
            name = self.take()
            alias = name
            if self.peek() == ":":
                self.take(":")
                name = self.take()
            item = Field(name=name, alias=alias)
            if self.peek() == "(":
                item.arguments = self.arguments()
            if self.peek() == "{":
                item.selections = self.selection_set()
            fields.append(item)
            if self.peek() == ",":
                self.take(",")
        self.take("}")
        return fields

    def arguments(self) -> dict[str, Any]:
        self.take("(")
        values: dict[str, Any] = {}
        while self.peek() != ")":
            key = self.take()
            self.take(":")
            values[key] = self.value()
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return values

    def value(self) -> Any:
        token = self.take()
        if token == "$":
            return Variable(self.take())
        if token.startswith('"'):
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        if token == "{":
            obj: dict[str, Any] = {}
            while self.peek() != "}":
                key = self.take()
                self.take(":")
                obj[key] = self.value()
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
            return obj
        if token == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.take(",")
            self.take("]")
            return items
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        return {"true": True, "false": False, "null": None}.get(token, token)


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


class FieldError(Exception):
    def __init__(self, message: str, path: list[str], kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.kind = kind

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "path": self.path,
            "locations": [{"line": 1, "column": 1}],
            "message": self.message,
        }
        if self.kind:
            error["type"] = self.kind
        return error


def pull_fields(
    state: Any, pull: PullRequest, selections: list[Field], path: list[str]
) -> dict[str, Any]:
    repo = state.repos[pull.repo_id]
    issue = state.find_issue(repo, pull.number)
    values = {
        "__typename": "PullRequest",
        "id": pull.node_id,
        "number": pull.number,
        "isDraft": pull.draft,
        "title": issue.title,
        "body": issue.body or "",
        "state": "MERGED" if pull.merged else issue.state.upper(),
        "url": state.api(f"/{repo.full_name}/pull/{pull.number}"),
        "headRefName": pull.head_ref,
        "baseRefName": pull.base_ref,
        "headRefOid": pull.head_sha,
        "merged": pull.merged,
    }
    result = {}
    for item in selections:
        if item.name not in values:
            raise FieldError(
                f"Field '{item.name}' doesn't exist on type 'PullRequest'", [*path, item.alias]
            )
        result[item.alias] = values[item.name]
    return result


def ready_for_review(
    state: Any, principal: Any, item: Field, variables: dict[str, Any]
) -> dict[str, Any] | None:
    arguments = substitute(item.arguments, variables)
    payload = arguments.get("input")
    if not isinstance(payload, dict) or not isinstance(payload.get("pullRequestId"), str):
        raise FieldError(
            "Argument 'input' on Field 'markPullRequestReadyForReview' has an invalid value. "
            "Expected type 'MarkPullRequestReadyForReviewInput!'.",
            [item.alias],
            "argumentLiteralsIncompatible",
        )
    pull = state.pull_by_node_id(principal, payload["pullRequestId"])
    if pull is None:
        raise FieldError(
            f"Could not resolve to a node with the global id of '{payload['pullRequestId']}'",
            [item.alias],
            "NOT_FOUND",
        )
    try:
        state.mark_ready_for_review(principal, state.repos[pull.repo_id], pull.number)
    except ApiError as error:
        raise FieldError(error.message, [item.alias], "FORBIDDEN") from error
    result: dict[str, Any] = {}
    for sub in item.selections or []:
        if sub.name == "pullRequest":
            result[sub.alias] = pull_fields(
                state, pull, sub.selections or [], [item.alias, sub.alias]
            )
        elif sub.name == "clientMutationId":
            result[sub.alias] = payload.get("clientMutationId")
        elif sub.name == "__typename":
            result[sub.alias] = "MarkPullRequestReadyForReviewPayload"
        else:
            raise FieldError(
                f"Field '{sub.name}' doesn't exist on type 'MarkPullRequestReadyForReviewPayload'",
                [item.alias, sub.alias],
            )
    return result


@endpoint
async def graphql(request: Request) -> Response:
    state = state_of(request)
    principal = principal_of(request)
    if principal.kind == "anonymous":
        raise ApiError(
            401,
            "This endpoint requires you to be authenticated.",
            documentation_url="https://docs.github.com/graphql/guides/forming-calls-with-graphql#authenticating-with-graphql",
        )
    body = await read_json(request)
    query = body.get("query")
    variables = body.get("variables") or {}
    if not isinstance(query, str):
        return json_response(
            {"errors": [{"message": "A query attribute must be specified and must be a string."}]}
        )
    try:
        kind, selections = Parser(query).operation()
    except GraphQLSyntaxError as exc:
        return json_response(
            {"errors": [{"message": str(exc), "locations": [{"line": 1, "column": 1}]}]}
        )
    type_name = "Mutation" if kind == "mutation" else "Query"
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for item in selections:
        if item.name == "__typename":
            data[item.alias] = type_name
            continue
        if kind != "mutation" or item.name != "markPullRequestReadyForReview":
            errors.append(
                {
                    "path": [kind, item.alias],
                    "extensions": {
                        "code": "undefinedField",
                        "typeName": type_name,
                        "fieldName": item.name,
                    },
                    "locations": [{"line": 1, "column": 1}],
                    "message": f"Field '{item.name}' doesn't exist on type '{type_name}'",
                }
            )
            continue
        try:
            data[item.alias] = ready_for_review(state, principal, item, variables)
        except FieldError as error:
            data[item.alias] = None
            errors.append(error.body())
    if errors and not data:
        return json_response({"errors": errors})
    response: dict[str, Any] = {"data": data}
    if errors:
        response["errors"] = errors
    return json_response(response)


ROUTES = [Route("/graphql", graphql, methods=["POST"])]
