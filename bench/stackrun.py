"""What the end-to-end benches share: run one labeled issue on a `Stack` to its draft pull
request and collect what the bot recorded (not a bench itself)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.support import run_in, steps, timeline
from tests.emulators.harness import Stack


@dataclass
class Recorded:
    run: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


def collect(stack: Stack, logs: Path | None, expected_steps: int) -> Recorded:
    """Wait for the run to open its PR (or stop), then read its steps, timeline and model
    calls; with `logs`, stop the stack and copy the bot's logs there."""
    found = Recorded()
    found.run = stack.wait_for(lambda: run_in(stack, "verifying", "done", "needs_human",
                                              "failed", "awaiting_approval"), 80, "the run")
    if found.run["status"] != "verifying":
        found.error = f"run ended {found.run['status']}: {found.run.get('stop_reason')}"
    found.records = steps(stack, found.run["id"])
    found.events = timeline(stack, found.run["id"])
    raw = stack.redis_client().lrange(f"conductor:run:{found.run['id']}:calls", 0, -1)
    found.calls = [json.loads(c) for c in raw]
    if logs:
        stack.stop()  # flush the processes' logs before copying them
        shutil.copytree(stack.logs_dir, logs, dirs_exist_ok=True)
    states = {k: r["state"] for k, r in found.records.items()}
    if len(states) != expected_steps or set(states.values()) != {"done"}:
        found.error = found.error or f"steps: {states}"
    return found
