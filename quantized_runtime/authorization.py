"""Who may call which internal method: the one table, and the server interceptor
that enforces it before any work (docs/security.md).

The caller's identity comes from its verified client certificate
(quantized_runtime.tls.caller_identity); its role is the identity's first part
(`operator/alice` has the role `operator`). A method not in the table is refused
to everyone. Interceptor installed only on servers that run mutual TLS.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from quantized.billing.v1 import billing_pb2
from quantized.catalog.v1 import catalog_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.metrics import AUTHORIZATION_REFUSED, split_method
from quantized_runtime.tls import caller_identity

log = logging.getLogger("quantized.authorization")

EDGE = "edge"
OPERATOR = "operator"
# Any caller at all, certificate or none: only health checks, which a probe on the
# plaintext health port makes (create_server's `health_address`).
ANYONE = frozenset({"*"})


def _service(descriptor: Any, name: str) -> str:
    return f"/{descriptor.services_by_name[name].full_name}/"


# Method prefix (a whole service `/pkg.Service/`, or one method) -> the roles allowed.
ALLOWED_ROLES: dict[str, frozenset[str]] = {
    _service(catalog_pb2.DESCRIPTOR, "CatalogService"): frozenset({EDGE}),
    _service(catalog_pb2.DESCRIPTOR, "CatalogAdminService"): frozenset({OPERATOR}),
    _service(billing_pb2.DESCRIPTOR, "BillingService"): frozenset({EDGE}),
    _service(billing_pb2.DESCRIPTOR, "BillingAdminService"): frozenset({OPERATOR}),
    _service(provider_pb2.DESCRIPTOR, "ProviderService"): frozenset({EDGE}),
    # Orchestrators probe, over mutual TLS (`quantized health`) or on the plaintext
    # health port (Kubernetes' `grpc:` probes); a health check tells only SERVING or not.
    _service(health_pb2.DESCRIPTOR, "Health"): ANYONE,
    # Only when reflection is turned on: a debugging aid for operators (grpcurl).
    f"/{reflection.SERVICE_NAME}/": frozenset({OPERATOR}),
}


def allowed_roles(method: str) -> frozenset[str]:
    """The roles that may call METHOD (`/pkg.Service/Method`); the most specific entry wins."""
    found = ALLOWED_ROLES.get(method)
    if found is None:
        found = ALLOWED_ROLES.get(method[:method.rfind("/") + 1], frozenset())
    return found


def role_of(identity: str) -> str:
    return identity.split("/", 1)[0]


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call before its handler runs: UNAUTHENTICATED without an identity,
    PERMISSION_DENIED when the identity's role may not call the method. Each refusal
    is logged (method, peer, identity) and counted in `refused_calls`, keyed by
    (method, identity or "-"), and in the metric `quantized_authorization_refused_calls_total`."""

    def __init__(self) -> None:
        self.refused_calls: Counter[tuple[str, str]] = Counter()
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = _checked(handler, self._check_for(method, allowed_roles(method)))
        self._wrapped[method] = wrapped
        return wrapped

    def _check_for(self, method: str, roles: frozenset[str]) -> Callable[[Any], Awaitable[None]]:
        async def check(context: grpc.aio.ServicerContext) -> None:
            if roles is ANYONE:
                return
            identity = caller_identity(context)
            if identity is not None and role_of(identity) in roles:
                return
            code = grpc.StatusCode.UNAUTHENTICATED if identity is None else grpc.StatusCode.PERMISSION_DENIED
            self.refused_calls[(method, identity or "-")] += 1
            AUTHORIZATION_REFUSED.labels(*split_method(method), code.name).inc()
            log.warning("call refused", extra={"fields": {
                "method": method, "peer": context.peer(), "identity": identity or "-",
                "code": code.name}})
            message = ("no service identity in the client certificate" if identity is None
                       else f"{identity} may not call {method}")
            await context.abort(code, message)
        return check


# The (request, context) handler kinds of grpc.RpcMethodHandler and their factories.
_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def _checked(handler: grpc.RpcMethodHandler,
             check: Callable[[Any], Awaitable[None]]) -> grpc.RpcMethodHandler:
    for kind, factory in _KINDS:
        inner = getattr(handler, kind)
        if inner is not None:
            return factory(_guard(inner, check), request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)
    raise ValueError("a method handler with no behaviour")


def _guard(inner: Callable[..., Any], check: Callable[[Any], Awaitable[None]]) -> Callable[..., Any]:
    # grpc.aio runs an async generator handler differently from a coroutine one,
    # so the guard keeps the kind of the handler it wraps.
    if inspect.isasyncgenfunction(inner):
        async def guarded_generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in inner(request, context):
                yield response
        return guarded_generator

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await inner(request, context)
    return guarded
