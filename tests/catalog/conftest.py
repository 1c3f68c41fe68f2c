"""Fixtures for the catalog tests: a database on SQLite and PostgreSQL, a private copy
of the bundled catalog file (reload tests edit it), and a real catalog server."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantized.catalog.v1 import catalog_pb2_grpc
from quantized_runtime.channels import open_channel
from quantized_runtime.defaults import sqlite_url

from catalog_svc.main import RunningCatalog, start
from catalog_svc.settings import BUNDLED_CATALOG_FILE, CatalogSettings

ADMIN_TOKEN = "test-admin-token"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path, "catalog.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def catalog_file(tmp_path) -> Path:
    path = tmp_path / "catalog.yaml"
    shutil.copyfile(BUNDLED_CATALOG_FILE, path)
    return path


def make_settings(database_url: str, catalog_file: Path, data_dir: Path, **overrides) -> CatalogSettings:
    values = dict(listen="127.0.0.1:0", database_url=database_url, file=catalog_file,
                  admin_token=ADMIN_TOKEN, data_dir=data_dir, enable_sandbox=True)
    values.update(overrides)
    return CatalogSettings(**values)


@dataclass
class CatalogClient:
    running: RunningCatalog
    catalog: catalog_pb2_grpc.CatalogServiceStub
    admin: catalog_pb2_grpc.CatalogAdminServiceStub


@contextlib.asynccontextmanager
async def serving(settings: CatalogSettings) -> AsyncIterator[CatalogClient]:
    """A real catalog server on a free loopback port, with stubs on one channel."""
    running = await start(settings)
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        yield CatalogClient(running, catalog_pb2_grpc.CatalogServiceStub(channel),
                            catalog_pb2_grpc.CatalogAdminServiceStub(channel))
    finally:
        await channel.close()
        await running.stop(0)


@pytest.fixture
async def catalog_server(catalog_file, tmp_path) -> AsyncIterator[CatalogClient]:
    """The service on SQLite; test_store runs the same storage on PostgreSQL too."""
    async with serving(make_settings(sqlite_url(tmp_path, "catalog.db"), catalog_file, tmp_path)) as client:
        yield client
