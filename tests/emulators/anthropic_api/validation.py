"""Request checks the real Messages API makes, with its error types and message wording.

Structural problems are 400 `invalid_request_error`; an unknown model is 404 `not_found_error`;
a missing or wrong key is 401 `authentication_error`. Allowed top-level fields come from the
installed SDK's own request types, so the stand-in accepts exactly what the SDK can send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from anthropic.types import ToolParam
from anthropic.types.message_count_tokens_params import MessageCountTokensParams
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from .errors import ApiError, invalid
from .models import ModelSpec, find_model
from .prompt import merge_turns
from .schema import check_input_schema

Endpoint = Literal["messages", "count_tokens"]

# Sent by the SDK as headers (anthropic-user-profile-id, anthropic-workspace-id), never in the body.
_HEADER_PARAMS = frozenset({"user_profile_id", "workspace_id"})
MESSAGES_FIELDS = frozenset(MessageCreateParamsNonStreaming.__annotations__) - _HEADER_PARAMS
COUNT_TOKENS_FIELDS = frozenset(MessageCountTokensParams.__annotations__) - _HEADER_PARAMS
CUSTOM_TOOL_FIELDS = frozenset(ToolParam.__annotations__)

MAX_CACHE_BREAKPOINTS = 4
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "container_upload",
    }
)
_TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})


# -- headers -------------------------------------------------------------------------------


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The credential a client sent: `x-api-key`, or an `Authorization: Bearer` token."""
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_headers(headers: Mapping[str, str], api_key: str | None) -> None:
    """Authentication first (401), then the version header (400)."""
    key = presented_key(headers)
    if key is None:
        raise ApiError("authentication_error", "x-api-key header is required")
    if api_key is not None and key != api_key:
        raise ApiError("authentication_error", "invalid x-api-key")
    version = headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if not _VERSION.match(version):
        raise invalid(f"anthropic-version: {version!r} is not a valid version")


# -- small type checks ---------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_dict(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    return value


def _require_list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(f"{path}: Input should be a valid list")
    return value


def _require_str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(f"{path}: Input should be a valid string")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _no_extra(path: str, value: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for key in sorted(set(value) - allowed):
        raise invalid(f"{_join(path, key)}: Extra inputs are not permitted")


# -- cache_control -------------------------------------------------------------------------


def _cache_control(path: str, block: Mapping[str, Any], found: list[tuple[str, str]]) -> None:
    """Validate a block's `cache_control` (if any) and append (path, ttl) to `found`."""
    if "cache_control" not in block or block["cache_control"] is None:
        return
    where = _join(path, "cache_control")
    marker = _require_dict(where, block["cache_control"])
    _no_extra(where, marker, frozenset({"type", "ttl"}))
    if marker.get("type") != "ephemeral":
        raise invalid(f"{where}.type: Input should be 'ephemeral'")
    ttl = marker.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise invalid(f"{where}.ttl: Input should be '5m' or '1h'")
    if block.get("type") == "text" and block.get("text") == "":
        raise invalid(f"{path}: cache_control cannot be set for empty text blocks")
    found.append((path, str(ttl)))


def _check_breakpoints(found: list[tuple[str, str]]) -> None:
    if len(found) > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(found)}."
        )
    seen_short = False
    for _path, ttl in found:
        if ttl == "5m":
            seen_short = True
        elif seen_short:
            raise invalid(
                "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control "
                "block. Note that blocks are processed in the following order: `tools`, "
                "`system`, `messages`."
            )


# -- tools and tool_choice -----------------------------------------------------------------


