"""All model HTTP: one `anthropic.AsyncAnthropic`, prompt-cache breakpoints, bounded retries,
typed errors that say what to do, and a record of every call.

Retries. The SDK's own retry loop is off (`max_retries=0`) and done here instead, because the
SDK sleeps for whatever `retry-after` the API sends, without a cap, and does not report how
many retries a call took. Here a call is retried up to `max_retries` times (default 3) on
408/409/429/5xx/529, on connection errors and on a 200 whose body is not a message (another
server, or a proxy, answering at the base URL), waiting `retry-after-ms`/`retry-after` when the
API sends one and otherwise backing off exponentially (0.5 s doubling, at most 8 s, with
jitter). A wait longer than `max_retry_wait` (default 20 s) is never slept on: the call fails
at once with `ModelRateLimited`/`ModelUnavailable` carrying `retry_after`, so that the job can
be deferred instead of holding a worker slot. `x-should-retry` from the API overrides the
status-based decision, as it does in the SDK.

Timeouts. 600 s per attempt (the SDK's default), 10 s to connect. An explicit timeout also
lifts the SDK's refusal of non-streaming calls whose `max_tokens` could take over 10 minutes.

Cache breakpoints (at most 4 per request; counted and enforced before sending). One on the
last tool definition, one on the last block of the stable system prefix (the system is given
as blocks, stable ones first), one on the last block of the conversation so far, so each turn
of an agent loop reads the previous turn's cache entry. The caller's messages are copied,
never marked in place. Prefixes below the model's minimum length are not cached (silently).

What is recorded (`ModelCall`, appended to the run's ledger by `Budget.record`), after every
string has gone through the log redactor:
- the request: model, max_tokens, tool names, per system block its length and a digest (the
  stable prefix repeats on every call; the digest shows whether it changed), the number of
  messages, and only the last message (this turn's new input), each string cut to 4,000
  characters (head and tail kept);
- the answer: its content blocks, each string cut to 20,000 characters;
- usage, cost, latency (wall time including retries), stop reason, request id, retries, and the
  error for a call that failed.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from app.logs import get_logger, redactor
from app.pricing import cost, price_for
from app.request_parts import keep_request
from app.settings import Settings

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message, Usage

    from app.budget import Budget

log = get_logger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
MAX_CACHE_BREAKPOINTS = 4
CHARS_PER_TOKEN_ESTIMATE = 3.5  # conservative: real tokenizers average nearer 4 for English/code
RECORDED_INPUT_CHARS = 4_000
RECORDED_OUTPUT_CHARS = 20_000
RETRYABLE_STATUSES = frozenset({408, 409, 429})


# -- errors ---------------------------------------------------------------------------------


class ModelError(Exception):
    """A model call failed; the message says what happened and what to do."""

    retries: int = 0


class ModelUnavailable(ModelError):
    """The API stayed unavailable (5xx, 529 overloaded, unreachable) after the retries.

    `retry_after`: seconds the API asked us to wait, when it said; defer the job that long.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelRateLimited(ModelUnavailable):
    """429: the organisation's rate limit; `retry_after` says when to try again."""


