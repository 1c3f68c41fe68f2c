"""The price of generated images, from the catalog's quote.

The catalog owns the rates and hands them out with a quote (`QuotePriceResponse`):
the price of one image, or, for a token-priced model, a usage price card. The
catalog builds its worst-case quote with `price_usage` and the edge charges
with `price_generation`, so each rule has one implementation:

- `price_generation`: no images generated (all flagged, or none): 0; otherwise
  the card's price of the usage, or the per-image price times the images; never
  more than the quote's maximum, which is what was held.
- `price_usage`, the rule documented on `quantized.catalog.v1.UsagePriceCard`:
  input or output tokens reported: input x input rate + output x output rate, per million;
  only a total reported: total x the higher rate, per million;
  no tokens reported: images x worst-case output per image + worst-case input.

The card's values are micro-credits as exact decimal text; the sum is computed
exactly and rounded half up to a whole micro-credit once.
"""

from __future__ import annotations

from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    InvalidOperation,
    localcontext,
)

from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2

# Sums and products of decimals and integers are exact at this precision, so the
# card's builder (the catalog) and its reader round only once, at the end. Never
# divide under it (an inexact quotient would need MAX_PREC digits): "per million"
# is an exact shift of the exponent.
EXACT_CONTEXT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_UP)
_PER_MILLION = -6
_WHOLE = Decimal(1)


def price_generation(quote: catalog_pb2.QuotePriceResponse, images: int,
                     usage: images_pb2.UpstreamUsage) -> int:
    """Micro-credits charged for `images` generated images under `quote`."""
    if images <= 0:
        return 0
    if quote.usage_priced:
        price = price_usage(quote.usage_price, images, usage)
    else:
        price = quote.per_image_micro_credits * images
    return max(0, min(price, quote.max_micro_credits))


def price_usage(card: catalog_pb2.UsagePriceCard, images: int,
                usage: images_pb2.UpstreamUsage) -> int:
    """Micro-credits for `images` (at least one) generated images that used `usage`.

    Raises ValueError when a card value is not a finite, non-negative decimal; the
    whole card is checked whatever the usage, so a bad card fails every time.
    """
    input_rate = _card_value(card, "input_per_million_tokens")
    output_rate = _card_value(card, "output_per_million_tokens")
    worst_output_per_image = _card_value(card, "worst_case_output_per_image")
    worst_input = _card_value(card, "worst_case_input")
    with localcontext(EXACT_CONTEXT):
        if usage.HasField("input_tokens") or usage.HasField("output_tokens"):
            per_million = input_rate * usage.input_tokens + output_rate * usage.output_tokens
            price = per_million.scaleb(_PER_MILLION)
        elif usage.HasField("total_tokens"):
            price = (max(input_rate, output_rate) * usage.total_tokens).scaleb(_PER_MILLION)
        else:
            price = worst_output_per_image * images + worst_input
        return int(price.quantize(_WHOLE))


def _card_value(card: catalog_pb2.UsagePriceCard, field: str) -> Decimal:
    text = getattr(card, field)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"usage price card: {field} is not a decimal: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"usage price card: {field} must be a finite non-negative decimal: {text!r}")
    return value
