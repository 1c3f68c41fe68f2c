"""Prices: a model's catalog `cost` plus a request or its usage -> integer micro-credits.

Pure domain code. The rules (also in docs/catalog.md):

- Conversion: decimal USD x credits-per-USD, rounded half up to a whole
  micro-credit. A per-image price is converted once per image and multiplied by
  the image count; a token price is summed exactly and rounded once.
- Size: read by the public grammar (quantized_runtime.sizes); empty means its
  default. An exact key of the model's table
  wins; "auto" takes the most expensive size; another WxH is priced at the
  smallest listed size whose area covers it (the table's sizes are area tiers);
  anything else (larger than every tier, unparsable) takes the most expensive size.
- Quality: unset takes the table's `default_quality` when it declares one; "auto",
  an unknown value, or unset without a default takes the most expensive quality
  for that size. A fallback never prices below a listed price and never at zero
  unless the catalog says zero.
- Usage price card (per_token only): the model's rates for a size and quality in
  exact micro-credits (token rates per million, the worst-case output of one
  image by quality and size with the same lookup rules, the worst-case input).
- Quote (before the call): the worst case for n images, with the per-image price
  or, for per_token models, the card: n x the worst-case output per image plus
  the worst-case input once. The charge after the call is priced from the quote
  by quantized_runtime.pricing.price_generation (at the edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import TypeVar

from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2
from quantized_runtime.pricing import EXACT_CONTEXT, price_usage
from quantized_runtime.sizes import AUTO, normalise_size, parse_size

from catalog_svc.catalog_file import (
    Cost,
    PerImageBySizeCost,
    PerImageBySizeQualityCost,
    PerImageCost,
    PerTokenCost,
)

DEFAULT_CREDITS_PER_USD = 16_000_000
_PER_MILLION = -6

V = TypeVar("V", Decimal, int)


class Pricer:
    def __init__(self, credits_per_usd: int = DEFAULT_CREDITS_PER_USD) -> None:
        if credits_per_usd <= 0:
            raise ValueError("credits_per_usd must be positive")
        self._rate = Decimal(credits_per_usd)

    def to_micro_credits(self, usd: Decimal) -> int:
        return int((usd * self._rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    def quote(self, cost: Cost, size: str | None, quality: str | None,
              n: int) -> catalog_pb2.QuotePriceResponse:
        """The worst case of n images, with what prices the charge after the call:
        the per-image price, or for token-priced models the usage price card (and
        the worst-case output of one image as the per-image price)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        if isinstance(cost, PerTokenCost):
            worst_output_usd = _worst_output_usd_per_image(cost, size, quality)
            card = self._card(cost, worst_output_usd)
            # The worst case is what n images cost when the upstream reports no tokens.
            return catalog_pb2.QuotePriceResponse(
                max_micro_credits=price_usage(card, n, images_pb2.UpstreamUsage()),
                per_image_micro_credits=self.to_micro_credits(worst_output_usd),
                usage_priced=True, usage_price=card)
        per_image = self.to_micro_credits(image_price_usd(cost, size, quality))
        return catalog_pb2.QuotePriceResponse(max_micro_credits=per_image * n,
                                              per_image_micro_credits=per_image)

    def _card(self, cost: PerTokenCost, worst_output_usd_per_image: Decimal) -> catalog_pb2.UsagePriceCard:
        """The rates that price a token-priced image model's usage, in exact micro-credits."""
        with localcontext(EXACT_CONTEXT):
            return catalog_pb2.UsagePriceCard(
                input_per_million_tokens=_decimal_text(cost.usd_per_million_input_tokens * self._rate),
                output_per_million_tokens=_decimal_text(cost.usd_per_million_output_tokens * self._rate),
                worst_case_output_per_image=_decimal_text(worst_output_usd_per_image * self._rate),
                worst_case_input=_decimal_text(_input_usd(cost, cost.worst_case_input_tokens) * self._rate),
            )


def image_price_usd(cost: Cost, size: str | None, quality: str | None) -> Decimal:
    """The USD price of one image of a per-image cost shape."""
    if isinstance(cost, PerImageCost):
        return cost.usd_per_image
    if isinstance(cost, PerImageBySizeCost):
        return pick_by_size(cost.usd_per_image, size)
    if isinstance(cost, PerImageBySizeQualityCost):
        return pick_by_quality_and_size(cost.usd_per_image, quality, size, cost.default_quality)
    raise ValueError("a per_token cost has no per-image price")


def _worst_output_usd_per_image(cost: PerTokenCost, size: str | None, quality: str | None) -> Decimal:
    bound = cost.worst_case_output_tokens_per_image
    if bound is None:
        raise ValueError("this token-priced model has no worst-case image bound")
    tokens = bound if isinstance(bound, int) else pick_by_quality_and_size(bound, quality, size, None)
    with localcontext(EXACT_CONTEXT):
        return (cost.usd_per_million_output_tokens * tokens).scaleb(_PER_MILLION)


def _input_usd(cost: PerTokenCost, tokens: int) -> Decimal:
    with localcontext(EXACT_CONTEXT):
        return (cost.usd_per_million_input_tokens * tokens).scaleb(_PER_MILLION)


def _decimal_text(value: Decimal) -> str:
    """Plain decimal text without an exponent or trailing zeros ("80000000", "3.2")."""
    return format(value.normalize(), "f")


def _area(size: str) -> int | None:
    parsed = parse_size(size)
    return parsed.width * parsed.height if parsed is not None else None


def pick_by_size(table: Mapping[str, V], size: str | None) -> V:
    """The table's value for a size, by the documented fallback rules."""
    wanted = normalise_size(size or "")
    if wanted in table:
        return table[wanted]
    most_expensive = max(table.values())
    wanted_area = _area(wanted)
    if wanted == AUTO or wanted_area is None:
        return most_expensive
    covering = [(area, value) for key, value in table.items()
                if (area := _area(key)) is not None and area >= wanted_area]
    if not covering:
        return most_expensive
    smallest_area = min(area for area, _ in covering)
    return max(value for area, value in covering if area == smallest_area)


def pick_by_quality_and_size(table: Mapping[str, Mapping[str, V]], quality: str | None,
                             size: str | None, default_quality: str | None) -> V:
    wanted = (quality or "").strip().lower() or default_quality
    if wanted is not None and wanted in table:
        return pick_by_size(table[wanted], size)
    return max(pick_by_size(by_size, size) for by_size in table.values())