class ModelRequestRejected(ModelError):
    """The API refused the request itself (400, 404, 413, ...); retrying will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ModelContextExceeded(ModelRequestRejected):
    """400 "prompt is too long": the conversation no longer fits in the model's context window;
    the same conversation will never fit, so retrying (here or as a job) cannot help."""


class ModelAuthFailed(ModelError):
    """401/403, or no key configured: ANTHROPIC_API_KEY needs fixing."""


# -- request and response -------------------------------------------------------------------


SystemBlock = str | Mapping[str, Any]


@dataclass
class ModelRequest:
    """One Messages API request, with the hints that place cache breakpoints.

    `system`: blocks, stable ones first (role prompt, repository map, guidance), then the ones
    that vary between calls. `stable_system_blocks`: how many leading blocks are stable; None
    means all. `cache=False` places no breakpoints.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    system: str | Sequence[SystemBlock] = ()
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: Mapping[str, Any] | None = None
    stable_system_blocks: int | None = None
    cache: bool = True
    cache_ttl: Literal["5m", "1h"] = "5m"

    def system_blocks(self) -> list[dict[str, Any]]:
        raw = [self.system] if isinstance(self.system, str) else list(self.system)
        blocks = [{"type": "text", "text": b} if isinstance(b, str) else dict(b) for b in raw]
        return [b for b in blocks if b.get("type") != "text" or b.get("text")]  # API refuses ""

    def estimated_input_tokens(self) -> int:
        """A local, deliberately high estimate (no API round trip): characters / 3.5."""
        text = json.dumps([self.system_blocks(), list(self.tools), self.messages],
                          ensure_ascii=False, default=str)
        return int(len(text) / CHARS_PER_TOKEN_ESTIMATE) + 1

    def payload(self) -> dict[str, Any]:
        """Keyword arguments for `messages.create`, with cache breakpoints placed."""
        tools = [dict(t) for t in self.tools]
        system = self.system_blocks()
        messages = copy.deepcopy(self.messages)
        if self.cache:
            marker: dict[str, str] = {"type": "ephemeral"}
            if self.cache_ttl == "1h":
                marker["ttl"] = "1h"
            if tools:
                tools[-1]["cache_control"] = dict(marker)
            stable = len(system) if self.stable_system_blocks is None else min(
                self.stable_system_blocks, len(system))
            if stable > 0:
                system[stable - 1]["cache_control"] = dict(marker)
            if messages:
                _mark_last_block(messages[-1], marker)
        payload: dict[str, Any] = {
            "model": self.model, "max_tokens": self.max_tokens, "messages": messages,
        }
        if system:
            payload["system"] = system
        if tools:
            payload["tools"] = tools
        if self.tool_choice is not None:
            payload["tool_choice"] = dict(self.tool_choice)
        count = count_breakpoints(payload)
        if count > MAX_CACHE_BREAKPOINTS:
            raise ModelRequestRejected(
                f"the request has {count} cache_control breakpoints; the API allows at most "
                f"{MAX_CACHE_BREAKPOINTS}. Remove cache_control from the messages passed in: "
                "app/models.py places the breakpoints itself"
            )
        return payload


def _mark_last_block(message: dict[str, Any], marker: dict[str, str]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        if content:
            message["content"] = [{"type": "text", "text": content,
                                   "cache_control": dict(marker)}]
        return
    if not content:
        return
    last = content[-1]
    if last.get("type") in ("thinking", "redacted_thinking"):
        return  # these blocks cannot carry cache_control
    if last.get("type") == "text" and not last.get("text"):
        return
    last["cache_control"] = dict(marker)


def count_breakpoints(payload: Mapping[str, Any]) -> int:
    blocks: list[Any] = list(payload.get("tools") or [])
    system = payload.get("system")
    if isinstance(system, list):
        blocks += system
    for message in payload.get("messages") or []:
        if isinstance(message.get("content"), list):
            blocks += message["content"]
    top = 1 if payload.get("cache_control") else 0
    return top + sum(1 for b in blocks if isinstance(b, Mapping) and b.get("cache_control"))


@dataclass
class ModelCall:
    """The record of one model call, as kept in the run's ledger (JSON)."""

    run_id: str | None
    role: str
    model: str
    started_at: float  # epoch seconds
    latency_ms: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None
    request_id: str | None = None
    retries: int = 0
    error: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] | None = None

    @property
    def tokens(self) -> int:
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCall:
        data = json.loads(text)
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelResponse:
    """The answer: `content` is the assistant turn as request blocks, ready to append."""

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    cost_usd: float
    request_id: str | None
    call: ModelCall

    @property
    def text(self) -> str:
        return "\n".join(b["text"] for b in self.content if b.get("type") == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.content if b.get("type") == "tool_use"]


# -- the client -----------------------------------------------------------------------------


