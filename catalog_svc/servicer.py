"""gRPC servicers: translate proto <-> the catalog core. No logic of their own.
`registrars` and `SERVICE_NAMES` are what `main.start` hands the runtime's server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from quantized.common.v1 import images_pb2
from quantized_runtime.admin_auth import require_admin
from quantized_runtime.database_health import DatabaseGuard
from quantized_runtime.tls import caller_identity
from quantized_runtime.enum_names import enum_word, enum_words
from quantized_runtime.server import Registrar

from catalog_svc.service import CatalogCore
from catalog_svc.catalog_file import Constraints
from catalog_svc.snapshot import CatalogSnapshot, ModelInfo, RouteRow

WATERMARKS = enum_words(images_pb2.Watermark.DESCRIPTOR)
# The audit actor of a change made in plaintext, where the admin token is the only credential.
ADMIN_TOKEN_ACTOR = "admin-token"


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return value


def model_message(snapshot: CatalogSnapshot, model: ModelInfo) -> images_pb2.Model:
    cost = struct_pb2.Struct()
    cost.update(_json_value(model.cost.model_dump(exclude_none=True)))
    options, output_formats = snapshot.request_options(model.id)
    return images_pb2.Model(
        id=model.id,
        created=model.created,
        owned_by=snapshot.default_provider(model.id),
        supported_features=model.supported_features,
        input_modalities=model.input_modalities,
        output_modalities=model.output_modalities,
        watermark=WATERMARKS[model.watermark],
        cost=cost,
        constraints=constraints_message(model.constraints),
        providers=sorted({row.provider for row in snapshot.rows_for(model.id)}),
        active=snapshot.is_active(model.id),
        options=options,
        output_formats=output_formats,
    )


def constraints_message(constraints: Constraints) -> images_pb2.ModelConstraints:
    message = images_pb2.ModelConstraints(
        sizes=constraints.sizes, quality_values=constraints.quality_values, notes=constraints.notes)
    if constraints.max_n is not None:
        message.max_n = constraints.max_n
    if constraints.size_range is not None:
        message.size_range.CopyFrom(images_pb2.SizeRange(**constraints.size_range.model_dump()))
    return message


def route_message(model: ModelInfo, row: RouteRow) -> catalog_pb2.Route:
    """A route as the edge dispatches it: where the model is served, by which
    adapter, and the constraints provider_svc fits the request to."""
    return catalog_pb2.Route(
        provider=row.provider, model_id=row.model_id, upstream_model_id=row.upstream_model_id,
        region=row.region, priority=row.priority, watermark=WATERMARKS[model.watermark],
        adapter=row.adapter, constraints=constraints_message(model.constraints))


def provider_model_message(row: RouteRow) -> catalog_pb2.ProviderModel:
    message = catalog_pb2.ProviderModel(
        provider=row.provider, model_id=row.model_id, upstream_model_id=row.upstream_model_id,
        region=row.region, priority=row.priority, is_active=row.is_active, file_active=row.file_active,
        adapter=row.adapter)
    if row.operator_active is not None:
        message.operator_active = row.operator_active
    return message


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, core: CatalogCore) -> None:
        self._core = core

    async def ResolveRoute(self, request: catalog_pb2.ResolveRouteRequest,
                           context: grpc.aio.ServicerContext) -> catalog_pb2.ResolveRouteResponse:
        resolution = self._core.resolve(request.model, request.provider_override, request.feature)
        return catalog_pb2.ResolveRouteResponse(
            model_id=resolution.model.id,
            routes=[route_message(resolution.model, row) for row in resolution.routes],
            pinned=resolution.pinned,
        )

    async def QuotePrice(self, request: catalog_pb2.QuotePriceRequest,
                         context: grpc.aio.ServicerContext) -> catalog_pb2.QuotePriceResponse:
        return self._core.quote(request.model_id, request.size,
                                enum_word(images_pb2.Quality.DESCRIPTOR, request.quality), request.n)

    async def ListModels(self, request: catalog_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> catalog_pb2.ListModelsResponse:
        snapshot = self._core.snapshot
        return catalog_pb2.ListModelsResponse(
            models=[model_message(snapshot, model) for model in snapshot.models.values()])


class CatalogAdminServicer(catalog_pb2_grpc.CatalogAdminServiceServicer):
    def __init__(self, core: CatalogCore, admin_token: str, database: DatabaseGuard) -> None:
        self._core = core
        self._admin_token = admin_token
        # ListCatalog answers from the snapshot; the calls that write or read the
        # database answer SERVICE_UNAVAILABLE while it is unreachable.
        self._database = database

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        require_admin(context.invocation_metadata(), self._admin_token)

    @staticmethod
    def _actor(context: grpc.aio.ServicerContext) -> str:
        """Who made a change, from the credential (the operator's certificate), never
        from the request: a caller could write any name there."""
        return caller_identity(context) or ADMIN_TOKEN_ACTOR

    async def SetProviderModelActive(
            self, request: catalog_pb2.SetProviderModelActiveRequest,
            context: grpc.aio.ServicerContext) -> catalog_pb2.SetProviderModelActiveResponse:
        self._authorize(context)
        async with self._database():
            row = await self._core.set_active(request.provider, request.model_id, request.is_active,
                                              self._actor(context))
        return catalog_pb2.SetProviderModelActiveResponse(provider_model=provider_model_message(row))

    async def ListCatalog(self, request: catalog_pb2.ListCatalogRequest,
                          context: grpc.aio.ServicerContext) -> catalog_pb2.ListCatalogResponse:
        self._authorize(context)
        snapshot = self._core.snapshot
        return catalog_pb2.ListCatalogResponse(
            models=[model_message(snapshot, model) for model in snapshot.models.values()],
            provider_models=[provider_model_message(row) for row in snapshot.all_rows()],
            catalog_version=snapshot.version,
        )

    async def ReloadCatalog(self, request: catalog_pb2.ReloadCatalogRequest,
                            context: grpc.aio.ServicerContext) -> catalog_pb2.ReloadCatalogResponse:
        self._authorize(context)
        async with self._database():
            summary = await self._core.reload(self._actor(context))
        return catalog_pb2.ReloadCatalogResponse(
            catalog_version=summary.version, models=summary.models,
            provider_models=summary.provider_models)

    async def ListAuditEvents(self, request: catalog_pb2.ListAuditEventsRequest,
                              context: grpc.aio.ServicerContext) -> catalog_pb2.ListAuditEventsResponse:
        self._authorize(context)
        async with self._database():
            events = await self._core.audit_events(request.limit)
        response = catalog_pb2.ListAuditEventsResponse()
        for event in events:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(event.time)
            response.events.add(time=stamp, actor=event.actor, action=event.action, detail=event.detail)
        return response


def registrars(core: CatalogCore, admin_token: str, database: DatabaseGuard) -> list[Registrar]:
    public = CatalogServicer(core)
    admin = CatalogAdminServicer(core, admin_token, database)
    return [
        lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(public, server),
        lambda server: catalog_pb2_grpc.add_CatalogAdminServiceServicer_to_server(admin, server),
    ]


CATALOG_ADMIN_SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogAdminService"].full_name
SERVICE_NAMES = (
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    CATALOG_ADMIN_SERVICE_NAME,
)
