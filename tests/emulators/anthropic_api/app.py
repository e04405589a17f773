"""The ASGI app: `/v1/messages`, `/v1/messages/count_tokens` and the `/_admin/*` control API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from anthropic.types import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .errors import ApiError, invalid
from .ids import new_id
from .models import ModelSpec
from .prompt import PromptUnit, prompt_units
from .recorder import redact_headers
from .responses import build_message, stream_events
from .script import Answer, ScriptRequest, rules_from_data
from .stand_in import AnthropicStandIn
from .validation import check_headers, validate_request

_NO_RETRY = {"x-should-retry": "false"}
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _stand_in(request: Request) -> AnthropicStandIn:
    stand_in: AnthropicStandIn = request.app.state.stand_in
    return stand_in


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid(f"There was an error parsing the body of your request: {exc}") from exc


def _snippet(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _unmatched(request: ScriptRequest) -> ApiError:
    return ApiError(
        "api_error",
        f"anthropic stand-in: no script rule matched this request (call #{request.call}, "
        f"model {request.model}, tools {request.tool_names}, "
        f"system {_snippet(request.system_text)!r}, "
        f"last user text {_snippet(request.last_user_text)!r}). Add a rule that matches it.",
        headers=_NO_RETRY,
    )


def _check_answer_tools(answer: Answer, request: ScriptRequest) -> None:
    offered = request.tool_names
    for tool in answer.tool_uses:
        if tool.name not in offered:
            raise ApiError(
                "api_error",
                f"anthropic stand-in: the script answered with tool_use {tool.name!r} but the "
                f"request offers no tool of that name (offered: {offered})",
                headers=_NO_RETRY,
            )


def _prompt(body: dict[str, Any], spec: ModelSpec) -> list[PromptUnit]:
    units = prompt_units(body)
    total = sum(unit.tokens for unit in units)
    if total > spec.context_window:
        raise invalid(f"prompt is too long: {total} tokens > {spec.context_window} maximum")
    return units


class _Outcome:
    """What one API request turned into, before it is recorded and sent."""

    def __init__(self) -> None:
        self.status = 200
        self.payload: Any = None
        self.headers: dict[str, str] = {}
        self.rule: str | None = None
        self.delay = 0.0
        self.message: Message | None = None
        self.streamed = False

    def fail(self, error: ApiError) -> None:
        self.status, self.payload, self.headers = error.status, error.body(), dict(error.headers)
        self.message, self.streamed = None, False


def _answer_message(
    stand_in: AnthropicStandIn, body: Any, headers: dict[str, str], outcome: _Outcome
) -> None:
    spec = validate_request(body, "messages")
    units = _prompt(body, spec)
    script_request = ScriptRequest(body=body, call=stand_in.next_call(), headers=headers)
    try:
        chosen = stand_in.choose(script_request)
    except Exception as exc:
        raise ApiError(
            "api_error",
            f"anthropic stand-in: a script responder failed: {exc!r}",
            headers=_NO_RETRY,
        ) from exc
    if chosen is None:
        raise _unmatched(script_request)
    outcome.rule, answer = chosen
    outcome.delay = answer.delay
    if answer.fault is not None:
        error = answer.fault
        raise ApiError(
            error.type, error.message, status=error.status, headers=error.response_headers()
        )
    _check_answer_tools(answer, script_request)
    message = build_message(
        model=spec.id,
        answer=answer,
        max_tokens=body["max_tokens"],
        stop_sequences=body.get("stop_sequences") or [],
        accounting=stand_in.cache.account(spec, units),
    )
    outcome.message = message
    outcome.payload = message.model_dump(mode="json")
    outcome.streamed = bool(body.get("stream"))


async def _api(request: Request) -> Response:
    stand_in = _stand_in(request)
    raw_headers = {name.lower(): value for name, value in request.headers.items()}
    headers = redact_headers(raw_headers)
    arrived = stand_in.now()
    raw = await request.body()
    body: Any = raw.decode("utf-8", "replace")
    outcome = _Outcome()
    path = request.url.path
    try:
        if path not in ("/v1/messages", "/v1/messages/count_tokens") or request.method != "POST":
            raise ApiError("not_found_error", f"{request.method} {path} not found")
        check_headers(raw_headers, stand_in.api_key)
        body = _parse_json(raw)
        if path == "/v1/messages":
            _answer_message(stand_in, body, headers, outcome)
        else:
            spec = validate_request(body, "count_tokens")
            outcome.payload = {"input_tokens": sum(unit.tokens for unit in _prompt(body, spec))}
    except ApiError as error:
        outcome.fail(error)
    except Exception as exc:  # a defect in the stand-in itself: say so, and stop SDK retries
        outcome.fail(
            ApiError("api_error", f"anthropic stand-in failed: {exc!r}", headers=_NO_RETRY)
        )

    request_id = new_id("req")
    if outcome.status != 200:
        outcome.payload["request_id"] = request_id
    response_headers = {"request-id": request_id, **outcome.headers}
    stand_in.record(
        method=request.method,
        path=path,
        headers=headers,
        body=body,
        status=outcome.status,
        response=outcome.payload,
        response_headers=response_headers,
        rule=outcome.rule,
        streamed=outcome.streamed,
        delay=outcome.delay,
        at=arrived,
    )
    if outcome.delay:
        await asyncio.sleep(outcome.delay)
    if outcome.streamed and outcome.message is not None:
        events = list(stream_events(outcome.message))

        async def sse() -> AsyncIterator[str]:
            for event in events:
                yield event

        return StreamingResponse(sse(), media_type="text/event-stream", headers=response_headers)
    return JSONResponse(outcome.payload, status_code=outcome.status, headers=response_headers)


# -- admin ---------------------------------------------------------------------------------


async def _admin_script(request: Request) -> Response:
    stand_in = _stand_in(request)
    if request.method == "GET":
        rules = [
            {"name": rule.name, "times": rule.times, "used": rule.used} for rule in stand_in.rules
        ]
        return JSONResponse({"rules": rules})
    try:
        data = json.loads(await request.body())
        if request.query_params.get("append") in ("1", "true"):
            stand_in.add_rules(*rules_from_data(data))
        else:
            stand_in.load_script(data)
    except (ValueError, TypeError, KeyError) as exc:
        return JSONResponse({"error": f"invalid script: {exc}"}, status_code=400)
    return JSONResponse({"rules": len(stand_in.rules)})


async def _admin_requests(request: Request) -> Response:
    exchanges = _stand_in(request).requests
    wanted = request.query_params.get("path")
    if wanted:
        exchanges = [exchange for exchange in exchanges if exchange.path == wanted]
    return JSONResponse({"requests": [exchange.to_json() for exchange in exchanges]})


async def _admin_reset(request: Request) -> Response:
    _stand_in(request).reset()
    return JSONResponse({"ok": True})


async def _admin_advance_time(request: Request) -> Response:
    try:
        seconds = float(json.loads(await request.body())["seconds"])
    except (ValueError, TypeError, KeyError) as exc:
        return JSONResponse({"error": f'expected {{"seconds": <number>}}: {exc}'}, status_code=400)
    _stand_in(request).advance_time(seconds)
    return JSONResponse({"ok": True})


async def _admin_health(request: Request) -> Response:
    return JSONResponse({"ok": True, "calls": _stand_in(request).calls})


def create_app(stand_in: AnthropicStandIn | None = None) -> Starlette:
    """The stand-in as an ASGI app; state lives in `stand_in` (a fresh one if omitted)."""
    app = Starlette(
        routes=[
            Route("/_admin/script", _admin_script, methods=["GET", "POST"]),
            Route("/_admin/requests", _admin_requests, methods=["GET"]),
            Route("/_admin/reset", _admin_reset, methods=["POST"]),
            Route("/_admin/advance_time", _admin_advance_time, methods=["POST"]),
            Route("/_admin/health", _admin_health, methods=["GET"]),
            Route("/v1/{rest:path}", _api, methods=_ALL_METHODS),
        ]
    )
    app.state.stand_in = stand_in if stand_in is not None else AnthropicStandIn()
    return app
