"""The one definition of "nearest" size, and each upstream's normalisation, with
what each upstream accepts taken from the catalog file (its one home)."""

from __future__ import annotations

import pytest

from provider_svc.adapters.openai import upstream_size
from provider_svc.servicer import to_domain
from provider_svc.sizes import MAX_SIDE, Size, SizeRange, nearest, nearest_in_range, nearest_ratio, requested
from quantized_runtime.sizes import AcceptedSizes, accepted_sizes, parse_size
from tests.provider.conftest import generate_request

TITAN = "amazon.titan-image-generator-v2:0"


def accepted(model: str) -> AcceptedSizes:
    return to_domain(generate_request(model)).sizes


def size_range(model: str) -> SizeRange:
    rules = to_domain(generate_request(model)).size_range
    assert rules is not None
    return rules


def sizes(*labels: str) -> tuple[Size, ...]:
    parsed = accepted_sizes(labels)
    return parsed.exact or parsed.ratios


STABILITY_RATIOS = accepted("stability.stable-image-core-v1:0").ratios
IMAGEN_RATIOS = accepted("imagen-4.0-generate-001").ratios
FLASH_IMAGE_RATIOS = accepted("gemini-2.5-flash-image").ratios
TITAN_SIZES = accepted(TITAN).exact
NOVA_SIZES = size_range("amazon.nova-canvas-v1:0")


def test_requested_sizes_are_clamped_per_side() -> None:
    assert requested("99999x10") == Size(MAX_SIDE, 10)
    assert requested("auto") == Size(1024, 1024)


def test_nearest_prefers_the_aspect_ratio_then_the_area() -> None:
    candidates = sizes("1024x1024", "512x512", "1536x1024")
    assert nearest(Size(600, 600), candidates) == Size(512, 512)
    assert nearest(Size(900, 900), candidates) == Size(1024, 1024)
    # 3:2 wins over a closer area at the wrong ratio.
    assert nearest(Size(300, 200), candidates) == Size(1536, 1024)


def test_ratio_distance_is_symmetric_on_a_log_scale() -> None:
    # 2:1 and 1:2 are equally far from 1:1; the first listed candidate wins a tie.
    assert nearest(Size(1000, 1000), sizes("2:1", "1:2")) == Size(2, 1)
    assert nearest(Size(1000, 1000), sizes("1:2", "2:1")) == Size(1, 2)


def test_nearest_needs_candidates() -> None:
    with pytest.raises(ValueError):
        nearest(Size(1, 1), [])


@pytest.mark.parametrize(("requested", "expected"), [
    ("1024x1024", "1:1"), ("auto", "1:1"), ("1920x1080", "16:9"), ("1080x1920", "9:16"),
    ("2560x1080", "21:9"), ("1080x2560", "9:21"), ("1200x800", "3:2"), ("800x1000", "4:5"),
    ("1000x800", "5:4"), ("4096x1", "21:9"), ("1x4096", "9:21"), ("1x1", "1:1"),
])
def test_stability_aspect_ratios(requested: str, expected: str) -> None:
    assert nearest_ratio(requested, STABILITY_RATIOS) == expected


@pytest.mark.parametrize(("requested", "expected"), [
    ("1920x1080", "16:9"), ("4096x1", "16:9"), ("1x4096", "9:16"), ("1100x1000", "1:1"),
    ("1300x1000", "4:3"), ("1000x1300", "3:4"), ("auto", "1:1"),
])
def test_imagen_ratios(requested: str, expected: str) -> None:
    assert nearest_ratio(requested, IMAGEN_RATIOS) == expected


@pytest.mark.parametrize(("requested", "expected"), [
    ("4096x1", "21:9"), ("1x4096", "9:16"), ("1000x1500", "2:3"), ("1500x1000", "3:2"),
])
def test_flash_image_ratios(requested: str, expected: str) -> None:
    assert nearest_ratio(requested, FLASH_IMAGE_RATIOS) == expected


@pytest.mark.parametrize(("requested", "expected"), [
    ("1024x1024", "1024x1024"), ("1x1", "512x512"), ("4096x4096", "1024x1024"), ("4096x1", "704x320"),
    ("1x4096", "320x704"), ("1173x640", "1173x640"), ("1000x600", "1280x768"), ("700x1000", "768x1152"),
    ("2000x3000", "768x1152"),
])
def test_titan_fixed_sizes(requested: str, expected: str) -> None:
    assert str(nearest(Size(*map(int, requested.split("x"))), TITAN_SIZES)) == expected


@pytest.mark.parametrize(("requested", "expected"), [
    ("1024x1024", "1024x1024"), ("2048x2048", "2032x2032"), ("4096x4096", "2032x2032"),
    ("1x1", "320x320"), ("4096x1", "1280x320"), ("1x4096", "320x1280"), ("100x1000", "320x1280"),
    ("4096x1024", "4080x1024"),
    ("1000x1000", "1008x1008"), ("auto", "1024x1024"),
])
def test_nova_rules(requested: str, expected: str) -> None:
    assert str(nearest_in_range(requested, NOVA_SIZES)) == expected


@pytest.mark.parametrize("width", [1, 2, 15, 16, 319, 320, 333, 1000, 2047, 2049, 3000, 4096, 50000])
@pytest.mark.parametrize("height", [1, 7, 320, 999, 2048, 4096, 99999])
def test_every_nova_result_obeys_the_rules(width: int, height: int) -> None:
    result = nearest_in_range(f"{width}x{height}", NOVA_SIZES)
    assert NOVA_SIZES.allows(result)


@pytest.mark.parametrize(("model", "wanted", "expected"), [
    ("gpt-image-1", "auto", "auto"), ("gpt-image-1", "3840x2160", "1536x1024"),
    ("gpt-image-1", "1x4096", "1024x1536"), ("gpt-image-1", "64x64", "1024x1024"),
    ("dall-e-3", "auto", "1024x1024"), ("dall-e-3", "1920x1080", "1792x1024"),
    ("dall-e-2", "4096x1", "256x256"), ("dall-e-2", "600x600", "512x512"),
])
def test_openai_sizes(model: str, wanted: str, expected: str) -> None:
    assert upstream_size(to_domain(generate_request(model, size=wanted))) == expected
    if expected != "auto":
        assert parse_size(expected) in accepted(model).exact
