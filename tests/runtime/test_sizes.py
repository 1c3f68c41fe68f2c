"""The size grammar has one home: the proto's field rule, read by quantized_runtime.sizes."""

from __future__ import annotations

import pytest

from edge.validation import RequestValidator
from quantized_runtime.errors import ServiceError
from quantized_runtime.sizes import AUTO, DEFAULT_SIZE, AcceptedSizes, Size, accepted_sizes, parse_size

VALIDATOR = RequestValidator()


def test_parse_size() -> None:
    assert parse_size("1792x1024") == Size(1792, 1024)
    assert parse_size(" 512X256 ") == Size(512, 256)
    assert parse_size("auto") is None and parse_size("big") is None
    assert parse_size("") == Size(1024, 1024)


def _edge_accepts(size: str) -> bool:
    try:
        VALIDATOR.from_json({"model": "m", "prompt": "p", "size": size})
    except ServiceError:
        return False
    return True


@pytest.mark.parametrize("size", [
    "1024x1024", "1x1", "99999x99999", "auto", "0x0", "0x5", "100000x1", "x", "1024x",
    "-1x5", "1.5x2", "autox", "12x34x56", "01x5",
])
def test_the_parser_accepts_exactly_what_the_edge_validates(size: str) -> None:
    assert (parse_size(size) is not None or size == AUTO) == _edge_accepts(size)


def test_the_default_is_the_contracts() -> None:
    assert VALIDATOR.from_json({"model": "m", "prompt": "p"}).size == DEFAULT_SIZE == "1024x1024"


def test_accepted_sizes_grammar() -> None:
    assert accepted_sizes(("1024x1024", "3:2", "2K", "auto")) == AcceptedSizes(
        exact=(Size(1024, 1024),), ratios=(Size(3, 2),), tiers=("2K",), auto=True)
    assert accepted_sizes(("any",)).any_size
    with pytest.raises(ValueError, match="'up to 2048x2048' is not a size"):
        accepted_sizes(("up to 2048x2048",))
