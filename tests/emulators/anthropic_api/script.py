"""Scripts: ordered rules that decide how the stand-in answers each `POST /v1/messages`.

The first rule (in order) whose `match` holds and whose `times` is not used up answers. A rule's
answer is fixed (`Answer`) or computed by a callable from the `ScriptRequest`; a callable may
return None to pass the request on to the next rule. Rules load from Python objects or from
JSON/YAML data of this shape:

    rules:
      - name: plan                       # optional, shows in the request log
        match: {system: "planner", tool: write_plan, user: "issue #12", model: claude-opus-5-5,
                system_regex: "...", user_regex: "...", call: 3}      # all optional, ANDed
        times: 1                         # optional; omitted = unlimited
        answer:
          text: "..."                    # and/or
          tool_use: [{name: write_plan, input: {...}}]     # a dict or a list of dicts
          # or instead: fault: overloaded | rate_limit | api_error | {status, type, message}
          retry_after: 0.01              # fault only: sent as the `retry-after` header
          headers: {x-should-retry: "false"}               # fault only: extra headers
          delay: 0.2                     # seconds to wait before answering
          stop_reason: max_tokens        # override
          usage: {output_tokens: 7}      # override
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml

# -- the request as rules see it -----------------------------------------------------------


def _block_text(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return content
        return "\n".join(_block_text(item) for item in content if isinstance(item, Mapping))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(filter(None, (_block_text(block) for block in content)))


@dataclass(frozen=True)
class ScriptRequest:
    """A validated `POST /v1/messages` request, as handed to rules and callables."""

    body: Mapping[str, Any]
    call: int
    """1-based number of this call among the valid `POST /v1/messages` requests since reset."""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def messages(self) -> Sequence[Mapping[str, Any]]:
        messages: Sequence[Mapping[str, Any]] = self.body["messages"]
        return messages

    @property
    def system_text(self) -> str:
        return _content_text(self.body.get("system") or "")

    @property
    def tool_names(self) -> list[str]:
        return [str(tool.get("name")) for tool in self.body.get("tools") or []]

    @property
    def last_user_text(self) -> str:
        """Text of the last user turn: its text blocks and its tool_result contents."""
        texts: list[str] = []
        for message in reversed(self.messages):
            if message.get("role") != "user":
                if texts:
                    break
                continue
            texts.insert(0, _content_text(message.get("content", "")))
        return "\n".join(texts)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))


# -- answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    """Leave None for a fresh `toolu_...` id."""


FAULT_PRESETS: dict[str, tuple[int, str, str]] = {
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "rate_limit": (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    "api_error": (500, "api_error", "Internal server error"),
}


@dataclass(frozen=True)
class Fault:
    """An error answer. `retry_after` (seconds) becomes the `retry-after` header."""

    status: int
    type: str
    message: str
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def preset(
        cls,
        kind: str,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        if kind not in FAULT_PRESETS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(FAULT_PRESETS)}")
        status, error_type, message = FAULT_PRESETS[kind]
        return cls(status, error_type, message, retry_after, dict(headers or {}))

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            value = self.retry_after
            headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
        return headers


@dataclass(frozen=True)
class Answer:
    text: str | None = None
    tool_uses: Sequence[ToolUse] = ()
    fault: Fault | None = None
    delay: float = 0.0
    stop_reason: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fault is not None and (self.text is not None or self.tool_uses):
            raise ValueError("an answer is either a fault or content (text/tool_use), not both")
        # The API does sometimes answer with no content at all (`content: []`, `end_turn`);
        # a script says so by giving the stop reason alone.
        if (self.fault is None and self.text is None and not self.tool_uses
                and self.stop_reason is None):
            raise ValueError("an answer needs text, tool_use, a fault or a stop_reason")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")


# -- matching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Conditions on a request; all given ones must hold (an empty Match matches everything)."""

    system: str | None = None
    """Substring of the system prompt."""
    system_regex: str | None = None
    tool: str | None = None
    """Name of a tool the request offers."""
    user: str | None = None
    """Substring of the last user turn's text or tool_result content."""
    user_regex: str | None = None
    model: str | None = None
    call: int | Sequence[int] | None = None
    """The request's call number(s), 1-based, counted over valid message requests."""

    def matches(self, request: ScriptRequest) -> bool:
        calls = (self.call,) if isinstance(self.call, int) else self.call
        checks = (
            self.system is None or self.system in request.system_text,
            self.system_regex is None or re.search(self.system_regex, request.system_text),
            self.tool is None or self.tool in request.tool_names,
            self.user is None or self.user in request.last_user_text,
            self.user_regex is None or re.search(self.user_regex, request.last_user_text),
            self.model is None or self.model == request.model,
            calls is None or request.call in calls,
        )
        return all(checks)


