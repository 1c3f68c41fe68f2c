"""The normalised request and result every adapter speaks (no gRPC here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from provider_svc.families import Family
from provider_svc.sizes import SizeRange
from quantized_runtime.sizes import DEFAULT_SIZE, AcceptedSizes


@dataclass(frozen=True)
class ImageRequest:
    """A validated generation request; enum-like fields are lower-case strings or None.

    `family`, `sizes`, `size_range` and `quality_values` come from the catalog's
    route: which adapter body to build, and what the upstream accepts."""

    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    prompt: str
    family: Family | None = None
    sizes: AcceptedSizes = AcceptedSizes()
    size_range: SizeRange | None = None
    quality_values: tuple[str, ...] = ()
    n: int = 1
    # The route's published bound on n; None when the catalog gives none.
    max_n: int | None = None
    size: str = DEFAULT_SIZE
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    user: str | None = None
    request_id: str = ""


@dataclass
class Image:
    """One returned image, or a flagged slot with no bytes."""

    data: bytes = b""
    mime_type: str = ""
    revised_prompt: str | None = None
    seed: int | None = None
    flagged: bool = False
    flag_reason: str = ""


@dataclass
class UpstreamUsage:
    """What the upstream measured (quantized.common.v1.UpstreamUsage in the domain)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    megapixels: float | None = None


@dataclass
class GenerationResult:
    created: int = 0
    images: list[Image] = field(default_factory=list)
    usage: UpstreamUsage = field(default_factory=UpstreamUsage)
    # Time spent on the upstream, every attempt included (set by the Dispatcher).
    upstream_seconds: float = 0.0


def flagged_images(count: int, reason: str) -> list[Image]:
    """The uniform content-filter outcome: `count` entries, flagged, without bytes."""
    return [Image(flagged=True, flag_reason=reason) for _ in range(max(count, 0))]


class UpstreamDeadline(Protocol):
    """What an adapter needs of the request's deadline (provider_svc.retry.RequestDeadline)."""

    def remaining(self) -> float:
        """Seconds left for upstream work (already capped by the upstream timeout)."""


class Adapter(Protocol):
    """One upstream family. Constructing it must not need credentials."""

    provider: str

    async def generate(self, request: ImageRequest, deadline: UpstreamDeadline) -> GenerationResult: ...

    async def close(self) -> None: ...
