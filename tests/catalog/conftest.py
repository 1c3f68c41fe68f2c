"""Fixtures for the catalog tests: a database on SQLite and PostgreSQL, a private copy
of the bundled catalog file (reload tests edit it), and a real catalog server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quantized_runtime.defaults import sqlite_url

from catalog_svc.settings import BUNDLED_CATALOG_FILE

from .support import CatalogClient, make_settings, serving_catalog


@pytest.fixture
def catalog_file(tmp_path) -> Path:
    path = tmp_path / "catalog.yaml"
    shutil.copyfile(BUNDLED_CATALOG_FILE, path)
    return path


@pytest.fixture
async def catalog_server(catalog_file, tmp_path) -> AsyncIterator[CatalogClient]:
    """The service on SQLite; test_store runs the same storage on PostgreSQL too."""
    async with serving_catalog(make_settings(sqlite_url(tmp_path, "catalog.db"), catalog_file, tmp_path)) as client:
        yield client
