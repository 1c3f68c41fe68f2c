"""The pricing rules: four cost shapes, fallbacks, worst-case quotes, and the
price of actual usage from a quote (quantized_runtime.pricing, as the edge charges)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog_svc.catalog_file import (
    PerImageBySizeCost,
    PerImageBySizeQualityCost,
    PerImageCost,
    PerTokenCost,
    load_catalog_file,
)
from catalog_svc.pricing import Pricer
from catalog_svc.settings import BUNDLED_CATALOG_FILE
from quantized.common.v1 import images_pb2
from quantized_runtime.pricing import price_generation, price_usage

PRICER = Pricer()
COSTS = {model.id: model.cost for model in load_catalog_file(BUNDLED_CATALOG_FILE).models}

DALL_E_3 = COSTS["dall-e-3"]
GPT_IMAGE_1 = COSTS["gpt-image-1"]


def usd(value: str) -> int:
    """The spec's rate: 16,000,000 micro-credits per USD."""
    return int(Decimal(value) * 16_000_000)


def charged(cost, size: str, quality: str | None, images: int, **tokens: int) -> int:
    """What the edge charges for `images` images of a request for as many."""
    quote = PRICER.quote(cost, size, quality, max(images, 1))
    return price_generation(quote, images, images_pb2.UpstreamUsage(**tokens))


def priced_usage(cost, size: str, quality: str | None, images: int, **tokens: int) -> int:
    """The card's price of measured usage, before the charge's cap at the quote."""
    card = PRICER.quote(cost, size, quality, 1).usage_price
    return price_usage(card, images, images_pb2.UpstreamUsage(**tokens))


def test_spec_example_dall_e_3_standard_1024_is_640000():
    quote = PRICER.quote(DALL_E_3, "1024x1024", "standard", 1)
    assert quote.max_micro_credits == 640_000
    assert quote.per_image_micro_credits == 640_000
    assert quote.usage_priced is False
    assert charged(DALL_E_3, "1024x1024", "standard", 1) == 640_000


def test_the_rate_is_configurable():
    assert Pricer(credits_per_usd=1_000_000).quote(DALL_E_3, "1024x1024", "standard", 1).max_micro_credits == 40_000


def test_rounding_is_half_up_to_the_micro_credit():
    pricer = Pricer(credits_per_usd=1)
    assert pricer.to_micro_credits(Decimal("2.5")) == 3
    assert pricer.to_micro_credits(Decimal("2.4999")) == 2
    assert Pricer().to_micro_credits(Decimal("0.00000003125")) == 1  # 0.5 micro-credit


def test_per_image_shape_multiplies_by_n():
    cost = PerImageCost(type="per_image", usd_per_image=Decimal("0.065"))
    quote = PRICER.quote(cost, "1024x1024", None, 3)
    assert quote.per_image_micro_credits == usd("0.065")
    assert quote.max_micro_credits == 3 * usd("0.065")
    assert charged(cost, "", None, 2) == 2 * usd("0.065")


def test_per_image_by_size_shape():
    cost = COSTS["dall-e-2"]
    assert isinstance(cost, PerImageBySizeCost)
    assert PRICER.quote(cost, "256x256", None, 1).max_micro_credits == usd("0.016")
    assert PRICER.quote(cost, "512x512", None, 2).max_micro_credits == 2 * usd("0.018")


def test_per_image_by_size_quality_shape():
    assert isinstance(DALL_E_3, PerImageBySizeQualityCost)
    assert PRICER.quote(DALL_E_3, "1792x1024", "hd", 1).max_micro_credits == usd("0.120")
    assert PRICER.quote(DALL_E_3, "1024x1792", "standard", 1).max_micro_credits == usd("0.080")


def test_unset_quality_takes_the_declared_default():
    assert PRICER.quote(DALL_E_3, "1024x1024", None, 1).max_micro_credits == usd("0.040")


@pytest.mark.parametrize("quality", ["auto", "ultra", "low"])
def test_auto_or_unknown_quality_takes_the_most_expensive_quality(quality):
    assert PRICER.quote(DALL_E_3, "1024x1024", quality, 1).max_micro_credits == usd("0.080")


def test_auto_size_takes_the_most_expensive_size():
    assert PRICER.quote(DALL_E_3, "auto", "standard", 1).max_micro_credits == usd("0.080")
    assert PRICER.quote(COSTS["dall-e-2"], "auto", None, 1).max_micro_credits == usd("0.020")


def test_empty_size_is_the_api_default_1024x1024():
    assert PRICER.quote(DALL_E_3, "", "standard", 1).max_micro_credits == usd("0.040")


def test_an_unlisted_size_takes_the_smallest_tier_covering_its_area():
    nova = COSTS["amazon.nova-canvas-v1:0"]
    assert PRICER.quote(nova, "512x512", "standard", 1).max_micro_credits == usd("0.040")
    assert PRICER.quote(nova, "1280x720", "standard", 1).max_micro_credits == usd("0.040")
    assert PRICER.quote(nova, "1280x1024", "standard", 1).max_micro_credits == usd("0.060")
    assert PRICER.quote(nova, "2048x2048", "premium", 1).max_micro_credits == usd("0.080")


