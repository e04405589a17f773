"""Prompt-cache accounting following Anthropic's documented rules.

- The prompt is read in the order tools, system, messages; each `cache_control` breakpoint
  marks the end of a cacheable prefix.
- A breakpoint writes the prefix up to and including its block, but only when that prefix
  reaches the model's minimum cacheable length; shorter prefixes are silently not cached.
- A request reads the longest cached prefix it can find: for every breakpoint the system
  checks the breakpoint position and up to 20 blocks before it, so a conversation whose
  breakpoint moves forward each turn still hits the previous turn's entry.
- Entries are per model and expire after their TTL (5 minutes, or 1 hour with `"ttl": "1h"`);
  every read refreshes the entry's lifetime.
- Tokens after the read prefix up to the last written breakpoint are cache *creation* tokens;
  the rest of the prompt is plain `input_tokens`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .models import ModelSpec
from .prompt import PromptUnit

TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20


@dataclass(frozen=True)
class CacheAccounting:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


@dataclass
class _Entry:
    expires_at: float
    ttl_seconds: float


class PromptCache:
    """Cache entries keyed by (model id, prefix hash). Thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def _purge(self, now: float) -> None:
        for key in [key for key, entry in self._entries.items() if entry.expires_at <= now]:
            del self._entries[key]

    def account(self, model: ModelSpec, units: Sequence[PromptUnit]) -> CacheAccounting:
        """Price one successful request, reading and writing cache entries as the API would."""
        cumulative: list[int] = []
        total = 0
        for unit in units:
            total += unit.tokens
            cumulative.append(total)

        def upto(position: int) -> int:
            return cumulative[position] if position >= 0 else 0

        breakpoints = [index for index, unit in enumerate(units) if unit.cache_ttl]
        now = self._clock()
        with self._lock:
            self._purge(now)
            read_end = -1
            for breakpoint_at in breakpoints:
                for position in range(breakpoint_at, max(-1, breakpoint_at - LOOKBACK_BLOCKS), -1):
                    entry = self._entries.get((model.id, units[position].digest))
                    if entry is not None:
                        entry.expires_at = now + entry.ttl_seconds
                        read_end = max(read_end, position)
                        break

            created = {"5m": 0, "1h": 0}
            written_end = read_end
            for breakpoint_at in breakpoints:
                ttl = units[breakpoint_at].cache_ttl or "5m"
                key = (model.id, units[breakpoint_at].digest)
                if breakpoint_at <= read_end:
                    if key in self._entries:
                        self._entries[key].expires_at = now + self._entries[key].ttl_seconds
                    continue
                if upto(breakpoint_at) < model.min_cacheable_tokens:
                    continue
                self._entries[key] = _Entry(now + TTL_SECONDS[ttl], TTL_SECONDS[ttl])
                created[ttl] += upto(breakpoint_at) - upto(written_end)
                written_end = breakpoint_at

        read = upto(read_end)
        creation = created["5m"] + created["1h"]
        return CacheAccounting(
            input_tokens=total - read - creation,
            cache_creation_input_tokens=creation,
            cache_read_input_tokens=read,
            ephemeral_5m_input_tokens=created["5m"],
            ephemeral_1h_input_tokens=created["1h"],
        )