def _check_tools(raw: Any, found: list[tuple[str, str]]) -> list[str]:
    names: list[str] = []
    for index, item in enumerate(_require_list("tools", raw)):
        path = f"tools.{index}"
        tool = _require_dict(path, item)
        kind = tool.get("type")
        if "name" not in tool:
            raise invalid(f"{path}.name: Field required")
        name = _require_str(f"{path}.name", tool["name"])
        if kind in (None, "custom"):
            path = f"{path}.custom"
            _no_extra(path, tool, CUSTOM_TOOL_FIELDS)
            if not _TOOL_NAME.match(name):
                raise invalid(
                    f"{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            if "description" in tool:
                _require_str(f"{path}.description", tool["description"])
            if "input_schema" not in tool:
                raise invalid(f"{path}.input_schema: Field required")
            check_input_schema(f"{path}.input_schema", tool["input_schema"])
        else:
            _require_str(f"{path}.type", kind)
        _cache_control(f"tools.{index}", tool, found)
        names.append(name)
    if len(set(names)) != len(names):
        raise invalid("tools: Tool names must be unique.")
    return names


def _check_tool_choice(raw: Any, tool_names: list[str] | None) -> None:
    choice = _require_dict("tool_choice", raw)
    kind = choice.get("type")
    if kind not in _TOOL_CHOICE_TYPES:
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "none":
        return
    if not tool_names:
        raise invalid("tool_choice may only be specified while providing tools.")
    if kind == "tool":
        name = _require_str("tool_choice.name", choice.get("name"))
        if name not in tool_names:
            raise invalid(f"tool_choice.name: Tool '{name}' not found in tools.")


# -- system and messages -------------------------------------------------------------------


def _check_system(raw: Any, found: list[tuple[str, str]]) -> None:
    if isinstance(raw, str):
        return
    for index, item in enumerate(_require_list("system", raw)):
        block = _require_dict(f"system.{index}", item)
        if block.get("type") != "text":
            raise invalid(f"system.{index}.type: Input should be 'text'")
        _require_str(f"system.{index}.text", block.get("text"))
        _cache_control(f"system.{index}", block, found)


def _check_block(path: str, role: str, raw: Any) -> dict[str, Any]:
    block = _require_dict(path, raw)
    kind = block.get("type")
    if kind not in _BLOCK_TYPES:
        expected = ", ".join(f"'{name}'" for name in sorted(_BLOCK_TYPES))
        raise invalid(
            f"{path}: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {expected}"
        )
    if kind == "text":
        _require_str(f"{path}.text", block.get("text"))
    elif kind == "tool_use":
        if role != "assistant":
            raise invalid(f"{path}: tool_use blocks can only appear in assistant messages")
        _require_str(f"{path}.id", block.get("id"))
        _require_str(f"{path}.name", block.get("name"))
        _require_dict(f"{path}.input", block.get("input"))
    elif kind == "tool_result":
        if role != "user":
            raise invalid(f"{path}: tool_result blocks can only appear in user messages")
        _require_str(f"{path}.tool_use_id", block.get("tool_use_id"))
        content = block.get("content", "")
        if not isinstance(content, str):
            for position, inner in enumerate(_require_list(f"{path}.content", content)):
                _require_dict(f"{path}.content.{position}", inner)
    return block


def _is_empty(content: Any) -> bool:
    if isinstance(content, str):
        return content == ""
    return len(content) == 0


def _check_messages(raw: Any, found: list[tuple[str, str]]) -> None:
    messages = _require_list("messages", raw)
    if not messages:
        raise invalid("messages: at least one message is required")
    last = len(messages) - 1
    for index, item in enumerate(messages):
        path = f"messages.{index}"
        message = _require_dict(path, item)
        _no_extra(path, message, frozenset({"role", "content"}))
        for field in ("role", "content"):
            if field not in message:
                raise invalid(f"{path}.{field}: Field required")
        role = message["role"]
        if role not in ("user", "assistant"):
            raise invalid(f"{path}.role: Input should be 'user' or 'assistant'")
        content = message["content"]
        if not isinstance(content, str):
            for position, block in enumerate(_require_list(f"{path}.content", content)):
                checked = _check_block(f"{path}.content.{position}", role, block)
                if checked.get("type") == "text" and checked["text"] == "":
                    raise invalid("messages: text content blocks must be non-empty")
                _cache_control(f"{path}.content.{position}", checked, found)
        if _is_empty(content) and not (index == last and role == "assistant"):
            raise invalid(
                f"{path}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
        trailing = isinstance(content, str) and content != content.rstrip()
        if index == last and role == "assistant" and trailing:
            raise invalid("messages: final assistant content cannot end with trailing whitespace")
    if messages[0]["role"] != "user":
        raise invalid('messages: first message must use the "user" role')
    _check_tool_pairing(messages)


def _check_tool_pairing(messages: list[Any]) -> None:
    """Every tool_use is answered by a tool_result in the very next (merged) user turn."""
    turns = merge_turns(messages)
    seen_ids: set[str] = set()
    for position, turn in enumerate(turns):
        if turn.role == "assistant":
            uses = [block for _, block in turn.blocks if block.get("type") == "tool_use"]
            ids = [str(block["id"]) for block in uses]
            if len(set(ids)) != len(ids) or seen_ids & set(ids):
                raise invalid(f"messages.{turn.first_index}: `tool_use` ids must be unique")
            seen_ids.update(ids)
            following = turns[position + 1] if position + 1 < len(turns) else None
            answered = {
                str(block.get("tool_use_id"))
                for _, block in (following.blocks if following else [])
                if block.get("type") == "tool_result"
            }
            missing = [tool_id for tool_id in ids if tool_id not in answered]
            if missing:
                raise invalid(
                    f"messages.{turn.first_index}: `tool_use` ids were found without "
                    f"`tool_result` blocks immediately after: {', '.join(missing)}. Each "
                    "`tool_use` block must have a corresponding `tool_result` block in the "
                    "next message."
                )
            if uses and following is not None:
                kinds = [block.get("type") for _, block in following.blocks]
                leading = next((i for i, kind in enumerate(kinds) if kind != "tool_result"),
                               len(kinds))
                if "tool_result" in kinds[leading:]:
                    raise invalid(
                        f"messages.{following.first_index}: Did not find {len(ids)} "
                        "tool_result block(s) at the beginning of this message. Messages "
                        "following tool_use blocks must begin with a matching number of "
                        "tool_result blocks."
                    )
            continue
        previous = turns[position - 1] if position > 0 else None
        offered = {
            str(block.get("id"))
            for _, block in (previous.blocks if previous else [])
            if block.get("type") == "tool_use"
        }
        results_for: set[str] = set()
        for path, block in turn.blocks:
            if block.get("type") != "tool_result":
                continue
            if block.get("tool_use_id") in results_for:
                raise invalid(
                    f"{path}: each tool_use must have a single result. Found multiple "
                    f"`tool_result` blocks with id: {block.get('tool_use_id')}"
                )
            results_for.add(str(block.get("tool_use_id")))
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in offered:
                raise invalid(
                    f"{path}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )


# -- other fields --------------------------------------------------------------------------


def _check_scalars(body: Mapping[str, Any], endpoint: Endpoint) -> None:
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")
    if "stop_sequences" in body:
        for index, item in enumerate(_require_list("stop_sequences", body["stop_sequences"])):
            _require_str(f"stop_sequences.{index}", item)
    if "metadata" in body:
        metadata = _require_dict("metadata", body["metadata"])
        _no_extra("metadata", metadata, frozenset({"user_id"}))
    if "service_tier" in body and body["service_tier"] not in ("auto", "standard_only"):
        raise invalid("service_tier: Input should be 'auto' or 'standard_only'")
    if body.get("thinking") is not None:
        thinking = _require_dict("thinking", body["thinking"])
        kind = thinking.get("type")
        if kind not in ("enabled", "disabled", "adaptive"):
            raise invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
                raise invalid(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                )
            if endpoint == "messages" and budget >= body["max_tokens"]:
                raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")


def validate_request(body: Any, endpoint: Endpoint) -> ModelSpec:
    """Check a request body; return the model it names. Raises `ApiError` on the first problem."""
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    _no_extra("", body, MESSAGES_FIELDS if endpoint == "messages" else COUNT_TOKENS_FIELDS)
    for field in ("model", "messages") + (("max_tokens",) if endpoint == "messages" else ()):
        if field not in body:
            raise invalid(f"{field}: Field required")
    model_id = _require_str("model", body["model"])
    if endpoint == "messages":
        max_tokens = body["max_tokens"]
        if not _is_int(max_tokens):
            raise invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 0:
            raise invalid("max_tokens: Input should be greater than or equal to 0")

    found: list[tuple[str, str]] = []
    tool_names = _check_tools(body["tools"], found) if body.get("tools") is not None else None
    if body.get("system") is not None:
        _check_system(body["system"], found)
    _check_messages(body["messages"], found)
    if body.get("cache_control") is not None:
        _cache_control("", {"cache_control": body["cache_control"]}, found)
    _check_breakpoints(found)
    if body.get("tool_choice") is not None:
        _check_tool_choice(body["tool_choice"], tool_names)
    _check_scalars(body, endpoint)

    spec = find_model(model_id)
    if spec is None:
        raise ApiError("not_found_error", f"model: {model_id}")
    if endpoint == "messages" and body["max_tokens"] > spec.max_output_tokens:
        raise invalid(
            f"max_tokens: {body['max_tokens']} > {spec.max_output_tokens}, which is the maximum "
            f"allowed number of output tokens for {spec.id}"
        )
    return spec