class ModelClient:
    """All model HTTP. Build one per worker in `on_startup`; `aclose()` it in `on_shutdown`.

    `sdk` replaces the client built from settings (e.g. an `AsyncAnthropicBedrock`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sdk: anthropic.AsyncAnthropic | None = None,
        max_retries: int = 3,
        max_retry_wait: float = 20.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        timeout: float = 600.0,
    ) -> None:
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.base_url = str(settings.anthropic_base_url or DEFAULT_BASE_URL)
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if key:
            redactor.add([key])
        if sdk is None and key:
            import anthropic  # here, not at the top: importing the SDK costs seconds of CPU,
            # and the web process, the dashboard and `conductor trace` never call the model.

            # Every argument explicit, so the SDK reads no credentials or URL of its own.
            sdk = anthropic.AsyncAnthropic(
                api_key=key, base_url=self.base_url, max_retries=0,
                timeout=anthropic.Timeout(timeout, connect=10.0),
            )
        self._sdk = sdk
        self.replay_days = settings.conductor_replay_days

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()

    async def call(self, request: ModelRequest, *, budget: Budget | None, role: str,
                   trace: Mapping[str, Any]) -> ModelResponse:
        price_for(request.model)  # an unpriced model fails before anything is sent
        payload = request.payload()  # so does a request with too many cache breakpoints
        run_id = trace.get("run") or (budget.run_id if budget is not None else None)
        sanitised = _sanitised_request(request)
        hold = await budget.check(request.model, request) if budget is not None else None
        # Renewed while the call is in progress: if this worker dies, the reservation lapses.
        keeper = budget.keep(hold) if budget is not None and hold is not None else None
        started_at, clock = time.time(), time.monotonic()

        def record(**fields: Any) -> ModelCall:
            return ModelCall(
                run_id=run_id, role=role, model=request.model, started_at=started_at,
                latency_ms=int((time.monotonic() - clock) * 1000), trace=dict(trace),
                request=sanitised, **fields,
            )

        try:
            if budget is not None:
                # The whole request, for `conductor replay` (the trace's copy is clipped).
                parts = await keep_request(budget.redis, request, self.replay_days)
                if parts is not None:
                    sanitised["parts"] = parts
                started_at, clock = time.time(), time.monotonic()  # the model's time only
            message, retries = await self._send(payload)
        except ModelError as exc:
            failed = record(retries=exc.retries, error=redactor.scrub(str(exc)))
            log.warning("model call failed", role=role, model=request.model, run=run_id,
                        error=failed.error, retries=failed.retries)
            if budget is not None:
                await budget.record(failed, hold)
            raise
        except BaseException:
            # Cancelled (the job's time ran out, the run was cancelled) or broken: no answer
            # and no usage, so the reservation is freed now rather than left to lapse.
            if budget is not None and hold is not None:
                await budget.release(hold)
            raise
        finally:
            if keeper is not None:
                keeper.cancel()
        usage = message.usage
        blocks = [_block_param(block) for block in message.content]
        content = [block for block in blocks if _sendable(block)]
        call = record(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            cost_usd=cost(request.model, usage),
            stop_reason=message.stop_reason,
            request_id=message._request_id,
            retries=retries,
            response={"content": clip_recorded(blocks, RECORDED_OUTPUT_CHARS)},
        )
        log.info("model call", role=role, model=request.model, run=run_id,
                 latency_ms=call.latency_ms, input_tokens=call.input_tokens,
                 output_tokens=call.output_tokens, cache_read=call.cache_read_input_tokens,
                 cache_write=call.cache_creation_input_tokens, cost_usd=round(call.cost_usd, 6),
                 retries=retries, stop_reason=call.stop_reason, request_id=call.request_id)
        if budget is not None:
            await budget.record(call, hold)
        return ModelResponse(content, message.stop_reason, usage, call.cost_usd,
                             call.request_id, call)

    async def _send(self, payload: dict[str, Any]) -> tuple[Message, int]:
        if self._sdk is None:
            raise ModelAuthFailed("ANTHROPIC_API_KEY is not set; set it to an Anthropic API key "
                                  "(https://console.anthropic.com/settings/keys)")
        import anthropic  # loaded by __init__ already (see there)

        attempt = 0
        while True:
            try:
                answer: Any = await self._sdk.messages.create(**payload)
                problem = _not_a_message(answer)
                if problem is None:
                    return answer, attempt
                raise _NotAMessage(problem)
            except anthropic.APIStatusError as exc:
                error, retry = _status_error(exc, payload["model"])
                header_wait = _retry_after(exc.response.headers)
                cause: Exception = exc
            except anthropic.APIConnectionError as exc:
                error, retry, header_wait, cause = ModelUnavailable(
                    f"could not reach the Anthropic API at {self.base_url} ({exc.message}); "
                    "check ANTHROPIC_BASE_URL and the network, or retry later"
                ), True, None, exc
            except (_NotAMessage, json.JSONDecodeError) as exc:
                # Something else answered: another web server at the base URL, or a proxy.
                error, retry, header_wait, cause = ModelUnavailable(
                    f"the Anthropic API at {self.base_url} answered with something that is "
                    f"not a Messages API answer ({_describe(exc)}); check ANTHROPIC_BASE_URL, "
                    "or retry later (`/agent retry`)"
                ), True, None, exc
            wait = header_wait if header_wait is not None else self._backoff(attempt)
            if not retry or attempt >= self.max_retries or wait > self.max_retry_wait:
                error.retries = attempt
                if isinstance(error, ModelUnavailable) and header_wait is not None:
                    error.retry_after = header_wait
                raise error from cause
            attempt += 1
            log.info("model call retry", attempt=attempt, wait_s=round(wait, 3),
                     error=str(error))
            await asyncio.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff * 2.0**attempt, self.max_backoff)
        return delay * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not security)


class _NotAMessage(Exception):
    """A successful HTTP answer whose body is not a Messages API message."""


def _not_a_message(answer: Any) -> str | None:
    """What is wrong with a 200 answer that should be a `Message`, or None."""
    from anthropic.types import Message, Usage

    if not isinstance(answer, Message):
        return f"a {type(answer).__name__} body: {str(answer)[:80]!r}"
    if not isinstance(answer.content, list) or not isinstance(answer.usage, Usage) or any(
            not isinstance(getattr(block, "type", None), str) for block in answer.content):
        return f"no content or usage in {answer.model_dump_json(exclude_none=True)[:80]}"
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"a body that is not JSON: {exc.msg} at character {exc.pos}"
    return redactor.scrub(str(exc))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds), as the SDK reads them."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
        if seconds > 0:
            return seconds
    return None


def _status_error(exc: anthropic.APIStatusError, model: str) -> tuple[ModelError, bool]:
    """The typed error for an error response, and whether it is worth retrying."""
    status = exc.status_code
    detail = redactor.scrub(f"{status} {exc.type or 'error'}: {exc.api_message or exc.message}")
    header = exc.response.headers.get("x-should-retry")
    retry = status in RETRYABLE_STATUSES or status >= 500
    if header in ("true", "false"):
        retry = header == "true"
    error: ModelError
    if status == 429:
        error = ModelRateLimited(
            f"Anthropic API rate limit reached ({detail}). Retry later, lower "
            "CONDUCTOR_WORKER_CONCURRENCY, or ask Anthropic for higher limits")
    elif status in (401, 403):
        error = ModelAuthFailed(
            f"the Anthropic API refused the credentials ({detail}). Check that "
            f"ANTHROPIC_API_KEY holds a valid key with access to {model}")
    elif status >= 500 or status in RETRYABLE_STATUSES:
        error = ModelUnavailable(
            f"the Anthropic API is unavailable ({detail}). Retry later (`/agent retry`)")
    elif status == 404:
        error = ModelRequestRejected(
            f"the Anthropic API does not know this model or endpoint ({detail}). Check the "
            f"model id {model!r} (models in .github/conductor.yml) and ANTHROPIC_BASE_URL",
            status)
    elif status == 400 and "prompt is too long" in detail.lower():
        error = ModelContextExceeded(
            f"the conversation no longer fits in {model}'s context window ({detail})", status)
    else:
        error = ModelRequestRejected(f"the Anthropic API rejected the request ({detail})", status)
    return error, retry


# Answer blocks that can go back to the API as they are. Requests here enable no server tools,
# so any other block (a type newer than this client) could not be answered or sent back.
SENDABLE_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})


def _sendable(block: Mapping[str, Any]) -> bool:
    """Whether an answer block belongs in the assistant turn sent back. Not an empty text
    block: the API may answer with one but refuses one in a request."""
    if block.get("type") == "text":
        return bool(block.get("text"))
    return block.get("type") in SENDABLE_BLOCKS


def _block_param(block: Any) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    return data


def clip_recorded(value: Any, limit: int) -> Any:
    """Scrub secrets from every string, then keep its head and tail within `limit` chars."""
    if isinstance(value, str):
        text = redactor.scrub(value)
        if len(text) <= limit:
            return text
        half = limit // 2
        return f"{text[:half]}\n…[{len(text) - 2 * half} characters cut]…\n{text[-half:]}"
    if isinstance(value, Mapping):
        return {str(k): clip_recorded(v, limit) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list | tuple):
        return [clip_recorded(v, limit) for v in value]
    return value


def _sanitised_request(request: ModelRequest) -> dict[str, Any]:
    system = request.system_blocks()
    stable = len(system) if request.stable_system_blocks is None else request.stable_system_blocks
    return {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "tools": [str(t.get("name")) for t in request.tools],
        "system": [
            {"chars": len(json.dumps(b, ensure_ascii=False)),
             "sha256": hashlib.sha256(json.dumps(b, sort_keys=True).encode()).hexdigest()[:16],
             "stable": i < stable}
            for i, b in enumerate(system)
        ],
        "messages": len(request.messages),
        "last_message": clip_recorded(request.messages[-1], RECORDED_INPUT_CHARS)
        if request.messages else None,
    }
