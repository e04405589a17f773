from __future__ import annotations

import pytest
from anthropic.types import CacheCreation, Usage

from app.pricing import PRICES, UnknownModelPrice, cost, price_for, worst_case_cost


def test_listed_prices_per_million_tokens() -> None:
    assert (price_for("claude-opus-5-5").input, price_for("claude-opus-5-5").output) == (5, 25)
    assert (price_for("claude-sonnet-5-5").input, price_for("claude-sonnet-5-5").output) == (3, 15)
    assert (price_for("claude-haiku-5-5").input, price_for("claude-haiku-5-5").output) == (1, 5)
    for older in ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"):
        assert older in PRICES


def test_cache_prices_follow_the_documented_multipliers() -> None:
    for price in PRICES.values():
        assert price.cache_read == pytest.approx(price.input * 0.1)
        assert price.cache_write_5m == pytest.approx(price.input * 1.25)
        assert price.cache_write_1h == pytest.approx(price.input * 2)


def test_cost_of_each_kind_of_token() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000,
                  cache_creation_input_tokens=1_000_000, cache_read_input_tokens=1_000_000)
    # 3 input + 15 output + 3.75 5-minute write + 0.30 read
    assert cost("claude-sonnet-5-5", usage) == pytest.approx(22.05)


def test_cache_reads_cost_a_tenth_of_input() -> None:
    read = Usage(input_tokens=0, output_tokens=0, cache_read_input_tokens=10_000)
    plain = Usage(input_tokens=10_000, output_tokens=0)
    assert cost("claude-opus-5-5", read) == pytest.approx(cost("claude-opus-5-5", plain) * 0.1)


def test_one_hour_writes_are_priced_from_the_reported_split() -> None:
    usage = Usage(input_tokens=0, output_tokens=0, cache_creation_input_tokens=300_000,
                  cache_creation=CacheCreation(ephemeral_5m_input_tokens=100_000,
                                               ephemeral_1h_input_tokens=200_000))
    # 100k at 1.25 and 200k at 2.00 per MTok (haiku input is $1)
    assert cost("claude-haiku-5-5", usage) == pytest.approx(0.125 + 0.4)


def test_missing_cache_fields_count_as_zero() -> None:
    usage = Usage(input_tokens=2_000, output_tokens=100,
                  cache_creation_input_tokens=None, cache_read_input_tokens=None)
    assert cost("claude-haiku-5-5", usage) == pytest.approx((2_000 * 1 + 100 * 5) / 1e6)


def test_dated_snapshots_share_their_base_price() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == price_for("claude-sonnet-4-5")


def test_unknown_model_is_an_error_not_free() -> None:
    with pytest.raises(UnknownModelPrice, match=r"claude-mystery-9.*app/pricing\.py"):
        cost("claude-mystery-9", Usage(input_tokens=1, output_tokens=1))


def test_worst_case_prices_every_input_token_as_a_cache_write() -> None:
    assert worst_case_cost("claude-opus-5-5", 1_000_000, 1_000_000) == pytest.approx(6.25 + 25)
    assert worst_case_cost("claude-opus-5-5", 1_000_000, 0, "1h") == pytest.approx(10)
