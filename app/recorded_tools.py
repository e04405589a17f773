"""A worker's toolbox whose refusals go on the run's timeline.

The toolbox refuses an edit outside the step's files, a path escaping the repository or an
edit through a symlink as soon as the model tries it, and tells the model why. Those are
guardrail decisions like the ones taken on the final diff, so they are recorded the same way.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from app.runs import RunStore
from app.tools import EDIT_TOOLS

# Refusals that are guardrails (scope and path safety), not ordinary tool errors such as
# "old was not found".
_GUARDRAIL = re.compile(
    r"outside-step-files|outside this step's files|contains '\.\.'|is absolute|inside \.git/"
    r"|backslash|NUL byte|symbolic link|resolves outside|resolves into \.git/"
)


class RecordedTools:
    def __init__(self, inner: Any, store: RunStore, run_id: str, step_id: str) -> None:
        self._inner = inner
        self._store = store
        self._run_id = run_id
        self._step_id = step_id

    def definitions(self) -> list[dict[str, Any]]:
        definitions: list[dict[str, Any]] = self._inner.definitions()
        return definitions

    async def execute(self, name: str, tool_input: dict[str, Any]) -> Any:
        result = self._inner.execute(name, tool_input)
        if inspect.isawaitable(result):
            result = await result
        if name in EDIT_TOOLS and result.is_error and _GUARDRAIL.search(result.content):
            path = tool_input.get("path") if isinstance(tool_input, dict) else None
            await self._store.log(self._run_id, "guardrail",
                                  f"refused {name}({path!r}): {result.content}"[:500],
                                  step=self._step_id, rule="tool")
        return result
