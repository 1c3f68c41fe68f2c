"""What provider_svc agrees to spend its upstream credentials on, whatever the caller
says: the models and regions its own configuration allows, and at most the
route's `max_n` images (never more than the service's ceiling). The catalog's
rows are the edge's business; this is the last check before an upstream, so a
route forged or replayed by another caller cannot reach a model the operator
has not allowed here. Every refusal happens before any upstream call."""

from __future__ import annotations

from provider_svc.domain import ImageRequest
from quantized_runtime.errors import Reason, ServiceError

# An allowed-models entry `provider/*` allows every upstream model of that provider.
ANY_MODEL = "*"


class RequestAdmission:
    def __init__(self, allowed_models: frozenset[str], allowed_regions: frozenset[str],
                 max_images_per_request: int) -> None:
        self._allowed_models = allowed_models
        self._allowed_regions = allowed_regions
        self._max_images = max_images_per_request

    def check(self, request: ImageRequest) -> None:
        provider, model = request.provider, request.upstream_model_id
        if f"{provider}/{model}" not in self._allowed_models and \
                f"{provider}/{ANY_MODEL}" not in self._allowed_models:
            raise ServiceError(Reason.PROVIDER_NOT_OFFERED,
                               f"{provider}: model {model!r} is not enabled on this provider service",
                               field="upstream_model_id")
        # An empty region is the adapter's own default.
        if request.region and request.region not in self._allowed_regions:
            raise ServiceError(Reason.PROVIDER_NOT_OFFERED,
                               f"{provider}: region {request.region!r} is not enabled on this provider service",
                               field="region")
        bound = min(request.max_n or self._max_images, self._max_images)
        if request.n > bound:
            raise ServiceError(Reason.INVALID_REQUEST,
                               f"n must be at most {bound} for model {request.model_id!r}, got {request.n}",
                               field="n")
