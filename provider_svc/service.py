"""Dispatch: pick the adapter by provider slug and run it under the retry policy,
timing the upstream (each attempt for the metrics, the whole for the caller)."""

from __future__ import annotations

import time

from provider_svc.admission import RequestAdmission
from provider_svc.domain import Adapter, GenerationResult, ImageRequest
from provider_svc.metrics import UpstreamMetrics
from provider_svc.retry import RequestDeadline, with_retry
from provider_svc.settings import ProviderSettings
from quantized_runtime import tracing
from quantized_runtime.errors import Reason, ServiceError

UPSTREAM_SPAN = "upstream generate"


class Dispatcher:
    def __init__(self, adapters: dict[str, Adapter], settings: ProviderSettings) -> None:
        self._adapters = adapters
        self._settings = settings
        self._admission = RequestAdmission(settings.allowed_model_set(), settings.allowed_region_set(),
                                           settings.max_images_per_request)

    async def generate(self, request: ImageRequest, grpc_time_remaining: float | None) -> GenerationResult:
        adapter = self._adapters.get(request.provider)
        if adapter is None:
            raise ServiceError(Reason.PROVIDER_NOT_OFFERED, f"unknown provider {request.provider!r}",
                               field="provider")
        self._admission.check(request)
        deadline = RequestDeadline(grpc_time_remaining, self._settings.upstream_timeout_seconds)
        metrics = UpstreamMetrics(request.provider, request.family.value if request.family else "unknown")

        async def attempt() -> GenerationResult:
            started = metrics.attempt_started()
            try:
                result = await _upstream_call(adapter, request, deadline)
            except BaseException as error:
                metrics.attempt_ended(started, error)
                raise
            metrics.attempt_ended(started, None)
            return result

        started = time.perf_counter()
        result = await with_retry(attempt, provider=request.provider, deadline=deadline,
                                  retries=self._settings.upstream_retries,
                                  backoff_seconds=self._settings.retry_backoff_seconds)
        result.upstream_seconds = time.perf_counter() - started
        metrics.received(result)
        return result

    async def close(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()


async def _upstream_call(adapter: Adapter, request: ImageRequest, deadline: RequestDeadline) -> GenerationResult:
    """One attempt, in a client span of its own when tracing is on. Its attributes
    name the upstream and the outcome (OK, or the error's reason); never the
    prompt (user content) or a credential."""
    with tracing.client_span(UPSTREAM_SPAN) as span:
        if span is not None:
            span.set_attributes({
                "quantized.provider": request.provider, "quantized.upstream.family": str(request.family or ""),
                "quantized.upstream.model": request.upstream_model_id})
        result = await adapter.generate(request, deadline)
        if span is not None:
            span.set_attribute(tracing.OUTCOME, tracing.OK)
        return result
