"""The reviewer's verdict on a step: schema, tool definition and parsing."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Verdict(StrEnum):
    ACCEPT = "accept"
    REVISE = "revise"


class RiskFlag(StrEnum):
    SECURITY = "security"
    DATA_MIGRATION = "data_migration"
    PUBLIC_API = "public_api"
    DEPENDENCY_CHANGE = "dependency_change"
    PERFORMANCE = "performance"
    BREAKING_CHANGE = "breaking_change"


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    comments: list[str] = Field(max_length=20)
    risk_flags: list[RiskFlag] = Field(max_length=6)
    risk_notes: str = Field(max_length=2000)


def review_tool() -> dict[str, Any]:
    return {
        "name": "submit_review",
        "description": "Submit your verdict on the step's diff. `revise` sends your comments "
                       "back to the worker; `accept` lets the change be committed.",
        "input_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["verdict", "comments", "risk_flags", "risk_notes"],
            "properties": {
                "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
                "comments": {"type": "array", "items": {"type": "string"},
                             "description": "What to change and where (empty to accept)."},
                "risk_flags": {"type": "array",
                               "items": {"type": "string",
                                         "enum": [f.value for f in RiskFlag]}},
                "risk_notes": {"type": "string",
                               "description": "One line per flag: what a human should check."},
            },
        },
    }


def parse_review(data: Any) -> tuple[Review | None, str | None]:
    try:
        return Review.model_validate(data), None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        return None, problems
