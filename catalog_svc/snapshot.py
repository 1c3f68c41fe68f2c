"""The in-memory catalog the request path reads, and route resolution over it.

A snapshot is immutable: a change (admin call, reload, another replica's write
seen by polling) builds a new one and swaps it in whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.features import IMAGE_GENERATION
from quantized_runtime.request_options import FORWARDED_FIELDS, OUTPUT_FORMATS

from catalog_svc.catalog_file import Constraints, Cost

IMAGE_OUTPUT = "image"


@dataclass(frozen=True)
class ProviderInfo:
    slug: str
    name: str
    development_only: bool


@dataclass(frozen=True)
class ModelInfo:
    id: str
    created: int
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    supported_features: tuple[str, ...]
    watermark: str
    constraints: Constraints
    cost: Cost

    @property
    def outputs_images(self) -> bool:
        return IMAGE_OUTPUT in self.output_modalities


@dataclass(frozen=True)
class RouteRow:
    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    priority: int
    # The provider_svc adapter family that speaks to the upstream.
    adapter: str
    # What the catalog file says, and the operator's decision when one was made.
    file_active: bool
    operator_active: bool | None
    # The effective state: the operator's decision over the file's, and never
    # active for a development-only provider unless the sandbox is enabled.
    is_active: bool


@dataclass(frozen=True)
class Resolution:
    model: ModelInfo
    routes: tuple[RouteRow, ...]
    pinned: bool


def effective_activity(file_active: bool, operator_active: bool | None,
                       development_only: bool, sandbox_enabled: bool) -> bool:
    if development_only and not sandbox_enabled:
        return False
    return file_active if operator_active is None else operator_active


class CatalogSnapshot:
    def __init__(self, *, revision: int, version: str, providers: Iterable[ProviderInfo],
                 models: Iterable[ModelInfo], rows: Iterable[RouteRow]) -> None:
        self.revision = revision
        self.version = version
        self.providers: Mapping[str, ProviderInfo] = {p.slug: p for p in providers}
        self.models: Mapping[str, ModelInfo] = {m.id: m for m in models}
        by_model: dict[str, list[RouteRow]] = {}
        for row in rows:
            by_model.setdefault(row.model_id, []).append(row)
        self._rows: Mapping[str, tuple[RouteRow, ...]] = {
            model_id: tuple(sorted(found, key=lambda r: (r.priority, r.provider)))
            for model_id, found in by_model.items()
        }

    def rows_for(self, model_id: str) -> tuple[RouteRow, ...]:
        return self._rows.get(model_id, ())

    def all_rows(self) -> list[RouteRow]:
        return [row for model_id in self.models for row in self.rows_for(model_id)]

    def is_active(self, model_id: str) -> bool:
        return any(row.is_active for row in self.rows_for(model_id))

    def default_route(self, model_id: str) -> RouteRow | None:
        """The route a caller gets without pinning (the best one, active first)."""
        rows = self.rows_for(model_id)
        active = [row for row in rows if row.is_active]
        best = (active or list(rows))[:1]
        return best[0] if best else None

    def default_provider(self, model_id: str) -> str:
        route = self.default_route(model_id)
        return route.provider if route else ""

    def request_options(self, model_id: str) -> tuple[list[str], list[str]]:
        """The optional request fields the default route's family forwards, and the
        output formats it can produce (both empty for a model without a route)."""
        route = self.default_route(model_id)
        family = route.adapter if route else ""
        return (sorted(FORWARDED_FIELDS.get(family, frozenset())),
                sorted(OUTPUT_FORMATS.get(family, frozenset())))

    def split_provider_prefix(self, requested: str) -> tuple[str | None, str]:
        """`<provider>/<model>` pins a provider only when the prefix is a known slug."""
        prefix, slash, rest = requested.partition("/")
        if slash and rest and prefix in self.providers:
            return prefix, rest
        return None, requested

    def model(self, requested: str) -> ModelInfo:
        _, model_id = self.split_provider_prefix(requested.strip())
        found = self.models.get(model_id)
        if found is None:
            raise ServiceError(Reason.MODEL_NOT_FOUND, f"Model '{requested}' not found in the catalog",
                               field="model", metadata={"model": requested})
        return found

    def resolve(self, requested: str, provider_override: str, feature: str) -> Resolution:
        """Active routes for a model, checked in the documented order (docs/catalog.md)."""
        requested = requested.strip()
        prefix_provider, model_id = self.split_provider_prefix(requested)
        model = self.model(requested)
        feature = feature.strip() or IMAGE_GENERATION
        if (feature == IMAGE_GENERATION and not model.outputs_images) \
                or feature not in model.supported_features:
            outputs = ", ".join(model.output_modalities)
            raise ServiceError(
                Reason.MODALITY_MISMATCH,
                f"Model '{model_id}' does not support {feature} (its output modality is {outputs})",
                field="model", metadata={"model": model_id})
        pinned = self._pinned_provider(model_id, provider_override, prefix_provider)
        candidates = self.rows_for(model_id)
        if pinned is not None:
            candidates = tuple(row for row in candidates if row.provider == pinned)
            if not candidates:
                offered = ", ".join(sorted(row.provider for row in self.rows_for(model_id))) or "none"
                raise ServiceError(
                    Reason.PROVIDER_NOT_OFFERED,
                    f"Provider '{pinned}' does not offer model '{model_id}' (offered by: {offered})",
                    metadata={"model": model_id, "provider": pinned})
        active = tuple(row for row in candidates if row.is_active)
        if not active:
            on = f" on provider '{pinned}'" if pinned is not None else ""
            raise ServiceError(Reason.NO_ACTIVE_PROVIDERS,
                               f"No active providers for model '{model_id}'{on}",
                               field="model", metadata={"model": model_id})
        return Resolution(model=model, routes=active, pinned=pinned is not None)

    def _pinned_provider(self, model_id: str, header: str, prefix: str | None) -> str | None:
        slug = header.strip().lower()
        if not slug:
            return prefix
        if slug not in self.providers:
            valid = ", ".join(sorted(self.providers))
            raise ServiceError(Reason.PROVIDER_NOT_OFFERED,
                               f"Unknown provider '{header.strip()}' in X-Quantized-Provider; "
                               f"valid providers: {valid}",
                               metadata={"model": model_id, "provider": slug})
        if prefix is not None and prefix != slug:
            raise ServiceError(Reason.PROVIDER_NOT_OFFERED,
                               f"Conflicting providers: X-Quantized-Provider names '{slug}' "
                               f"but the model prefix names '{prefix}'",
                               metadata={"model": model_id, "provider": slug})
        return slug
