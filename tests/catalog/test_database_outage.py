"""PostgreSQL stopped under a running catalog (issue 15, items 4 and 5). The
request path answers from the in-memory snapshot, which nobody can change while
the database is down, so CatalogService (and the overall health) stays SERVING
and keeps resolving routes; CatalogAdminService, which needs the database, turns
NOT_SERVING and its database calls answer SERVICE_UNAVAILABLE, never INTERNAL.
Once PostgreSQL is back it serves again without a restart."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized.catalog.v1 import catalog_pb2
from quantized_runtime import client as rpc
from quantized_runtime.errors import Reason, ServiceError
from tests.polling import eventually_true

from catalog_svc.servicer import CATALOG_ADMIN_SERVICE_NAME, SERVICE_NAMES

from .support import ADMIN_METADATA, make_settings, serving_catalog

pytestmark = pytest.mark.postgres

CALL_BOUND_SECONDS = 10
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROUTE = catalog_pb2.ResolveRouteRequest(model="sandbox-image-1", feature="image_generation")


async def test_catalog_keeps_resolving_from_its_snapshot_and_its_admin_follows_postgres(
        throwaway_postgres, catalog_file, tmp_path):
    url = await throwaway_postgres.create_database("catalog")
    async with serving_catalog(make_settings(url, catalog_file, tmp_path)) as client:
        health = health_pb2_grpc.HealthStub(client.channel)

        async def statuses() -> dict[str, int]:
            return {name: (await health.Check(health_pb2.HealthCheckRequest(service=name),
                                              timeout=CALL_BOUND_SECONDS)).status
                    for name in ("", *SERVICE_NAMES)}

        async def audit() -> catalog_pb2.ListAuditEventsResponse:
            return await rpc.call(client.admin.ListAuditEvents, catalog_pb2.ListAuditEventsRequest(),
                                  timeout=CALL_BOUND_SECONDS, metadata=ADMIN_METADATA)

        assert set((await statuses()).values()) == {SERVING}
        assert (await audit()).events

        await throwaway_postgres.stop()

        async def only_admin_down() -> bool:
            return await statuses() == {"": SERVING, SERVICE_NAMES[0]: SERVING,
                                        CATALOG_ADMIN_SERVICE_NAME: NOT_SERVING}
        await eventually_true(only_admin_down)
        with pytest.raises(ServiceError) as caught:
            await audit()
        assert caught.value.reason == Reason.SERVICE_UNAVAILABLE
        resolved = await rpc.call(client.catalog.ResolveRoute, ROUTE, timeout=CALL_BOUND_SECONDS)
        assert resolved.routes

        await throwaway_postgres.start()

        async def all_serving() -> bool:
            return set((await statuses()).values()) == {SERVING}
        await eventually_true(all_serving)
        assert (await audit()).events
