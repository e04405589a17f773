"""A tool environment plus the tools that end an agent's turn (submit_plan, submit_review).

The loop stops at a terminal tool and hands its input to the caller, who validates it and may
resume the conversation with the exact problems; so executing one here only acknowledges it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ack:
    content: str
    is_error: bool = False


class TerminalTools:
    def __init__(self, inner: Any, terminal: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._terminal = {tool["name"]: tool for tool in terminal}

    # The given terminal tools replace the toolbox's own way of ending (`finish_step`).
    _REPLACED = frozenset({"finish_step"})

    def definitions(self) -> list[dict[str, Any]]:
        hidden = self._REPLACED | set(self._terminal)
        inner = [d for d in self._inner.definitions() if d["name"] not in hidden]
        return [*inner, *self._terminal.values()]

    async def execute(self, name: str, tool_input: dict[str, Any]) -> Any:
        if name in self._terminal:
            return Ack("received")
        if name in self._REPLACED:
            return Ack(f"{name} is not available here; call "
                       f"{' or '.join(self._terminal)} to finish", is_error=True)
        result = self._inner.execute(name, tool_input)
        return await result if inspect.isawaitable(result) else result
