"""A service's database as a watched dependency (catalog and billing).

`DatabaseProbe` runs `SELECT 1` on a PostgreSQL connection of its own, so a pool
busy with requests never makes the database look down. An embedded SQLite file
is part of the process, so it is not probed. `database_unreachable` tells a lost
or refused connection from every other database error, and `DatabaseGuard` turns
the first into SERVICE_UNAVAILABLE (the caller may retry; the edge answers 503)
and asks the watch to probe at once; any other error stays what it was (a bug is
still INTERNAL).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import asyncpg
from sqlalchemy import exc as sqlalchemy_errors
from sqlalchemy.ext.asyncio import AsyncEngine

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.health import Dependency, DependencyWatch, serve_health_by_dependencies
from quantized_runtime.server import RunningServer

log = logging.getLogger("quantized.database")

DATABASE = "database"

# The connection was refused, lost or ended by the server (stopping, starting,
# crashed): SQLSTATE classes 08 and 57P0x, or the socket's own error.
_CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


# Errors of the driver's own state. A session the server ended while the driver
# was using or resetting it shows up as one of these ("cannot switch to state ...",
# "the underlying connection is closed"), but so would a bug, so they count as
# an outage only when a probe confirms the database cannot be reached.
_DRIVER_STATE = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def database_unreachable(error: BaseException) -> bool:
    """True when `error` (or what caused it) is a lost or refused database connection."""
    for link in _causes(error):
        if isinstance(link, _CONNECTION_LOST):
            return True
        # SQLAlchemy marks a disconnect it recognised in its driver's error.
        if isinstance(link, sqlalchemy_errors.DBAPIError) and link.connection_invalidated:
            return True
    return False


def asyncpg_connect_args(engine: AsyncEngine) -> tuple[list[Any], dict[str, Any]]:
    """asyncpg's connect arguments for the engine's URL, as SQLAlchemy reads it
    (host, port, user, ssl, ... from the URL and its query)."""
    args, options = engine.dialect.create_connect_args(engine.url)
    # SQLAlchemy's names for its own asyncpg adapter's options.
    options.pop("prepared_statement_name_func", None)
    options.pop("async_creator_fn", None)
    if "prepared_statement_cache_size" in options:
        options["statement_cache_size"] = options.pop("prepared_statement_cache_size")
    return list(args), dict(options)


class DatabaseProbe:
    """`SELECT 1` on one PostgreSQL connection kept for probing. After any failure
    (a timeout's cancellation included) the connection is dropped at once, without
    waiting on a server that may not answer, and the next probe opens a new one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._args, self._options = asyncpg_connect_args(engine)
        self._connection: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(*self._args, **self._options)
            await self._connection.fetchval("SELECT 1")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None


class DatabaseGuard:
    """`async with guard():` around work that uses the database: a lost or
    refused connection becomes SERVICE_UNAVAILABLE and a probe is run at once."""

    def __init__(self, service: str, watch: DependencyWatch) -> None:
        self._message = f"the {service} database is unavailable; retry shortly"
        self._watch = watch

    async def _outage(self, error: Exception) -> bool:
        if isinstance(error, ServiceError):
            return False  # a refusal of the service's own, whatever it was handling
        if database_unreachable(error):
            return True
        return (any(isinstance(link, _DRIVER_STATE) for link in _causes(error))
                and not await self._watch.is_up(DATABASE))

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        try:
            yield
        except Exception as error:
            if not await self._outage(error):
                raise
            # The type only: a driver's message may name the host and the user.
            log.warning("database unreachable", extra={"fields": {"error": type(error).__name__}})
            self._watch.suspect(DATABASE)
            raise ServiceError(Reason.SERVICE_UNAVAILABLE, self._message) from None


class DatabaseHealth:
    """The watch on a service's database and the guard for the code that uses it."""

    def __init__(self, service: str, engine: AsyncEngine) -> None:
        self._probe = DatabaseProbe(engine) if engine.dialect.name == "postgresql" else None
        self.watch = DependencyWatch([Dependency(DATABASE, self._probe)] if self._probe else [])
        self.guard = DatabaseGuard(service, self.watch)

    def start(self, server: RunningServer, needs_database: Iterable[str]) -> None:
        """Watch the database: each health name in `needs_database` is NOT_SERVING while it is down."""
        needs: Mapping[str, Iterable[str]] = {name: (DATABASE,) for name in needs_database}
        self.watch.on_change(serve_health_by_dependencies(server.health, needs))
        self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        if self._probe is not None:
            self._probe.close()
