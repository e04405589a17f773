"""Usage per role and model for the tracking comment and PR body, from the run's call ledger.

Counted as `conductor trace` counts them (app/budget.py): a call that got no answer is a
failed call, not a call."""

from __future__ import annotations

from typing import Any

from app.budget import model_calls
from app.report import UsageRow


async def usage_rows(redis: Any, run_id: str) -> list[UsageRow]:
    groups: dict[tuple[str, str], list[Any]] = {}
    for call in await model_calls(redis, run_id):
        groups.setdefault((call.role, call.model), []).append(call)
    order = ["orchestrator", "navigator", "implementer", "test_engineer", "refactorer", "infra",
             "reviewer"]
    rows = [
        UsageRow(
            role=role, model=model, calls=sum(c.error is None for c in calls),
            errors=sum(c.error is not None for c in calls),
            input_tokens=sum(c.input_tokens for c in calls),
            output_tokens=sum(c.output_tokens for c in calls),
            cache_read_tokens=sum(c.cache_read_input_tokens for c in calls),
            cache_write_tokens=sum(c.cache_creation_input_tokens for c in calls),
            cost_usd=sum(c.cost_usd for c in calls),
        )
        for (role, model), calls in groups.items()
    ]
    rows.sort(key=lambda r: (order.index(r.role) if r.role in order else len(order), r.model))
    return rows
