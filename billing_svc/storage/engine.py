"""Engines for the two supported databases, each with its write-locking strategy.

Billing runs on a SQLite file or on PostgreSQL, and on nothing else: each has a
money path written for it (money_store.py). An in-memory SQLite database cannot
be shared by the request path's own sqlite3 connection and the engine, so such a
URL, like a URI-form one or another database's, is refused at start
(`database_url_problem`).

PostgreSQL: READ COMMITTED; every money write is a conditional UPDATE ... RETURNING
on the account row, which takes the row lock, so concurrent writers of one account
queue on that lock and each re-checks the condition against the committed row.
The request path's single statements use an asyncpg pool of their own.

SQLite (the embedded default): one writer at a time for the whole file. Write
transactions start with BEGIN IMMEDIATE, which takes the write lock up front (a
deferred BEGIN would let two transactions read the same balance and then fail on
upgrade), with a busy timeout for other processes sharing the file. Inside one
process the writers also queue on an asyncio lock, so they wait in order instead
of polling SQLite's busy handler. Reads use a plain deferred BEGIN; in WAL mode
they never wait for the writer. The request path on a SQLite file runs its short
transactions synchronously on the event loop instead (see sqlite_transactions.py),
queued on the same writer lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from billing_svc.storage.sqlite_transactions import SqliteTransactions
from quantized_runtime.database_health import asyncpg_connect_args

log = logging.getLogger("quantized.billing.database")

SQLITE_BUSY_TIMEOUT_MS = 10_000
READ_ONLY_OPTION = "billing_read_only"
SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"


def database_url_problem(url: str) -> str | None:
    """Why billing cannot run on the database at `url`; None when it can."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "is not a database URL"
    supported = (f"use {SQLITE_DRIVER}:///path/to/billing.db (a SQLite file) "
                 f"or {POSTGRES_DRIVER}://user@host/database")
    if parsed.drivername == POSTGRES_DRIVER:
        return None
    if parsed.drivername != SQLITE_DRIVER:
        return f"{parsed.drivername!r} is not a supported database: {supported}"
    if not parsed.database or parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
        return f"an in-memory SQLite database is not supported: {supported}"
    if parsed.query:
        return f"SQLite URL options (such as ?uri=true) are not supported: {supported}"
    return None


def create_engine(url: str, pool_size: int) -> AsyncEngine:
    # hide_parameters: bound values (key hashes, names) stay out of errors and logs.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0,
                                     hide_parameters=True)
        _install_sqlite_hooks(engine)
        return engine
    # No pre-ping: it would cost a round trip per checkout on the request path; a
    # dropped connection fails its call and is replaced by the pool.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                               hide_parameters=True)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so the "begin" hook below decides its kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """Opens write and read transactions with the right strategy for the dialect."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        sqlite_writer_queue = asyncio.Lock()
        self._writer_queue: contextlib.AbstractAsyncContextManager[Any] = (
            sqlite_writer_queue if self.dialect == "sqlite" else contextlib.nullcontext())
        # The money path's transactions on a SQLite file; None on PostgreSQL.
        self.sqlite: SqliteTransactions | None = (
            SqliteTransactions(str(engine.url.database), sqlite_writer_queue,
                               SQLITE_BUSY_TIMEOUT_MS / 1000)
            if self.dialect == "sqlite" else None)
        # PostgreSQL's request path: asyncpg connections of their own (opened on
        # first use), without SQLAlchemy in between.
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_pool_opening = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed on normal exit, rolled back on any exception."""
        async with self._writer_queue, self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY_OPTION: True})
            yield conn

    @contextlib.asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection in autocommit (no BEGIN/COMMIT round trips),
        for work done in one statement, atomic on its own. PostgreSQL only.

        SQLAlchemy's execution layer (connection checkout, compiled-statement
        cache, result rows) cost more CPU than the statement's round trip; asyncpg
        keeps each statement prepared per connection by itself."""
        pool = self._driver_pool or await self._open_driver_pool()
        conn = await pool.acquire()
        try:
            yield conn
        finally:
            await _release(pool, conn)

    async def _open_driver_pool(self) -> asyncpg.Pool:
        if self.dialect != "postgresql":
            raise RuntimeError("driver connections are for PostgreSQL")
        async with self._driver_pool_opening:
            if self._driver_pool is None:
                size = self.engine.pool.size()  # type: ignore[attr-defined]
                args, options = asyncpg_connect_args(self.engine)
                self._driver_pool = await asyncpg.create_pool(
                    *args, min_size=1, max_size=2 * size, **options)
        return self._driver_pool

    async def dispose(self) -> None:
        if self._driver_pool is not None:
            await self._driver_pool.close()
        if self.sqlite is not None:
            await self.sqlite.close()
        await self.engine.dispose()


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Return a connection to the pool. The work done on it stands whatever happens
    here (committed, or failed on its own): a session the server ended after the
    commit (PostgreSQL stopping) fails only the pool's reset, and the pool then
    drops the connection itself, so that failure must not turn a committed
    operation into an error."""
    try:
        await pool.release(conn)
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("a database connection was dropped on its way back to the pool",
                    extra={"fields": {"error": type(error).__name__}})
