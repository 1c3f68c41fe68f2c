"""Request policy: what each model family accepts, and how quality maps onto it.

Everything a family does not accept is dropped here, before any body is built,
so nothing unsupported can reach an upstream. Adapters rename what survives.
"""

from __future__ import annotations

from typing import Any

from provider_svc.domain import ImageRequest
from provider_svc.families import Family

# Optional request fields forwarded per family (prompt, n and size are always
# handled by the adapter). `user` is forwarded to OpenAI only; every provider
# keeps it in the usage record at the edge.
ACCEPTED_FIELDS: dict[Family, frozenset[str]] = {
    Family.GPT_IMAGE: frozenset({"quality", "background", "output_format", "output_compression",
                                 "moderation", "user"}),
    Family.DALL_E_3: frozenset({"quality", "style", "user"}),
    Family.DALL_E_2: frozenset({"user"}),
    Family.TITAN: frozenset({"quality", "seed", "negative_prompt"}),
    Family.NOVA: frozenset({"quality", "seed", "negative_prompt"}),
    Family.STABILITY: frozenset({"seed", "negative_prompt", "output_format"}),
    Family.FLASH_IMAGE: frozenset(),
    Family.IMAGEN: frozenset(),
    Family.SANDBOX: frozenset({"seed", "output_format"}),
}

# Public quality value -> the upstream's word. A value missing from a family's
# row is left out, so the upstream applies its own default.
QUALITY_MAP: dict[Family, dict[str, str]] = {
    Family.GPT_IMAGE: {"low": "low", "medium": "medium", "high": "high", "auto": "auto",
                       "standard": "medium", "hd": "high"},
    Family.DALL_E_3: {"standard": "standard", "hd": "hd", "low": "standard",
                      "medium": "standard", "high": "hd"},
    Family.TITAN: {"standard": "standard", "hd": "premium", "low": "standard",
                   "medium": "standard", "high": "premium"},
    Family.NOVA: {"standard": "standard", "hd": "premium", "low": "standard",
                  "medium": "standard", "high": "premium"},
}

# Output formats a family can produce, when it has the knob at all.
OUTPUT_FORMATS: dict[Family, frozenset[str]] = {
    Family.GPT_IMAGE: frozenset({"png", "jpeg", "webp"}),
    Family.STABILITY: frozenset({"png", "jpeg"}),
    Family.SANDBOX: frozenset({"png", "jpeg", "webp"}),
}


def forwardable(request: ImageRequest, family: Family) -> dict[str, Any]:
    """The optional fields this family accepts, set by the caller, quality mapped."""
    accepted = ACCEPTED_FIELDS[family]
    fields: dict[str, Any] = {}
    for name in sorted(accepted):
        value = getattr(request, name)
        if value is None:
            continue
        if name == "quality":
            value = QUALITY_MAP.get(family, {}).get(value)
            if value is None:
                continue
        if name == "output_format" and value not in OUTPUT_FORMATS.get(family, frozenset()):
            continue
        fields[name] = value
    # Compression only applies to lossy formats; sent with png it is a 400.
    if fields.get("output_format") not in {"jpeg", "webp"}:
        fields.pop("output_compression", None)
    return fields