AnswerLike: TypeAlias = Answer | str | ToolUse | Mapping[str, Any] | None
Responder: TypeAlias = Callable[[ScriptRequest], AnswerLike]


@dataclass
class Rule:
    answer: Answer | Responder
    match: Match = field(default_factory=Match)
    times: int | None = None
    """How often this rule may answer; None = unlimited."""
    name: str | None = None
    used: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.used >= self.times


RuleLike: TypeAlias = Rule | Mapping[str, Any] | Responder


# -- builders for terse tests --------------------------------------------------------------


def reply(
    text: str,
    *,
    match: Match | None = None,
    times: int | None = None,
    name: str | None = None,
    delay: float = 0.0,
    stop_reason: str | None = None,
) -> Rule:
    """A rule answering with a text block."""
    answer = Answer(text=text, delay=delay, stop_reason=stop_reason)
    return Rule(answer, match or Match(), times, name)


def use_tool(
    name: str,
    tool_input: Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    match: Match | None = None,
    times: int | None = None,
    rule_name: str | None = None,
    delay: float = 0.0,
) -> Rule:
    """A rule answering with one tool_use block (after an optional text block)."""
    answer = Answer(text=text, tool_uses=(ToolUse(name, dict(tool_input or {})),), delay=delay)
    return Rule(answer, match or Match(), times, rule_name)


def fault(
    kind: str,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    match: Match | None = None,
    times: int | None = None,
    name: str | None = None,
    delay: float = 0.0,
) -> Rule:
    """A rule answering with a preset fault: `overloaded`, `rate_limit` or `api_error`."""
    error = Fault.preset(kind, retry_after=retry_after, headers=headers)
    return Rule(Answer(fault=error, delay=delay), match or Match(), times, name)


# -- parsing JSON/YAML data ----------------------------------------------------------------

_RULE_KEYS = frozenset({"name", "match", "times", "answer"})
_MATCH_KEYS = frozenset(Match.__dataclass_fields__)
_ANSWER_KEYS = frozenset(
    {"text", "tool_use", "fault", "retry_after", "headers", "delay", "stop_reason", "usage"}
)


