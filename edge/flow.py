"""The one generation flow behind both the HTTP route and the gRPC ImagesService:

authenticate -> validate -> resolve route -> quote + reserve -> generate -> price
-> settle -> outcome. Routes and quotes are cached; the price of measured usage
comes from the quote's card; money moves on billing's batched Ledger stream and
generation on provider's GenerateStream (see docs/architecture.md, the hot
path). A failure after the reserve releases the hold; an UPSTREAM_UNAVAILABLE
before any image falls back to the next route unless the caller pinned a
provider. Every internal call gets what is left of the request's deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quantized.billing.v1 import billing_pb2
from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2 as common_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.features import IMAGE_GENERATION
from quantized_runtime.pricing import price_generation
from quantized_runtime.request_context import current_request_id

from edge.cache import MISSING, TtlCache
from edge.errors import CALLER_FACING_REASONS, internal_error
from edge.peers import Peers
from edge.settings import EdgeSettings
from edge.validation import generation_params

log = logging.getLogger("quantized.edge")

# Catalog answers that are facts about the request, safe to reuse for the cache lifetime.
_CACHEABLE_ROUTE_ERRORS = frozenset({
    Reason.MODEL_NOT_FOUND, Reason.MODALITY_MISMATCH,
    Reason.PROVIDER_NOT_OFFERED, Reason.NO_ACTIVE_PROVIDERS,
})


class Deadline:
    """The request's time budget, shared by every call it makes."""

    def __init__(self, seconds: float) -> None:
        self._expires_at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._expires_at - time.monotonic()

    def timeout(self, cap: float) -> float:
        """A call timeout: at most `cap`, never past the deadline."""
        left = self.remaining()
        if left <= 0:
            raise ServiceError(Reason.UPSTREAM_UNAVAILABLE, "the request deadline was exceeded")
        return min(cap, left)


@dataclass(frozen=True)
class Caller:
    account_id: str
    unlimited: bool


