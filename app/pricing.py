"""Model prices: the one table, and the cost of a call computed from its reported usage.

Prices are USD per million tokens, from Anthropic's public price list. To update them, edit
`PRICES` below (https://www.anthropic.com/pricing, "API" section). Cache prices follow the
documented multipliers of the input price: 5-minute cache writes 1.25x, 1-hour writes 2x,
cache reads 0.1x; `_listed` derives them so a new model needs only its input/output price.

An unknown model is an error, never a silent $0: a budget that cannot price a call cannot
guard it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

MILLION = 1_000_000


class UnknownModelPrice(LookupError):
    """No price is known for a model id; the message says where to add one."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


def _listed(input_usd: float, output_usd: float) -> Price:
    return Price(
        input=input_usd,
        output=output_usd,
        cache_write_5m=input_usd * 1.25,
        cache_write_1h=input_usd * 2.0,
        cache_read=input_usd * 0.1,
    )


# Update here when prices change or a model is added (https://www.anthropic.com/pricing).
PRICES: dict[str, Price] = {
    "claude-opus-5-5": _listed(5.0, 25.0),
    "claude-sonnet-5-5": _listed(3.0, 15.0),
    "claude-haiku-5-5": _listed(1.0, 5.0),
    "claude-opus-4-5": _listed(5.0, 25.0),
    "claude-opus-4-1": _listed(15.0, 75.0),
    "claude-opus-4-0": _listed(15.0, 75.0),
    "claude-sonnet-4-5": _listed(3.0, 15.0),
    "claude-sonnet-4-0": _listed(3.0, 15.0),
    "claude-haiku-4-5": _listed(1.0, 5.0),
    "claude-3-5-haiku": _listed(0.8, 4.0),
}

# Dated snapshots ("claude-sonnet-4-5-20250929") and "-latest" aliases share their base price.
_SUFFIX = re.compile(r"(-\d{8}|-latest)$")


class UsageLike(Protocol):
    """The fields of `anthropic.types.Usage` that cost depends on (cache fields may be None)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_creation_input_tokens(self) -> int | None: ...
    @property
    def cache_read_input_tokens(self) -> int | None: ...


def price_for(model: str) -> Price:
    price = PRICES.get(model) or PRICES.get(_SUFFIX.sub("", model))
    if price is None:
        raise UnknownModelPrice(
            f"no price is known for model {model!r}; add it to PRICES in app/pricing.py "
            f"(known: {', '.join(sorted(PRICES))})"
        )
    return price


def cost(model: str, usage: UsageLike) -> float:
    """The USD cost of one call from the usage the API reported."""
    price = price_for(model)
    creation = usage.cache_creation_input_tokens or 0
    # The 5m/1h split, when the API reports it; otherwise every write is priced as 5-minute.
    split = getattr(usage, "cache_creation", None)
    one_hour = min(int(getattr(split, "ephemeral_1h_input_tokens", 0) or 0), creation)
    five_minutes = creation - one_hour
    total = (
        (usage.input_tokens or 0) * price.input
        + (usage.output_tokens or 0) * price.output
        + five_minutes * price.cache_write_5m
        + one_hour * price.cache_write_1h
        + (usage.cache_read_input_tokens or 0) * price.cache_read
    )
    return total / MILLION


def worst_case_cost(model: str, input_tokens: int, output_tokens: int,
                    cache_ttl: str = "5m") -> float:
    """An upper bound for a call: every input token written to the cache, all output used."""
    price = price_for(model)
    write = price.cache_write_1h if cache_ttl == "1h" else price.cache_write_5m
    return (input_tokens * max(price.input, write) + output_tokens * price.output) / MILLION
