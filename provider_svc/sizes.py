"""Size normalisation: a requested "WxH" (or "auto") to what an upstream accepts.

"Nearest" has one definition, `nearest`: the candidate whose aspect ratio is
closest on a log scale (so 2:1 and 1:2 are equally far from 1:1), and among
equal ratios the one whose pixel count is closest on a log scale. Fixed size
lists, aspect-ratio lists and rule-based ranges (Nova Canvas) all go through it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_SIZE = (1024, 1024)
# Larger requests are clamped per side before matching, so an absurd size cannot
# make a free-size upstream (or the sandbox) render gigapixels.
MAX_SIDE = 4096

_SIZE_PATTERN = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def ratio_label(self) -> str:
        return f"{self.width}:{self.height}"


def parse_size(size: str) -> Size | None:
    """'WxH' to a Size with sides in 1..MAX_SIDE; None for 'auto' or an empty value."""
    if not size or size.strip().lower() == "auto":
        return None
    match = _SIZE_PATTERN.match(size)
    if match is None:
        return None
    width, height = (min(max(int(side), 1), MAX_SIDE) for side in match.groups())
    return Size(width, height)


def requested_or_default(size: str) -> Size:
    return parse_size(size) or Size(*DEFAULT_SIZE)


def _distance(requested: Size, candidate: Size) -> tuple[float, float]:
    ratio_gap = abs(math.log(requested.width / requested.height)
                    - math.log(candidate.width / candidate.height))
    area_gap = abs(math.log(requested.width * requested.height)
                   - math.log(candidate.width * candidate.height))
    return (round(ratio_gap, 9), area_gap)


def nearest(requested: Size, candidates: Iterable[Size]) -> Size:
    """The candidate nearest to `requested`: closest aspect ratio, then closest area.

    Ties keep the earlier candidate, so list order states the preference.
    """
    best: Size | None = None
    best_distance: tuple[float, float] | None = None
    for candidate in candidates:
        distance = _distance(requested, candidate)
        if best_distance is None or distance < best_distance:
            best, best_distance = candidate, distance
    if best is None:
        raise ValueError("no candidate sizes")
    return best


def sizes(*labels: str) -> tuple[Size, ...]:
    """Sizes from 'WxH' labels, or aspect ratios from 'W:H' labels."""
    parsed = []
    for label in labels:
        width, height = re.split(r"[x:]", label)
        parsed.append(Size(int(width), int(height)))
    return tuple(parsed)


# Callers pass the same few size strings over and over; the results are tiny.
_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def nearest_listed(size: str, candidates: tuple[Size, ...]) -> Size:
    """The nearest listed size for a requested 'WxH' ('auto' is 1024x1024)."""
    return nearest(requested_or_default(size), candidates)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def nearest_ratio(size: str, ratios: tuple[Size, ...]) -> str:
    """The nearest aspect ratio label ('16:9') for a requested size ('auto' is 1:1)."""
    return nearest(requested_or_default(size), ratios).ratio_label


@dataclass(frozen=True)
class SizeRange:
    """Free sizes under rules: sides a multiple of `step` in [min_side, max_side],
    aspect ratio within 1:max_ratio..max_ratio:1, pixels strictly below max_pixels."""

    min_side: int
    max_side: int
    step: int
    max_ratio: float
    max_pixels: int

    def allows(self, size: Size) -> bool:
        return (self.min_side <= size.width <= self.max_side
                and self.min_side <= size.height <= self.max_side
                and size.width % self.step == 0 and size.height % self.step == 0
                and max(size.width / size.height, size.height / size.width) <= self.max_ratio
                and size.width * size.height < self.max_pixels)

    def candidates_near(self, requested: Size) -> list[Size]:
        """Valid sizes around the requested one after clamping ratio, pixels and sides.

        `nearest` then picks among them, so the metric stays the same one.
        """
        ratio = min(max(requested.width / requested.height, 1 / self.max_ratio), self.max_ratio)
        area = min(float(requested.width * requested.height), self.max_pixels - 1.0)
        width = math.sqrt(area * ratio)
        height = width / ratio
        # Grow a too-small side up to min_side, then shrink a too-large one to max_side;
        # the clamped ratio keeps both inside the bounds.
        grow = max(self.min_side / min(width, height), 1.0)
        width, height = width * grow, height * grow
        shrink = min(self.max_side / max(width, height), 1.0)
        width, height = width * shrink, height * shrink
        found = []
        for w in _steps_around(width, self.step):
            for h in _steps_around(height, self.step):
                candidate = Size(w, h)
                if self.allows(candidate):
                    found.append(candidate)
        return found


def _steps_around(value: float, step: int) -> list[int]:
    low = int(value // step) * step
    return [low - step, low, low + step, low + 2 * step]


@functools.lru_cache(maxsize=_CACHE_SIZE)
def nearest_in_range(size: str, rules: SizeRange) -> Size:
    requested = requested_or_default(size)
    return nearest(requested, rules.candidates_near(requested))
