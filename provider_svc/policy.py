"""Request policy: which fields each family's body carries, and how a requested
quality maps onto the quality words the catalog lists for the model.

Everything a family does not accept (`quantized_runtime.request_options`, shared
with discovery) is dropped here, before any body is built, so nothing unsupported
can reach an upstream. Adapters rename what survives.
"""

from __future__ import annotations

from typing import Any

from quantized_runtime.request_options import FORWARDED_FIELDS, OUTPUT_FORMATS

from provider_svc.domain import ImageRequest
from provider_svc.families import Family

# How quality words rank, public and upstream alike: a requested quality the
# model does not list goes to the listed word of the nearest rank ("hd" is
# "premium" on Titan, "high" on gpt-image). A word without a rank ("auto") that
# the model does not list is left out, so the upstream applies its own default.
QUALITY_RANKS: dict[str, int] = {"low": 0, "standard": 1, "medium": 1, "hd": 2, "high": 2, "premium": 2}


def upstream_quality(wanted: str, listed: tuple[str, ...]) -> str | None:
    """The model's quality word for a requested quality, None to leave it out."""
    if wanted in listed:
        return wanted
    rank = QUALITY_RANKS.get(wanted)
    ranked = [word for word in listed if word in QUALITY_RANKS]
    if rank is None or not ranked:
        return None
    return min(ranked, key=lambda word: abs(QUALITY_RANKS[word] - rank))


def forwardable(request: ImageRequest, family: Family) -> dict[str, Any]:
    """The optional fields this family accepts, set by the caller, quality mapped."""
    accepted = FORWARDED_FIELDS[family]
    fields: dict[str, Any] = {}
    for name in sorted(accepted):
        value = getattr(request, name)
        if value is None:
            continue
        if name == "quality":
            value = upstream_quality(value, request.quality_values)
            if value is None:
                continue
        if name == "output_format" and value not in OUTPUT_FORMATS.get(family, frozenset()):
            continue
        fields[name] = value
    # Compression only applies to lossy formats; sent with png it is a 400.
    if fields.get("output_format") not in {"jpeg", "webp"}:
        fields.pop("output_compression", None)
    return fields
