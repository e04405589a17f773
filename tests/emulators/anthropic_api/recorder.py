"""The request log: every API request the stand-in received and what it answered."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

REDACTED = "<redacted>"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credential values replaced (the `Bearer` scheme is kept)."""
    redacted: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "x-api-key":
            redacted[lowered] = REDACTED
        elif lowered == "authorization":
            scheme = value.split(" ", 1)[0] if " " in value else ""
            redacted[lowered] = f"{scheme} {REDACTED}".strip()
        else:
            redacted[lowered] = value
    return redacted


@dataclass(frozen=True)
class Exchange:
    """One request and its answer."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    """Request headers, lower-cased names, credentials redacted."""
    body: Any
    """The parsed JSON body (or the raw text when it was not JSON)."""
    status: int
    response: Any
    """The JSON body sent back; for a streamed answer, the complete message it streamed."""
    response_headers: dict[str, str] = field(default_factory=dict)
    rule: str | None = None
    """Name of the script rule that answered, if one did."""
    streamed: bool = False
    delay: float = 0.0
    at: float = 0.0
    """When the request arrived, on the stand-in's clock (`AnthropicStandIn.now`)."""

    @property
    def error_type(self) -> str | None:
        if isinstance(self.response, dict) and self.response.get("type") == "error":
            error = self.response.get("error") or {}
            return str(error.get("type"))
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Append-only, thread-safe list of exchanges."""

    def __init__(self) -> None:
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> Exchange:
        with self._lock:
            exchange = Exchange(seq=len(self._exchanges) + 1, **fields)
            self._exchanges.append(exchange)
            return exchange

    def all(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def clear(self) -> None:
        with self._lock:
            self._exchanges.clear()