@dataclass(frozen=True)
class Outcome:
    """What the caller gets back, before it is rendered as JSON or proto."""

    created: int
    model: str
    images: list[common_pb2.GeneratedImage]
    # The route's watermark, for images whose provider left it unspecified.
    watermark: int
    usage: common_pb2.UpstreamUsage
    images_generated: int
    credits_used: int
    credits_remaining: int | None


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value, or UNAUTHENTICATED."""
    if not authorization:
        raise ServiceError(Reason.UNAUTHENTICATED,
                           "missing API key: send 'Authorization: Bearer <api-key-or-jwt>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ServiceError(Reason.UNAUTHENTICATED,
                           "malformed Authorization header: expected 'Bearer <api-key-or-jwt>'")
    return token


class ImagesFlow:
    def __init__(self, peers: Peers, settings: EdgeSettings) -> None:
        self._peers = peers
        self._settings = settings
        self._rpc_cap = settings.internal_rpc_timeout_seconds
        self._auth_cache: TtlCache[Caller] = TtlCache(settings.auth_cache_ttl_seconds, settings.cache_max_entries)
        self._route_cache: TtlCache[Any] = TtlCache(settings.catalog_cache_ttl_seconds, settings.cache_max_entries)
        self._quote_cache: TtlCache[Any] = TtlCache(settings.catalog_cache_ttl_seconds, settings.cache_max_entries)
        self._models_cache: TtlCache[Any] = TtlCache(settings.catalog_cache_ttl_seconds, 1)
        # Releases started while the request was being cancelled; kept so they finish.
        self._background: set[asyncio.Task[None]] = set()

    def deadline(self, caller_budget: float | None = None) -> Deadline:
        budget = self._settings.request_timeout_seconds
        if caller_budget is not None:
            budget = min(budget, caller_budget)
        return Deadline(budget)

    async def authenticate(self, authorization: str | None, deadline: Deadline) -> Caller:
        token = bearer_token(authorization)
        # The cache key is a digest, so raw tokens are not kept around in memory.
        key = hashlib.sha256(token.encode()).digest()
        caller = self._auth_cache.get(key)
        if caller is MISSING:
            answer = await self._call(self._peers.billing.Authenticate,
                                      billing_pb2.AuthenticateRequest(token=token), deadline)
            caller = Caller(account_id=answer.account_id, unlimited=answer.unlimited)
            self._auth_cache.put(key, caller)
        return caller

    async def list_models(self, authorization: str | None, deadline: Deadline,
                          render: Callable[[Any], Any]) -> Any:
        """The catalog's models, rendered once per cache lifetime by `render`."""
        await self.authenticate(authorization, deadline)
        rendered = self._models_cache.get(render)
        if rendered is MISSING:
            answer = await self._call(self._peers.catalog.ListModels, catalog_pb2.ListModelsRequest(), deadline)
            rendered = render(answer.models)
            self._models_cache.put(render, rendered)
        return rendered

    async def generate(self, authorization: str | None, provider_override: str,
                       load_request: Callable[[], Awaitable[Any]], deadline: Deadline) -> Outcome:
        caller = await self.authenticate(authorization, deadline)
        request = await load_request()
        resolved = await self._resolve(request.model, provider_override.strip(), deadline)
        params = generation_params(request)
        quote = await self._quote(resolved.model_id, params, deadline)
        hold = await self._ledger(self._peers.ledger.reserve, billing_pb2.ReserveRequest(
            account_id=caller.account_id, amount_micro_credits=quote.max_micro_credits,
            request_id=current_request_id.get()), deadline)
        try:
            route, answer = await self._dispatch(resolved, params, deadline)
            generated = sum(1 for image in answer.images if not image.flagged)
            price = price_generation(quote, generated, answer.usage)
            settled = await self._ledger(self._peers.ledger.settle, billing_pb2.SettleRequest(
                hold_id=hold.hold_id, amount_micro_credits=price,
                usage=billing_pb2.UsageRecord(model_id=resolved.model_id, provider=route.provider,
                                              images=generated, usage=answer.usage, user=params.user),
            ), deadline, bookkeeping=True)
        except asyncio.CancelledError:
            self._release_in_background(hold.hold_id)
            raise
        except Exception:
            await self._release(hold.hold_id, deadline)
            raise
        return Outcome(
            created=answer.created,
            model=request.model,
            images=list(answer.images),
            watermark=route.watermark,
            usage=answer.usage,
            images_generated=generated,
            credits_used=settled.charged_micro_credits,
            credits_remaining=(settled.balance_micro_credits
                               if settled.HasField("balance_micro_credits") else None),
        )

    async def _resolve(self, model: str, provider_override: str, deadline: Deadline) -> Any:
        key = (model, provider_override)
        cached = self._route_cache.get(key)
        if cached is MISSING:
            try:
                cached = await self._call(self._peers.catalog.ResolveRoute, catalog_pb2.ResolveRouteRequest(
                    model=model, provider_override=provider_override, feature=IMAGE_GENERATION), deadline)
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

    async def _quote(self, model_id: str, params: common_pb2.GenerationParams, deadline: Deadline) -> Any:
        key = (model_id, params.size, params.quality, params.n)
        quote = self._quote_cache.get(key)
        if quote is MISSING:
            quote = await self._call(self._peers.catalog.QuotePrice, catalog_pb2.QuotePriceRequest(
                model_id=model_id, size=params.size, quality=params.quality, n=params.n), deadline)
            self._quote_cache.put(key, quote)
        return quote

    async def _dispatch(self, resolved: Any, params: common_pb2.GenerationParams,
                        deadline: Deadline) -> tuple[Any, Any]:
        """Generate on the first route that answers, in priority order, over
        provider_svc's GenerateStream; the upstream gets all that is left of the deadline."""
        routes = resolved.routes
        for index, route in enumerate(routes):
            request = provider_pb2.GenerateRequest(
                provider=route.provider, model_id=resolved.model_id,
                upstream_model_id=route.upstream_model_id, region=route.region,
                params=params, request_id=current_request_id.get(), watermark=route.watermark,
                adapter=route.adapter, constraints=route.constraints)
            try:
                pending = self._peers.provider.generate(request, deadline.timeout(deadline.remaining()))
                return route, await self._checked(pending, "ProviderService.GenerateStream", deadline,
                                                  upstream=True)
            except ServiceError as error:
                can_fall_back = (error.reason is Reason.UPSTREAM_UNAVAILABLE and not resolved.pinned
                                 and index + 1 < len(routes) and deadline.remaining() > 0)
                if not can_fall_back:
                    raise
                log.warning("route failed, trying the next one", extra={"fields": {
                    "provider": route.provider, "model_id": resolved.model_id,
                    "next_provider": routes[index + 1].provider, "error": error.message}})
        raise AssertionError("unreachable: the last route either answers or raises")

    async def _release(self, hold_id: str, deadline: Deadline) -> None:
        try:
            await self._ledger(self._peers.ledger.release, billing_pb2.ReleaseRequest(hold_id=hold_id),
                               deadline, bookkeeping=True)
        except Exception:
            # The hold expires on its own; the caller's error matters more than this one.
            log.exception("could not release hold", extra={"fields": {"hold_id": hold_id}})

    def _release_in_background(self, hold_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(hold_id, Deadline(self._rpc_cap)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call(self, method: Any, request: Any, deadline: Deadline) -> Any:
        """One unary peer call within the deadline (see _checked for its errors)."""
        pending = call(method, request, timeout=deadline.timeout(self._rpc_cap))
        return await self._checked(pending, _method_name(method), deadline, upstream=False)

    async def _ledger(self, operation: Callable[[Any, float], Awaitable[Any]], request: Any,
                      deadline: Deadline, *, bookkeeping: bool = False) -> Any:
        """One money operation on billing's batched Ledger stream. Bookkeeping
        (settle, release) happens after the upstream did its work, so it gets the
        internal timeout even when the deadline is spent: an expired request must
        still be charged or released."""
        timeout = self._rpc_cap if bookkeeping else deadline.timeout(self._rpc_cap)
        return await self._checked(operation(request, timeout), f"Ledger.{operation.__name__}",
                                   deadline, upstream=False)

    async def _checked(self, pending: Awaitable[Any], name: str, deadline: Deadline, upstream: bool) -> Any:
        """Reasons the caller should not see (a closed hold, an unimplemented method,
        a dead peer) become a generic INTERNAL error, logged with the request id."""
        try:
            return await pending
        except ServiceError as error:
            if error.reason in CALLER_FACING_REASONS:
                raise
            if upstream and deadline.remaining() <= 0:
                raise ServiceError(Reason.UPSTREAM_UNAVAILABLE,
                                   "the upstream provider did not answer within the request deadline") from None
            log.error("peer call failed", extra={"fields": {
                "method": name, "reason": error.reason.value, "detail": error.message}})
            raise internal_error(current_request_id.get()) from None


def _method_name(method: Any) -> str:
    name = getattr(method, "_method", b"")
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
