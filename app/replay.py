"""`conductor replay`: send a run's model calls again, as they were or to another model, and
say what came back differently.

Each call's whole request is kept as it is made (`app.request_parts`). A replay re-sends
each through the model client (its retries, its cache breakpoints), optionally to another
model (`--model`), and compares the answer with the recorded one: the tool calls asked for
(name and input), the text, and the stop reason; then tokens and cost side by side. Tools are
not run again, so a replay shows where a model decides differently at each point of the
recorded run, not how the run would have continued. It writes nothing to the run: its calls
go to no ledger or budget. Its cost is estimated first, from the recorded usage at the replay
model's prices, and a replay estimated above `--max-cost` is refused.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from app.models import (
    RECORDED_OUTPUT_CHARS,
    ModelCall,
    ModelClient,
    ModelError,
    ModelRequest,
    clip_recorded,
)
from app.pricing import cost, price_for
from app.request_parts import restore_request

DIFF_LINES = 40


# --- replaying ----------------------------------------------------------------------------


@dataclass
class Replayed:
    """One recorded call and what the replay got for it."""

    number: int  # 1-based, as `conductor trace` numbers the calls
    role: str
    step: str | None
    model: str
    replay_model: str
    verdict: str  # same, same tools, differs, not kept, failed
    recorded_cost_usd: float
    replay_cost_usd: float = 0.0
    recorded_tokens: int = 0
    replay_tokens: int = 0
    recorded_stop: str | None = None
    replay_stop: str | None = None
    recorded_tools: list[str] = field(default_factory=list)
    replay_tools: list[str] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Replay:
    run_id: str
    model: str | None
    calls: list[Replayed]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.calls:
            counts[call.verdict] = counts.get(call.verdict, 0) + 1
        return counts

    @property
    def answered(self) -> list[Replayed]:
        """The calls the replay got an answer for: their costs compare like for like."""
        return [c for c in self.calls if c.verdict not in ("not kept", "failed")]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "model": self.model, "counts": self.counts,
                "recorded_cost_usd": sum(c.recorded_cost_usd for c in self.answered),
                "replay_cost_usd": sum(c.replay_cost_usd for c in self.answered),
                "calls": [asdict(c) for c in self.calls]}


class ReplayRefused(Exception):
    """The replay would not be worth sending (too costly, nothing to send); says why."""


def select(calls: Sequence[ModelCall], roles: Sequence[str] = (),
           numbers: Sequence[int] = ()) -> list[tuple[int, ModelCall]]:
    """The calls to replay, numbered as the trace numbers them; failed calls are left out
    (they had no answer to compare with)."""
    chosen = []
    for number, call in enumerate(calls, 1):
        if call.error is not None:
            continue
        if roles and call.role not in roles:
            continue
        if numbers and number not in numbers:
            continue
        chosen.append((number, call))
    return chosen


def estimate(chosen: Sequence[tuple[int, ModelCall]], model: str | None) -> float:
    """The replay's cost if it used what the recorded calls used, at the replay's prices."""
    return sum(cost(model or call.model, call) for _, call in chosen)


def _tool_lines(content: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{b.get('name')}({json.dumps(b.get('input'), sort_keys=True, ensure_ascii=False)})"
            for b in content if b.get("type") == "tool_use"]


def _comparable(content: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Content as the ledger records it (clipped, scrubbed, without tool-use ids, which
    differ on every call), so that a recorded and a replayed answer compare fairly."""
    clipped = clip_recorded([dict(b) for b in content], RECORDED_OUTPUT_CHARS)
    kept = []
    for block in clipped:
        if block.get("type") == "tool_use":
            kept.append({"type": "tool_use", "name": block.get("name"),
                         "input": block.get("input")})
        elif block.get("type") == "text":
            kept.append({"type": "text", "text": block.get("text")})
        else:
            kept.append({"type": block.get("type")})
    return kept


def _render_content(content: Sequence[Mapping[str, Any]]) -> list[str]:
    return json.dumps(content, indent=2, ensure_ascii=False, sort_keys=True).splitlines()


