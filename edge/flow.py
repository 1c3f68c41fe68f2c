"""The one generation flow behind both the HTTP route and the gRPC ImagesService.

Each transport authenticates the caller (`ImagesFlow.authenticate`) and validates
the request against the contract before it calls `ImagesFlow.generate` with the
`Caller` and the validated `GenerateRequest`, so an unauthenticated caller is
refused before its body is read. The flow then resolves the route, quotes,
admits the request against money billing already holds (edge/leases.py: the
edge's credit lease, or an exact hold), generates, prices, charges and returns
an `Outcome`. Routes and quotes are cached; the price of measured usage comes
from the quote's card; money moves on billing's batched Ledger stream and
generation on provider's GenerateStream (see docs/architecture.md, the hot
path). The upstream is called only once admission succeeded, and a response
goes out only once its charge is written to billing's stream. A failure after
admission costs nothing; an UPSTREAM_UNAVAILABLE before any image falls back to
the next route unless the caller pinned a provider. A request with an
Idempotency-Key runs through edge/idempotency.py: a repeat is answered from the
store before admission, so it costs nothing. Every internal call gets
what is left of the request's budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from quantized.billing.v1 import billing_pb2
from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2 as common_pb2
from quantized.common.v1 import usage_pb2
from quantized.images.v1 import images_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.client import call, method_name
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.features import IMAGE_GENERATION
from quantized_runtime.pricing import price_generation
from quantized_runtime.request_context import current_request_id

from edge.auth_guard import AuthFailureGuard
from edge.cache import MISSING, TtlCache
from edge.errors import CALLER_FACING_REASONS, internal_error, service_unavailable
from edge.idempotency import Idempotency, Progress
from edge.leases import AdmissionKind, CreditLeases
from edge.metrics import CacheMetrics, RequestRecord
from edge.peers import Peers
from edge.rate_limits import Limit
from edge.render import Outcome, RenderedModels, rendered_models
from edge.settings import EdgeSettings
from edge.validation import generation_params

log = logging.getLogger("quantized.edge")

# How long a read that found its peer unavailable waits for a connection on its
# second try: long enough for a reconnect, short enough that a caller facing a
# dead service hears of it within about a second.
RECONNECT_WAIT_SECONDS = 1.0

ResultT = TypeVar("ResultT")

# Catalog answers that are facts about the request, safe to reuse for the cache lifetime.
_CACHEABLE_ROUTE_ERRORS = frozenset({
    Reason.MODEL_NOT_FOUND, Reason.MODALITY_MISMATCH,
    Reason.PROVIDER_NOT_OFFERED, Reason.NO_ACTIVE_PROVIDERS,
})

_MODEL_LIST_KEY = "models"

# RFC 9110 credentials carrying an RFC 6750 bearer token: the scheme in any case,
# one or more spaces, a token68, then nothing but optional spaces or tabs. ASCII
# only, so a byte that Unicode trimming or case folding would pass over (NBSP, a
# zero-width space, NUL, the Kelvin sign) makes the header malformed rather than
# a look-alike of another key.
_BEARER_CREDENTIALS = re.compile(r"(?i:bearer) +([A-Za-z0-9\-._~+/]+=*)[ \t]*", re.ASCII)


class RequestBudget:
    """The whole request's time budget, spent by each peer call it makes in turn:
    every call gets what is left, capped, and a spent budget is UPSTREAM_UNAVAILABLE."""

    def __init__(self, seconds: float) -> None:
        self._expires_at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._expires_at - time.monotonic()

    def timeout(self, cap: float) -> float:
        """A call timeout: at most `cap`, never past the end of the budget."""
        left = self.remaining()
        if left <= 0:
            raise ServiceError(Reason.UPSTREAM_UNAVAILABLE, "the request deadline was exceeded")
        return min(cap, left)


@dataclass(frozen=True)
class Caller:
    account_id: str
    unlimited: bool
    # Empty for a JWT caller. The limits are billing's, cached with the authentication.
    key_id: str = ""
    key_limit: Limit = Limit()
    account_limit: Limit = Limit()
    # The key has a spending cap: billing admits each of its requests (an exact hold).
    capped: bool = False


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value, exactly as sent, or UNAUTHENTICATED."""
    if not authorization:
        raise ServiceError(Reason.UNAUTHENTICATED,
                           "missing API key: send 'Authorization: Bearer <api-key-or-jwt>'")
    credentials = _BEARER_CREDENTIALS.fullmatch(authorization)
    if credentials is None:
        raise ServiceError(Reason.UNAUTHENTICATED,
                           "malformed Authorization header: expected 'Bearer <api-key-or-jwt>'")
    return credentials.group(1)


