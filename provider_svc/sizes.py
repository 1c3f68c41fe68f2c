"""Size normalisation: a requested "WxH" (or "auto") to what an upstream accepts.

What an upstream accepts comes from the catalog with each request (the model's
`sizes` and `size_range`; grammar in quantized_runtime.sizes). "Nearest" has one
definition, `nearest`: the candidate whose aspect ratio is closest on a log
scale (so 2:1 and 1:2 are equally far from 1:1), and among equal ratios the one
whose pixel count is closest on a log scale. Fixed size lists, aspect-ratio
lists and rule-based ranges (Nova Canvas) all go through it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from quantized_runtime.sizes import AUTO, AcceptedSizes, Size, normalise_size, requested_or_default

# Larger requests are clamped per side before matching, so an absurd size cannot
# make a free-size upstream (or the sandbox) render gigapixels.
MAX_SIDE = 4096


def requested(size: str) -> Size:
    """The requested size ('auto' is the default size), sides clamped to MAX_SIDE."""
    wanted = requested_or_default(size)
    return Size(min(wanted.width, MAX_SIDE), min(wanted.height, MAX_SIDE))


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


# Callers pass the same few size strings over and over; the results are tiny.
_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def nearest_listed(size: str, candidates: tuple[Size, ...]) -> Size:
    """The nearest listed size for a requested 'WxH' ('auto' is 1024x1024)."""
    return nearest(requested(size), candidates)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def nearest_ratio(size: str, ratios: tuple[Size, ...]) -> str:
    """The nearest aspect ratio label ('16:9') for a requested size ('auto' is 1:1)."""
    return nearest(requested(size), ratios).ratio_label


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
    wanted = requested(size)
    return nearest(wanted, rules.candidates_near(wanted))


def fit_size(size: str, accepted: AcceptedSizes, size_range: SizeRange | None) -> Size:
    """The accepted size nearest to the requested one: within the range when the
    model has one, else among its listed sizes; any size when it takes any."""
    if size_range is not None:
        return nearest_in_range(size, size_range)
    if accepted.any_size:
        return requested(size)
    return nearest_listed(size, accepted.exact)


def keeps_auto(size: str, accepted: AcceptedSizes) -> bool:
    """True when the caller asked for "auto" and the upstream picks sizes itself."""
    return accepted.auto and normalise_size(size) == AUTO