def compare(recorded: Sequence[Mapping[str, Any]], recorded_stop: str | None,
            replayed: Sequence[Mapping[str, Any]], replayed_stop: str | None
            ) -> tuple[str, list[str]]:
    """`same`, `same tools` (the same tool calls; other text) or `differs`, and a diff."""
    before, after = _comparable(recorded), _comparable(replayed)
    if before == after and recorded_stop == replayed_stop:
        return "same", []
    diff = list(difflib.unified_diff(_render_content(before), _render_content(after),
                                     "recorded", "replay", lineterm="", n=2))
    if len(diff) > DIFF_LINES:
        diff = [*diff[:DIFF_LINES], f"… {len(diff) - DIFF_LINES} more diff lines"]
    same_tools = (_tool_lines(before) == _tool_lines(after) and bool(_tool_lines(before))
                  and recorded_stop == replayed_stop)
    return ("same tools" if same_tools else "differs"), diff


async def replay(redis: Redis, client: ModelClient, run_id: str,
                 chosen: Sequence[tuple[int, ModelCall]], model: str | None) -> Replay:
    if model is not None:
        price_for(model)  # an unpriced model fails before anything is sent
    results = []
    for number, call in chosen:
        step = (call.trace or {}).get("step")
        item = Replayed(number=number, role=call.role, step=step, model=call.model,
                        replay_model=model or call.model, verdict="not kept",
                        recorded_cost_usd=call.cost_usd, recorded_tokens=call.tokens,
                        recorded_stop=call.stop_reason)
        recorded = (call.response or {}).get("content") or []
        item.recorded_tools = _tool_lines(_comparable(recorded))
        results.append(item)
        kept = await restore_request(redis, call.request)
        if kept is None:
            continue
        request = ModelRequest(**{**kept, "model": model or call.model})
        try:
            answer = await client.call(request, budget=None, role=call.role,
                                       trace={"replay_of": run_id, "call": number})
        except ModelError as exc:
            item.verdict, item.error = "failed", str(exc)
            continue
        item.replay_cost_usd, item.replay_tokens = answer.cost_usd, answer.call.tokens
        item.replay_stop = answer.stop_reason
        item.replay_tools = _tool_lines(_comparable(answer.content))
        item.verdict, item.diff = compare(recorded, call.stop_reason, answer.content,
                                          answer.stop_reason)
    return Replay(run_id=run_id, model=model, calls=results)


def render(result: Replay) -> str:
    out = [f"replay of run {result.run_id}"
           + (f" with {result.model}" if result.model else " with the recorded models")]
    for call in result.calls:
        where = f" [{call.step}]" if call.step else ""
        models = (call.model if call.model == call.replay_model
                  else f"{call.model} -> {call.replay_model}")
        out.append(f"  {call.number:>3} {call.role:<13}{where} {models}: {call.verdict}")
        if call.verdict == "not kept":
            out.append("      its request was not kept (made before replay was recorded, or "
                       "older than CONDUCTOR_REPLAY_DAYS)")
            continue
        if call.error:
            out.append(f"      error: {call.error}")
            continue
        out.append(f"      recorded: {call.recorded_stop}, {call.recorded_tokens:,} tokens, "
                   f"${call.recorded_cost_usd:.4f}; replay: {call.replay_stop}, "
                   f"{call.replay_tokens:,} tokens, ${call.replay_cost_usd:.4f}")
        if call.verdict != "same" and call.recorded_tools != call.replay_tools:
            out += [f"      recorded tools: {', '.join(call.recorded_tools) or '-'}",
                    f"      replay tools:   {', '.join(call.replay_tools) or '-'}"]
        out += [f"      {line}" for line in call.diff]
    counts = result.counts
    total = len(result.calls)
    summary = ", ".join(f"{counts[k]} {k}" for k in
                        ("same", "same tools", "differs", "failed", "not kept") if k in counts)
    answered = result.answered
    out += ["", f"{total} calls: {summary or 'none'}; the {len(answered)} answered cost "
                f"${sum(c.recorded_cost_usd for c in answered):.4f} recorded, "
                f"${sum(c.replay_cost_usd for c in answered):.4f} in the replay"]
    return "\n".join(out)
