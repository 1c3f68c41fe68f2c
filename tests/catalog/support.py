"""Helpers for the catalog tests: settings for a test server, and a served client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from quantized.catalog.v1 import catalog_pb2_grpc
from tests.harness import serving

from catalog_svc.main import RunningCatalog, start
from catalog_svc.settings import CatalogSettings

ADMIN_TOKEN = "test-admin-token-for-the-catalog-0123"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def make_settings(database_url: str, catalog_file: Path, data_dir: Path, **overrides) -> CatalogSettings:
    values = dict(listen="127.0.0.1:0", database_url=database_url, file=catalog_file,
                  admin_token=ADMIN_TOKEN, data_dir=data_dir, enable_sandbox=True)
    values.update(overrides)
    return CatalogSettings(**values)


@dataclass
class CatalogClient:
    running: RunningCatalog
    channel: grpc.aio.Channel
    catalog: catalog_pb2_grpc.CatalogServiceStub
    admin: catalog_pb2_grpc.CatalogAdminServiceStub


@contextlib.asynccontextmanager
async def serving_catalog(settings: CatalogSettings) -> AsyncIterator[CatalogClient]:
    """A real catalog server on a free loopback port, with stubs on one channel."""
    async with serving(start(settings)) as served:
        yield CatalogClient(served.running, served.channel,
                            catalog_pb2_grpc.CatalogServiceStub(served.channel),
                            catalog_pb2_grpc.CatalogAdminServiceStub(served.channel))