@pytest.mark.parametrize("size", ["4096x4096", "16:9", "huge", "2K"])
def test_an_oversized_or_unparsable_size_takes_the_most_expensive_size(size):
    assert PRICER.quote(DALL_E_3, size, "standard", 1).max_micro_credits == usd("0.080")


def test_fallbacks_never_price_at_zero():
    for cost in (DALL_E_3, COSTS["dall-e-2"], COSTS["amazon.titan-image-generator-v2:0"]):
        for size in ("auto", "1x1", "nonsense", ""):
            for quality in (None, "auto", "nonsense"):
                assert PRICER.quote(cost, size, quality, 1).max_micro_credits > 0


def test_per_token_quote_is_the_documented_worst_case():
    # gpt-image-1 high 1024x1024: 4160 output tokens at $40/M, plus 2000 input tokens at $5/M once.
    quote = PRICER.quote(GPT_IMAGE_1, "1024x1024", "high", 1)
    assert quote.usage_priced is True
    assert quote.per_image_micro_credits == usd("0.1664")
    assert quote.max_micro_credits == usd("0.1664") + usd("0.01")


def test_per_token_quote_for_large_sizes_and_auto():
    large = PRICER.quote(GPT_IMAGE_1, "1536x1024", "high", 2)
    assert large.max_micro_credits == 2 * usd("0.2496") + usd("0.01")
    assert PRICER.quote(GPT_IMAGE_1, "auto", "auto", 1).max_micro_credits == usd("0.2496") + usd("0.01")
    assert PRICER.quote(GPT_IMAGE_1, "1024x1024", None, 1).max_micro_credits == usd("0.1664") + usd("0.01")


def test_per_token_quote_with_a_single_bound():
    gemini = COSTS["gemini-2.5-flash-image"]
    quote = PRICER.quote(gemini, "", None, 1)
    assert quote.per_image_micro_credits == usd("0.0387")
    assert quote.max_micro_credits == usd("0.0387") + usd("0.0006")


def test_per_token_usage_is_tokens_times_rates():
    # The recorded gpt-image-1 answer: 238 input and 4160 output tokens.
    micro = priced_usage(GPT_IMAGE_1, "1024x1024", "high", 1,
                         input_tokens=238, output_tokens=4160, total_tokens=4398)
    assert micro == PRICER.to_micro_credits(Decimal("0.00119") + Decimal("0.1664"))
    assert micro == 2_681_440


def test_per_token_usage_with_only_a_total_uses_the_higher_rate():
    micro = priced_usage(GPT_IMAGE_1, "1024x1024", "low", 1, total_tokens=1000)
    assert micro == usd("0.04")


def test_per_token_usage_without_tokens_falls_back_to_the_worst_case():
    micro = charged(GPT_IMAGE_1, "1024x1024", "low", 1)
    assert micro == PRICER.quote(GPT_IMAGE_1, "1024x1024", "low", 1).max_micro_credits > 0


@pytest.mark.parametrize("cost", [DALL_E_3, GPT_IMAGE_1], ids=["per_image", "per_token"])
def test_zero_images_cost_nothing(cost):
    assert charged(cost, "1024x1024", "standard", 0, input_tokens=100, output_tokens=0) == 0


def test_token_prices_are_summed_exactly_then_rounded_once():
    cost = PerTokenCost(type="per_token", usd_per_million_input_tokens=Decimal("0.3"),
                        usd_per_million_output_tokens=Decimal("0.3"),
                        worst_case_output_tokens_per_image=1)
    # 1 + 1 tokens at $0.3/M is 9.6 micro-credits: rounded once -> 10, not 5 + 5.
    assert priced_usage(cost, "", None, 1, input_tokens=1, output_tokens=1) == 10


def test_the_usage_price_card_holds_exact_micro_credit_rates():
    card = PRICER.quote(GPT_IMAGE_1, "1024x1024", "high", 1).usage_price
    assert (card.input_per_million_tokens, card.output_per_million_tokens,
            card.worst_case_output_per_image, card.worst_case_input) == (
        "80000000", "640000000", "2662400", "160000")
    # Plain decimal text: no exponent, no trailing zeros, fractions kept exactly.
    unit = Pricer(credits_per_usd=1).quote(GPT_IMAGE_1, "1536x1024", "high", 1).usage_price
    assert (unit.input_per_million_tokens, unit.output_per_million_tokens,
            unit.worst_case_output_per_image, unit.worst_case_input) == ("5", "40", "0.2496", "0.01")


def test_a_token_quote_carries_its_card_and_a_per_image_quote_none():
    quote = PRICER.quote(GPT_IMAGE_1, "1024x1024", "low", 2)
    assert quote.usage_price == PRICER.quote(GPT_IMAGE_1, "1024x1024", "low", 1).usage_price
    assert quote.usage_price.worst_case_output_per_image == str(quote.per_image_micro_credits)
    assert not PRICER.quote(DALL_E_3, "1024x1024", "standard", 1).HasField("usage_price")
