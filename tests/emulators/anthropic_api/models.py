"""The model table: every model id the stand-in knows, with its limits.

This is the one place to add or change a model. Values follow the shape of Anthropic's
published model overview (output limit, context window) and prompt-caching guide (minimum
cacheable prompt length).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    id: str
    max_output_tokens: int
    min_cacheable_tokens: int
    context_window: int = 200_000


_SPECS = (
    ModelSpec("claude-opus-5-5", max_output_tokens=32_000, min_cacheable_tokens=1024),
    ModelSpec("claude-sonnet-5-5", max_output_tokens=64_000, min_cacheable_tokens=1024),
    ModelSpec("claude-haiku-5-5", max_output_tokens=64_000, min_cacheable_tokens=2048),
    ModelSpec("claude-opus-4-1", max_output_tokens=32_000, min_cacheable_tokens=1024),
    ModelSpec("claude-sonnet-4-5", max_output_tokens=64_000, min_cacheable_tokens=1024),
    ModelSpec("claude-haiku-4-5", max_output_tokens=64_000, min_cacheable_tokens=2048),
)

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in _SPECS}


def find_model(model_id: str) -> ModelSpec | None:
    """The spec for `model_id`, or None when the stand-in does not serve that model."""
    return MODELS.get(model_id)
