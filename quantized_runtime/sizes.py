"""Image sizes: the public grammar ("WxH" or "auto") and its default, and the
grammar of a catalog model's `sizes` list (what its upstream accepts).

The public rule is the contract's: `quantized.images.v1.GenerateRequest.size`
holds the pattern and the default as field rules, which the edge validates
with, and this module reads both from that descriptor. So the edge, the
catalog's pricing and provider_svc parse a size by one rule, and a change to it
is a change to the proto.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from quantized.common.v1 import field_rules_pb2
from quantized.images.v1 import images_pb2

_SIZE_RULES = images_pb2.GenerateRequest.DESCRIPTOR.fields_by_name["size"].GetOptions().Extensions[
    field_rules_pb2.rules]
# Matches a whole public size, "auto" included.
SIZE_PATTERN = re.compile(_SIZE_RULES.pattern)
DEFAULT_SIZE: str = _SIZE_RULES.default_string
AUTO = "auto"


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def ratio_label(self) -> str:
        return f"{self.width}:{self.height}"


def normalise_size(size: str) -> str:
    """The size as the grammar spells it (trimmed, lower case); empty means the default."""
    return size.strip().lower() or DEFAULT_SIZE


def parse_size(size: str) -> Size | None:
    """A public 'WxH' as a Size; None for 'auto' and for text outside the grammar."""
    wanted = normalise_size(size)
    if wanted == AUTO or SIZE_PATTERN.fullmatch(wanted) is None:
        return None
    width, _, height = wanted.partition("x")
    return Size(int(width), int(height))


def requested_or_default(size: str) -> Size:
    """The requested size; 'auto' and anything unparsable are the default size."""
    return parse_size(size) or _DEFAULT


_DEFAULT = Size(*(int(side) for side in DEFAULT_SIZE.split("x")))


# ---- what an upstream accepts (a catalog model's `sizes`) ------------------------

_EXACT = re.compile(r"([1-9][0-9]*)x([1-9][0-9]*)")
_RATIO = re.compile(r"([1-9][0-9]*):([1-9][0-9]*)")
_TIER = re.compile(r"[1-9][0-9]*K")
ANY = "any"


@dataclass(frozen=True)
class AcceptedSizes:
    """A catalog model's `sizes`, one kind of entry per field:

    - "WxH": an exact size the upstream accepts;
    - "W:H": an aspect ratio it accepts at its own resolution;
    - "1K", "2K": a resolution tier it offers;
    - "auto": it picks the size itself, so "auto" is passed on;
    - "any": it renders any WxH.
    """

    exact: tuple[Size, ...] = ()
    ratios: tuple[Size, ...] = ()
    tiers: tuple[str, ...] = ()
    auto: bool = False
    any_size: bool = False


@functools.lru_cache(maxsize=256)
def accepted_sizes(entries: tuple[str, ...]) -> AcceptedSizes:
    """Parse a `sizes` list; ValueError names the first entry outside the grammar."""
    exact: list[Size] = []
    ratios: list[Size] = []
    tiers: list[str] = []
    for entry in entries:
        if entry in (AUTO, ANY):
            continue
        if _TIER.fullmatch(entry):
            tiers.append(entry)
        elif match := _EXACT.fullmatch(entry):
            exact.append(Size(int(match.group(1)), int(match.group(2))))
        elif match := _RATIO.fullmatch(entry):
            ratios.append(Size(int(match.group(1)), int(match.group(2))))
        else:
            raise ValueError(f"'{entry}' is not a size: expected WxH, W:H, a tier such as 2K, "
                             f"'{AUTO}' or '{ANY}'")
    return AcceptedSizes(exact=tuple(exact), ratios=tuple(ratios), tiers=tuple(tiers),
                         auto=AUTO in entries, any_size=ANY in entries)