def _reject_unknown(where: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _tool_use_from_data(where: str, data: Any) -> ToolUse:
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise ValueError(f"{where}: a tool_use needs a string 'name'")
    _reject_unknown(where, data, frozenset({"name", "input", "id"}))
    tool_input = data.get("input", {})
    if not isinstance(tool_input, Mapping):
        raise ValueError(f"{where}.input: must be an object")
    return ToolUse(data["name"], dict(tool_input), data.get("id"))


def answer_from_data(data: Mapping[str, Any], where: str = "answer") -> Answer:
    _reject_unknown(where, data, _ANSWER_KEYS)
    raw_tools = data.get("tool_use", [])
    if isinstance(raw_tools, Mapping):
        raw_tools = [raw_tools]
    tool_uses = tuple(
        _tool_use_from_data(f"{where}.tool_use.{index}", item)
        for index, item in enumerate(raw_tools)
    )
    error: Fault | None = None
    raw_fault = data.get("fault")
    if isinstance(raw_fault, str):
        error = Fault.preset(
            raw_fault, retry_after=data.get("retry_after"), headers=data.get("headers")
        )
    elif isinstance(raw_fault, Mapping):
        _reject_unknown(f"{where}.fault", raw_fault, frozenset({"status", "type", "message"}))
        error = Fault(
            int(raw_fault["status"]),
            str(raw_fault["type"]),
            str(raw_fault.get("message", raw_fault["type"])),
            data.get("retry_after"),
            dict(data.get("headers") or {}),
        )
    elif raw_fault is not None:
        raise ValueError(f"{where}.fault: must be a preset name or an object")
    return Answer(
        text=data.get("text"),
        tool_uses=tool_uses,
        fault=error,
        delay=float(data.get("delay", 0.0)),
        stop_reason=data.get("stop_reason"),
        usage=dict(data.get("usage") or {}),
    )


def rule_from_data(data: Mapping[str, Any], where: str = "rule") -> Rule:
    _reject_unknown(where, data, _RULE_KEYS)
    if "answer" not in data or not isinstance(data["answer"], Mapping):
        raise ValueError(f"{where}: needs an 'answer' object")
    raw_match = data.get("match") or {}
    if not isinstance(raw_match, Mapping):
        raise ValueError(f"{where}.match: must be an object")
    _reject_unknown(f"{where}.match", raw_match, _MATCH_KEYS)
    times = data.get("times")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError(f"{where}.times: must be a positive integer")
    call = raw_match.get("call")
    match = Match(**{**raw_match, "call": tuple(call) if isinstance(call, list) else call})
    return Rule(answer_from_data(data["answer"], f"{where}.answer"), match, times, data.get("name"))


def rules_from_data(data: Any) -> list[Rule]:
    """Rules from parsed JSON/YAML: a list of rules, or an object with a `rules` list."""
    if isinstance(data, Mapping):
        _reject_unknown("script", data, frozenset({"rules"}))
        data = data.get("rules", [])
    if not isinstance(data, list):
        raise ValueError("a script is a list of rules or an object with a 'rules' list")
    return [rule_from_data(item, f"rules.{index}") for index, item in enumerate(data)]


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from a `.json`, `.yaml` or `.yml` file."""
    source = Path(path)
    text = source.read_text(encoding="utf-8")
    data = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    return rules_from_data(data)


def to_rule(item: RuleLike) -> Rule:
    if isinstance(item, Rule):
        return item
    if isinstance(item, Mapping):
        return rule_from_data(item)
    if callable(item):
        return Rule(item, name=getattr(item, "__name__", None))
    raise TypeError(f"not a rule: {item!r}")


def coerce_answer(value: AnswerLike) -> Answer | None:
    """What a callable returned, as an Answer (None passes the request on)."""
    if value is None or isinstance(value, Answer):
        return value
    if isinstance(value, str):
        return Answer(text=value)
    if isinstance(value, ToolUse):
        return Answer(tool_uses=(value,))
    if isinstance(value, Mapping):
        return answer_from_data(value)
    raise TypeError(f"a responder returned {value!r}; expected Answer, str, ToolUse, dict or None")


# -- the script ----------------------------------------------------------------------------


class Script:
    """The current rules. Thread-safe: tests edit it while the server thread reads it."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._lock = threading.RLock()

    def replace(self, rules: Iterable[RuleLike]) -> None:
        converted = [to_rule(item) for item in rules]
        with self._lock:
            self._rules = converted

    def extend(self, rules: Iterable[RuleLike]) -> None:
        converted = [to_rule(item) for item in rules]
        with self._lock:
            self._rules.extend(converted)

    def clear(self) -> None:
        self.replace([])

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def choose(self, request: ScriptRequest) -> tuple[str, Answer] | None:
        """The first applicable rule's name and answer, consuming one of its `times`."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.exhausted or not rule.match.matches(request):
                    continue
                if isinstance(rule.answer, Answer):
                    answer: Answer | None = rule.answer
                else:
                    answer = coerce_answer(rule.answer(request))
                if answer is None:
                    continue
                rule.used += 1
                return (rule.name or f"rules.{index}"), answer
        return None
