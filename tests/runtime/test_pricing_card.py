"""Pricing generated images from a quote: each branch of the rule on
quantized.catalog.v1.UsagePriceCard, one half-up rounding, refused cards, and
the charge's zero rule and cap (price_generation, as the edge charges)."""

from __future__ import annotations

import pytest

from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2
from quantized_runtime.pricing import price_generation, price_usage

# gpt-image-1 high 1024x1024 at 16,000,000 micro-credits per USD: $5/M input,
# $40/M output, 4160 worst-case output tokens per image, 2000 worst-case input tokens.
GPT_IMAGE_1 = catalog_pb2.UsagePriceCard(
    input_per_million_tokens="80000000", output_per_million_tokens="640000000",
    worst_case_output_per_image="2662400", worst_case_input="160000")


def usage(**tokens: int) -> images_pb2.UpstreamUsage:
    return images_pb2.UpstreamUsage(**tokens)


def card(input_rate="0", output_rate="0", worst_output="0", worst_input="0") -> catalog_pb2.UsagePriceCard:
    return catalog_pb2.UsagePriceCard(
        input_per_million_tokens=input_rate, output_per_million_tokens=output_rate,
        worst_case_output_per_image=worst_output, worst_case_input=worst_input)


def test_input_and_output_tokens_at_their_rates():
    # The recorded gpt-image-1 answer: 238 x 80 + 4160 x 640 micro-credits.
    measured = usage(input_tokens=238, output_tokens=4160, total_tokens=4398)
    assert price_usage(GPT_IMAGE_1, 1, measured) == 2_681_440


def test_one_side_reported_counts_the_other_as_zero():
    assert price_usage(GPT_IMAGE_1, 1, usage(output_tokens=4160)) == 2_662_400
    assert price_usage(GPT_IMAGE_1, 1, usage(input_tokens=238, total_tokens=99_999)) == 19_040


def test_a_reported_zero_is_a_measurement_not_an_absence():
    # input_tokens=0 is present, so the total is not used.
    assert price_usage(GPT_IMAGE_1, 1, usage(input_tokens=0, total_tokens=1000)) == 0


def test_only_a_total_is_priced_at_the_higher_rate():
    assert price_usage(GPT_IMAGE_1, 1, usage(total_tokens=1000)) == 640_000
    higher_input = card(input_rate="900", output_rate="100")
    assert price_usage(higher_input, 1, usage(total_tokens=1_000_000)) == 900


def test_no_tokens_is_the_worst_case_for_the_images_produced():
    assert price_usage(GPT_IMAGE_1, 1, usage()) == 2_662_400 + 160_000
    assert price_usage(GPT_IMAGE_1, 3, usage()) == 3 * 2_662_400 + 160_000


# The quote for two gpt-image-1 high 1024x1024 images, and for two $0.040 images.
TOKEN_QUOTE = catalog_pb2.QuotePriceResponse(max_micro_credits=2 * 2_662_400 + 160_000,
                                             per_image_micro_credits=2_662_400, usage_priced=True,
                                             usage_price=GPT_IMAGE_1)
IMAGE_QUOTE = catalog_pb2.QuotePriceResponse(max_micro_credits=2 * 640_000, per_image_micro_credits=640_000)


@pytest.mark.parametrize("images", [0, -1])
@pytest.mark.parametrize("quote", [TOKEN_QUOTE, IMAGE_QUOTE], ids=["per_token", "per_image"])
def test_no_images_cost_nothing(images, quote):
    assert price_generation(quote, images, usage(input_tokens=100, output_tokens=5000)) == 0
    assert price_generation(quote, images, usage()) == 0


def test_a_charge_is_the_cards_price_or_the_per_image_price():
    assert price_generation(TOKEN_QUOTE, 1, usage(input_tokens=238, output_tokens=4160)) == 2_681_440
    assert price_generation(IMAGE_QUOTE, 2, usage()) == 1_280_000


def test_a_charge_never_exceeds_the_quote():
    assert price_generation(TOKEN_QUOTE, 2, usage(output_tokens=10**9)) == TOKEN_QUOTE.max_micro_credits
    assert price_generation(IMAGE_QUOTE, 5, usage()) == IMAGE_QUOTE.max_micro_credits


@pytest.mark.parametrize(("priced", "images", "measured", "expected"), [
    (card(input_rate="500000"), 1, usage(input_tokens=1), 1),  # 0.5 -> 1
    (card(input_rate="499999"), 1, usage(input_tokens=1), 0),  # 0.499999 -> 0
    (card(output_rate="2500000"), 1, usage(output_tokens=1), 3),  # 2.5 -> 3, not banker's 2
    (card(input_rate="1500000"), 1, usage(total_tokens=1), 2),  # 1.5 -> 2
    (card(worst_output="0.25"), 2, usage(), 1),  # 2 x 0.25 = 0.5 -> 1
    (card(worst_output="1.2", worst_input="0.2"), 2, usage(), 3),  # 2.4 + 0.2 = 2.6 -> 3
])
def test_rounding_is_half_up(priced, images, measured, expected):
    assert price_usage(priced, images, measured) == expected


def test_the_sum_is_rounded_once():
    # $0.3/M is 4.8 micro-credits a token: 4.8 + 4.8 = 9.6 -> 10, not 5 + 5.
    assert price_usage(card(input_rate="4800000", output_rate="4800000"), 1,
                       usage(input_tokens=1, output_tokens=1)) == 10
    assert price_usage(card(input_rate="4400000", output_rate="4400000"), 1,
                       usage(input_tokens=1, output_tokens=1)) == 9  # 8.8, not 4 + 4


def test_large_counts_are_exact():
    # (2**63 - 1) / 10**6 = 9223372036854.775807: a float would lose the fraction.
    assert price_usage(card(output_rate="1"), 1, usage(output_tokens=2**63 - 1)) == 9_223_372_036_855
    assert price_usage(card(output_rate="0.000001"), 1, usage(output_tokens=2**63 - 1)) == 9_223_372


@pytest.mark.parametrize("field", list(catalog_pb2.UsagePriceCard.DESCRIPTOR.fields_by_name))
@pytest.mark.parametrize("text", ["", "abc", "1,5", "NaN", "Infinity", "-1"])
def test_a_bad_card_is_refused_whatever_the_usage(field, text):
    bad = catalog_pb2.UsagePriceCard()
    bad.CopyFrom(GPT_IMAGE_1)
    setattr(bad, field, text)
    for measured in (usage(input_tokens=1, output_tokens=1), usage(total_tokens=1), usage()):
        with pytest.raises(ValueError, match=field):
            price_usage(bad, 1, measured)
