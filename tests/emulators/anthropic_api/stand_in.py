"""`AnthropicStandIn`: everything the fake API remembers (script, request log, prompt cache)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .cache import PromptCache
from .recorder import Exchange, Recorder
from .script import Answer, Rule, RuleLike, Script, ScriptRequest, load_rules, rules_from_data


class AnthropicStandIn:
    """State of one fake Anthropic API. Safe to use from the test thread while a server runs.

    `api_key`: the only key accepted (401 otherwise); None accepts any non-empty key.
    `clock`: seconds, monotonic; the prompt cache's TTLs use it (see `advance_time`).
    """

    def __init__(
        self, *, api_key: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api_key = api_key
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.Lock()
        self._calls = 0
        self._script = Script()
        self._recorder = Recorder()
        self.cache = PromptCache(self.now)

    # -- time ----------------------------------------------------------------------------

    def now(self) -> float:
        with self._lock:
            return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the stand-in's clock forward (e.g. past a cache TTL) without sleeping."""
        with self._lock:
            self._offset += seconds

    # -- script --------------------------------------------------------------------------

    def script(self, rules: Iterable[RuleLike]) -> None:
        """Replace the script. Items: `Rule`s, rule dicts (JSON/YAML shape) or callables."""
        self._script.replace(rules)

    def add_rules(self, *rules: RuleLike) -> None:
        """Append rules after the current ones."""
        self._script.extend(rules)

    def load_script(self, source: str | Path | list[Any] | dict[str, Any]) -> None:
        """Replace the script from a JSON/YAML file path, or from already-parsed data."""
        if isinstance(source, str | Path):
            self._script.replace(load_rules(source))
        else:
            self._script.replace(rules_from_data(source))

    @property
    def rules(self) -> list[Rule]:
        return self._script.rules

    def next_call(self) -> int:
        with self._lock:
            self._calls += 1
            return self._calls

    @property
    def calls(self) -> int:
        """Valid `POST /v1/messages` requests that reached the script since the last reset."""
        with self._lock:
            return self._calls

    def choose(self, request: ScriptRequest) -> tuple[str, Answer] | None:
        return self._script.choose(request)

    # -- log -----------------------------------------------------------------------------

    def record(self, **fields: Any) -> Exchange:
        return self._recorder.record(**fields)

    @property
    def requests(self) -> list[Exchange]:
        """Every API request so far (all paths, including rejected ones and retries)."""
        return self._recorder.all()

    def message_requests(self) -> list[Exchange]:
        """Only `POST /v1/messages` exchanges."""
        return [
            exchange
            for exchange in self._recorder.all()
            if exchange.method == "POST" and exchange.path == "/v1/messages"
        ]

    # -- reset ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the script, the request log, the prompt cache, the call counter and the clock
        offset."""
        self._script.clear()
        self._recorder.clear()
        self.cache.clear()
        with self._lock:
            self._calls = 0
            self._offset = 0.0