class ImagesFlow:
    def __init__(self, peers: Peers, leases: CreditLeases, settings: EdgeSettings,
                 idempotency: Idempotency) -> None:
        self._peers = peers
        self._leases = leases
        self._idempotency = idempotency
        self._settings = settings
        self._rpc_cap = settings.internal_rpc_timeout_seconds
        catalog_ttl = settings.catalog_cache_ttl_seconds
        self._auth_cache: TtlCache[Caller] = TtlCache(settings.auth_cache_ttl_seconds, settings.cache_max_entries,
                                                      CacheMetrics("auth"))
        self._auth_guard = AuthFailureGuard(settings.auth_failure_cache_ttl_seconds,
                                            settings.auth_failures_per_minute_per_address,
                                            settings.cache_max_entries)
        self._route_cache: TtlCache[catalog_pb2.ResolveRouteResponse | ServiceError] = TtlCache(
            catalog_ttl, settings.cache_max_entries, CacheMetrics("route"))
        self._quote_cache: TtlCache[catalog_pb2.QuotePriceResponse] = TtlCache(
            catalog_ttl, settings.cache_max_entries, CacheMetrics("quote"))
        self._models_cache: TtlCache[RenderedModels] = TtlCache(catalog_ttl, 1, CacheMetrics("models"))

    def budget(self, caller_seconds: float | None = None) -> RequestBudget:
        """A new request's budget; a caller's own deadline shortens it."""
        seconds = self._settings.request_timeout_seconds
        if caller_seconds is not None:
            seconds = min(seconds, caller_seconds)
        return RequestBudget(seconds)

    async def authenticate(self, authorization: str | None, budget: RequestBudget,
                           client_address: str = "") -> Caller:
        token = bearer_token(authorization)
        # The cache key is a digest, so raw tokens are not kept around in memory.
        key = hashlib.sha256(token.encode()).digest()
        caller = self._auth_cache.get(key)
        if caller is MISSING:
            self._auth_guard.check(key, client_address)
            try:
                answer: billing_pb2.AuthenticateResponse = await self._call(
                    self._peers.billing.Authenticate, billing_pb2.AuthenticateRequest(token=token), budget)
            except ServiceError as error:
                if error.reason is Reason.UNAUTHENTICATED:
                    self._auth_guard.refused(key, client_address, error)
                raise
            caps = answer.key_caps
            caller = Caller(account_id=answer.account_id, unlimited=answer.unlimited, key_id=answer.key_id,
                            key_limit=_limit(answer.key_limits), account_limit=_limit(answer.account_limits),
                            capped=caps.daily_micro_credits > 0 or caps.total_micro_credits > 0)
            self._auth_cache.put(key, caller)
        return caller

    async def list_models(self, budget: RequestBudget) -> RenderedModels:
        """The catalog's models, fetched and rendered for both transports once per cache lifetime."""
        rendered = self._models_cache.get(_MODEL_LIST_KEY)
        if rendered is MISSING:
            answer: catalog_pb2.ListModelsResponse = await self._call(
                self._peers.catalog.ListModels, catalog_pb2.ListModelsRequest(), budget)
            rendered = rendered_models(answer.models)
            self._models_cache.put(_MODEL_LIST_KEY, rendered)
        return rendered

    async def usage(self, caller: Caller, query: usage_pb2.UsageQuery,
                    budget: RequestBudget) -> usage_pb2.UsageReport:
        """The caller's own account's usage report, as billing builds it (edge/usage.py)."""
        answer: billing_pb2.GetUsageResponse = await self._call(
            self._peers.billing.GetUsage,
            billing_pb2.GetUsageRequest(account_id=caller.account_id, query=query), budget)
        return answer.report

    async def generate(self, caller: Caller, request: images_pb2.GenerateRequest, provider_override: str,
                       budget: RequestBudget, record: RequestRecord) -> Outcome:
        """Generate for an authenticated caller and a request that passed validation;
        `record` learns the model, provider, upstream time, images and credits. A
        request with an Idempotency-Key goes through edge/idempotency.py."""
        provider_override = provider_override.strip()
        if not request.idempotency_key:
            return await self._generate(caller, request, provider_override, budget, record, None)
        return await self._idempotency.run(
            caller.account_id, request, provider_override, budget,
            lambda progress: self._generate(caller, request, provider_override, budget, record, progress))

    async def _generate(self, caller: Caller, request: images_pb2.GenerateRequest, provider_override: str,
                        budget: RequestBudget, record: RequestRecord, progress: Progress | None) -> Outcome:
        resolved = await self._resolve(request.model, provider_override, budget)
        record.model = resolved.model_id
        params = generation_params(request)
        quote = await self._quote(resolved.model_id, params, budget)
        request_id = current_request_id.get()
        admission = await self._ledger(
            "admit", lambda timeout: self._leases.admit(caller.account_id, caller.unlimited,
                                                        quote.max_micro_credits, request_id, timeout,
                                                        key_id=caller.key_id, capped=caller.capped),
            budget, retry_unavailable=True)
        try:
            route, answer = await self._dispatch(resolved, params, budget, record)
            record.upstream_seconds = answer.upstream_seconds
            if progress is not None and answer.images:
                progress.images_produced = True
            generated = sum(1 for image in answer.images if not image.flagged)
            price = price_generation(quote, generated, answer.usage)
            usage = billing_pb2.UsageRecord(model_id=resolved.model_id, provider=route.provider,
                                            images=generated, usage=answer.usage, user=params.user)
            # A Charge never written is withdrawn, so it may go once more; a Settle may have been applied.
            charged = await self._ledger(
                "charge", lambda timeout: self._leases.finish(admission, price, usage, timeout),
                budget, bookkeeping=True, retry_unavailable=admission.kind is not AdmissionKind.HOLD)
        except asyncio.CancelledError:
            self._leases.cancel_soon(admission, self._rpc_cap)
            raise
        except Exception:
            await self._leases.cancel(admission, self._rpc_cap)
            raise
        record.images = generated
        record.flagged = len(answer.images) - generated
        record.credits = charged.credits_used
        return Outcome(
            created=answer.created,
            model=request.model,
            images=list(answer.images),
            watermark=route.watermark,
            usage=answer.usage,
            images_generated=generated,
            credits_used=charged.credits_used,
            credits_remaining=charged.credits_remaining,
        )

    async def _resolve(self, model: str, provider_override: str,
                       budget: RequestBudget) -> catalog_pb2.ResolveRouteResponse:
        key = (model, provider_override)
        cached = self._route_cache.get(key)
        if cached is MISSING:
            try:
                cached = await self._call(self._peers.catalog.ResolveRoute, catalog_pb2.ResolveRouteRequest(
                    model=model, provider_override=provider_override, feature=IMAGE_GENERATION), budget)
            except ServiceError as error:
                if error.reason in _CACHEABLE_ROUTE_ERRORS:
                    self._route_cache.put(key, error)
                raise
            if not cached.routes:
                raise ServiceError(Reason.NO_ACTIVE_PROVIDERS, f"model '{model}' has no active providers")
            self._route_cache.put(key, cached)
        if isinstance(cached, ServiceError):
            raise ServiceError(cached.reason, cached.message, field=cached.field, metadata=cached.metadata)
        return cached

    async def _quote(self, model_id: str, params: common_pb2.GenerationParams,
                     budget: RequestBudget) -> catalog_pb2.QuotePriceResponse:
        key = (model_id, params.size, params.quality, params.n)
        quote = self._quote_cache.get(key)
        if quote is MISSING:
            quote = await self._call(self._peers.catalog.QuotePrice, catalog_pb2.QuotePriceRequest(
                model_id=model_id, size=params.size, quality=params.quality, n=params.n), budget)
            self._quote_cache.put(key, quote)
        return quote

    async def _dispatch(self, resolved: catalog_pb2.ResolveRouteResponse, params: common_pb2.GenerationParams,
                        budget: RequestBudget, record: RequestRecord,
                        ) -> tuple[catalog_pb2.Route, provider_pb2.GenerateResponse]:
        """Generate on the first route that answers, in priority order, over
        provider_svc's GenerateStream; the upstream gets all that is left of the
        budget. `record` names the provider of the route tried last."""
        routes = resolved.routes
        for index, route in enumerate(routes):
            record.provider = route.provider
            request = provider_pb2.GenerateRequest(
                provider=route.provider, model_id=resolved.model_id,
                upstream_model_id=route.upstream_model_id, region=route.region,
                params=params, request_id=current_request_id.get(), watermark=route.watermark,
                adapter=route.adapter, constraints=route.constraints)
            try:
                pending = self._peers.provider.generate(request, budget.timeout(budget.remaining()))
                return route, await self._checked(pending, "ProviderService.GenerateStream", budget,
                                                  upstream=True)
            except ServiceError as error:
                can_fall_back = (error.reason is Reason.UPSTREAM_UNAVAILABLE and not resolved.pinned
                                 and index + 1 < len(routes) and budget.remaining() > 0)
                if not can_fall_back:
                    raise
                log.warning("route failed, trying the next one", extra={"fields": {
                    "provider": route.provider, "model_id": resolved.model_id,
                    "next_provider": routes[index + 1].provider, "error": error.message}})
        raise AssertionError("unreachable: the last route either answers or raises")

    async def _call(self, method: Any, request: Message, budget: RequestBudget) -> Any:
        """One unary peer call within the budget (see _checked for its errors). The
        generated stubs are untyped, so callers name the response type they get.
        Every unary call the flow makes only reads, so one that found its peer
        unavailable goes once more, waiting up to RECONNECT_WAIT_SECONDS for the
        channel to reconnect (to the restarted service or another replica)
        before the caller is told."""
        name = method_name(method)
        try:
            return await self._checked(call(method, request, timeout=budget.timeout(self._rpc_cap)),
                                       name, budget, upstream=False)
        except ServiceError as error:
            if error.reason is not Reason.SERVICE_UNAVAILABLE:
                raise
        retry = call(method, request, timeout=budget.timeout(RECONNECT_WAIT_SECONDS), wait_for_ready=True)
        return await self._checked(retry, name, budget, upstream=False)

    async def _ledger(self, name: str, operation: Callable[[float], Awaitable[ResultT]], budget: RequestBudget,
                      *, bookkeeping: bool = False, retry_unavailable: bool = False) -> ResultT:
        """One money step (admission, charge) given its timeout. Bookkeeping
        (the charge) happens after the upstream did its work, so it gets the
        internal timeout even when the budget is spent: an expired request must
        still be charged or released. A step billing applies once whatever the
        number of tries (a Reserve or a lease by its request id, a Charge never
        written) may go once more, on a new stream, when billing was unavailable."""
        name = f"BillingService.Ledger.{name}"
        timeout = self._rpc_cap if bookkeeping else budget.timeout(self._rpc_cap)
        try:
            return await self._checked(operation(timeout), name, budget, upstream=False)
        except ServiceError as error:
            if not (retry_unavailable and error.reason is Reason.SERVICE_UNAVAILABLE):
                raise
        timeout = self._rpc_cap if bookkeeping else budget.timeout(self._rpc_cap)
        return await self._checked(operation(timeout), name, budget, upstream=False)

    async def _checked(self, pending: Awaitable[ResultT], name: str, budget: RequestBudget,
                       upstream: bool) -> ResultT:
        """A peer that is down or whose stream broke is a SERVICE_UNAVAILABLE (503)
        naming the service; reasons the caller should not see (a closed hold, an
        unimplemented method) become a generic INTERNAL error; both are logged
        with the request id."""
        try:
            return await pending
        except ServiceError as error:
            if error.reason in CALLER_FACING_REASONS:
                raise
            if upstream and budget.remaining() <= 0:
                raise ServiceError(Reason.UPSTREAM_UNAVAILABLE,
                                   "the upstream provider did not answer within the request deadline") from None
            if error.reason is Reason.SERVICE_UNAVAILABLE:
                log.warning("peer unavailable", extra={"fields": {"method": name, "detail": error.message}})
                raise service_unavailable(_service_of(name), current_request_id.get()) from None
            log.error("peer call failed", extra={"fields": {
                "method": name, "reason": error.reason.value, "detail": error.message}})
            raise internal_error(current_request_id.get()) from None


def _limit(limits: billing_pb2.RateLimits) -> Limit:
    return Limit(limits.requests_per_minute, limits.max_concurrent_requests)


def _service_of(method_name: str) -> str:
    """catalog, billing or provider, from a method name such as
    /quantized.catalog.v1.CatalogService/ResolveRoute or BillingService.Ledger.reserve."""
    lowered = method_name.lower()
    return next((service for service in ("catalog", "billing", "provider") if service in lowered), "internal")
