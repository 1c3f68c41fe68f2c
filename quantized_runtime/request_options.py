"""Which optional request fields each model family forwards upstream, keyed by the
family a catalog route names (its `adapter`).

provider_svc drops every other field before it builds a body, and the catalog lists
a model's fields in discovery (`GET /v1/models` `options`), so a client such as the
playground offers only what the model accepts. `prompt`, `n` and `size` always go.
"""

from __future__ import annotations

# `user` is forwarded to OpenAI only; every provider keeps it in the usage record at the edge.
FORWARDED_FIELDS: dict[str, frozenset[str]] = {
    "gpt-image": frozenset({"quality", "background", "output_format", "output_compression",
                            "moderation", "user"}),
    "dall-e-3": frozenset({"quality", "style", "user"}),
    "dall-e-2": frozenset({"user"}),
    "titan": frozenset({"quality", "seed", "negative_prompt"}),
    "nova": frozenset({"quality", "seed", "negative_prompt"}),
    "stability": frozenset({"seed", "negative_prompt", "output_format"}),
    "flash-image": frozenset(),
    "imagen": frozenset(),
    "sandbox": frozenset({"seed", "output_format"}),
}

# Output formats a family can produce, when it has the knob at all.
OUTPUT_FORMATS: dict[str, frozenset[str]] = {
    "gpt-image": frozenset({"png", "jpeg", "webp"}),
    "stability": frozenset({"png", "jpeg"}),
    "sandbox": frozenset({"png", "jpeg", "webp"}),
}
