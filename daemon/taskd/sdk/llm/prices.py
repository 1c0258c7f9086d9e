"""What a call cost: tokens times the model's price (``[llm] prices``), exact to the token."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from taskd.config import LLMPrice

MILLION = Decimal(1_000_000)
CACHE_WRITE_FACTOR = Decimal("1.25")  # 5-minute cache writes cost 1.25x input
CACHE_WRITE_1H_FACTOR = Decimal("2")  # 1-hour cache writes cost 2x input
CACHE_READ_FACTOR = Decimal("0.1")
BATCH_FACTOR = Decimal("0.5")  # Message Batches cost half, every kind of token
# "claude-haiku-4-5-20251001" and "claude-3-5-haiku-latest" take "claude-haiku-4-5"'s and
# "claude-3-5-haiku"'s price: a date or -latest after a priced id.
_VERSION_SUFFIX = re.compile(r"-(\d{8}|latest)$")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, as the API's ``usage`` block counts them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0
    """Of ``cache_write_tokens``, those written to the 1-hour cache (priced higher)."""

    @classmethod
    def of(cls, usage: object) -> Usage:
        """From an SDK ``Usage`` (or a dict of one); absent counts are 0."""

        def count(of: object, name: str) -> int:
            value = of.get(name) if isinstance(of, Mapping) else getattr(of, name, None)
            return int(value) if isinstance(value, int) and value > 0 else 0

        # usage.cache_creation splits the writes by cache lifetime (absent: all 5 minutes)
        split = (
            usage.get("cache_creation")
            if isinstance(usage, Mapping)
            else getattr(usage, "cache_creation", None)
        )
        written = count(usage, "cache_creation_input_tokens")
        return cls(
            count(usage, "input_tokens"),
            count(usage, "output_tokens"),
            written,
            count(usage, "cache_read_input_tokens"),
            min(written, count(split, "ephemeral_1h_input_tokens")) if split else 0,
        )

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_tokens
            + self.cache_read_tokens
        )


def price_of(model: str, prices: Mapping[str, LLMPrice]) -> LLMPrice | None:
    """The model's price: its own entry, else that of the id without its date (or -latest)."""
    price = prices.get(model)
    if price is None:
        price = prices.get(_VERSION_SUFFIX.sub("", model))
    return price


def cost_of(usage: Usage, price: LLMPrice, *, batch: bool = False) -> Decimal:
    """Dollars, exact (Decimal): each kind of token at its price per million."""
    input_price = Decimal(str(price.input))
    cache_write = (
        Decimal(str(price.cache_write))
        if price.cache_write is not None
        else input_price * CACHE_WRITE_FACTOR
    )
    cache_read = (
        Decimal(str(price.cache_read))
        if price.cache_read is not None
        else input_price * CACHE_READ_FACTOR
    )
    cache_write_1h = (
        Decimal(str(price.cache_write_1h))
        if price.cache_write_1h is not None
        else input_price * CACHE_WRITE_1H_FACTOR
    )
    cost = (
        usage.input_tokens * input_price
        + usage.output_tokens * Decimal(str(price.output))
        + (usage.cache_write_tokens - usage.cache_write_1h_tokens) * cache_write
        + usage.cache_write_1h_tokens * cache_write_1h
        + usage.cache_read_tokens * cache_read
    ) / MILLION
    return cost * BATCH_FACTOR if batch else cost
