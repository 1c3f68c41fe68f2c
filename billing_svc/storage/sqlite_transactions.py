"""Short SQLite transactions run synchronously on the event loop.

The request path on SQLite (Authenticate, and the operations of a Ledger batch)
is a handful of indexed statements: with WAL and `synchronous = NORMAL` a whole transaction,
commit included, is cheap. Handing each statement to aiosqlite's thread (a
future, a thread switch and a loop wake-up per statement) cost far more than the
work itself (docs/benchmarks.md), so these transactions run directly on the
loop, on one `sqlite3` connection, through the standard library driver (which
keeps each statement prepared in its cache).

Nothing awaits between BEGIN and COMMIT, so inside the process these
transactions cannot interleave with each other. They still queue on the
process's writer lock, which the aiosqlite path (administration, the reaper)
holds across its awaits.

Another process may hold the file's write lock (a second replica, an operator's
tool). SQLite's own busy handler would then sleep inside `BEGIN IMMEDIATE` and
freeze the loop, so this connection has `busy_timeout = 0`: a busy database is
reported at once, the transaction is rolled back and retried after an
asyncio sleep (1 ms doubling to 50 ms), up to the same 10 s overall as the
aiosqlite path, after which the `database is locked` error is raised.

Checkpoints (copying the WAL back into the database file) end with fsyncs, long
enough to stall every request on the loop, so they are kept off the loop too: this connection does not
checkpoint automatically; every CHECKPOINT_EVERY_COMMITS write transactions a
PASSIVE checkpoint runs in a worker thread on its own connection. A PASSIVE
checkpoint never waits for, nor blocks, readers and writers.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")

log = logging.getLogger("quantized.billing.sqlite")

FIRST_RETRY_DELAY_SECONDS = 0.001
MAX_RETRY_DELAY_SECONDS = 0.05
# SQLite's own automatic checkpoint runs every 1,000 WAL pages; a Reserve or a
# Settle writes about 7 pages, so this keeps the WAL at a similar size.
CHECKPOINT_EVERY_COMMITS = 150
# SQLite's result codes for "another connection holds the lock".
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return "database is locked" in str(error)
    # The primary code is the low byte (SQLITE_BUSY_RECOVERY and the like are BUSY).
    return code & 0xFF in _BUSY_CODES


class SqliteTransactions:
    """Runs `work(cursor)` as one transaction on a private sqlite3 connection."""

    def __init__(self, path: str, writer_queue: asyncio.Lock, busy_timeout_seconds: float,
                 ) -> None:
        # Autocommit mode: BEGIN and COMMIT are ours. The connection is only ever
        # used from the event loop's thread; disposal may run elsewhere.
        self._path = path
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._cursor = self._connection.cursor()
        # Setting up may wait for another process (nothing is served yet); from
        # then on a busy file is reported at once and waited for in _run.
        busy_ms = int(busy_timeout_seconds * 1000)
        for pragma in (f"busy_timeout = {busy_ms}", "journal_mode = WAL",
                       "synchronous = NORMAL", "foreign_keys = ON", "wal_autocheckpoint = 0",
                       "busy_timeout = 0"):
            self._cursor.execute(f"PRAGMA {pragma}")
        self._writer_queue = writer_queue
        self._busy_timeout_seconds = busy_timeout_seconds
        self._commits_since_checkpoint = 0
        self._closed = False
        self._checkpointing: asyncio.Future[None] | None = None
        # Opened by the first checkpoint, used by one worker thread at a time.
        self._checkpoint_connection: sqlite3.Connection | None = None

    async def write(self, work: Callable[[sqlite3.Cursor], Result]) -> Result:
        """BEGIN IMMEDIATE, work, COMMIT; rolled back when work raises."""
        async with self._writer_queue:
            result = await self._run("BEGIN IMMEDIATE", work)
        self._commits_since_checkpoint += 1
        if (self._commits_since_checkpoint >= CHECKPOINT_EVERY_COMMITS
                and self._checkpointing is None):
            self._commits_since_checkpoint = 0
            self._checkpointing = asyncio.get_running_loop().run_in_executor(
                None, self._checkpoint)
            self._checkpointing.add_done_callback(self._checkpoint_done)
        return result

    async def read(self, work: Callable[[sqlite3.Cursor], Result]) -> Result:
        """A deferred transaction: in WAL mode it never waits for a writer."""
        return await self._run("BEGIN", work)

    async def _run(self, begin: str, work: Callable[[sqlite3.Cursor], Result]) -> Result:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._busy_timeout_seconds
        delay = FIRST_RETRY_DELAY_SECONDS
        while True:
            try:
                return self._once(begin, work)
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or loop.time() >= give_up_at:
                    raise
            # Rolled back, nothing written: wait without blocking the loop, then retry.
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    def _once(self, begin: str, work: Callable[[sqlite3.Cursor], Result]) -> Result:
        cursor = self._cursor
        cursor.execute(begin)
        try:
            result = work(cursor)
            cursor.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.rollback()
            raise
        return result

    def _checkpoint(self) -> None:
        """In a worker thread: copy what the WAL holds into the database file."""
        if self._checkpoint_connection is None:
            self._checkpoint_connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False)
        self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_done(self, checkpoint: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not checkpoint.cancelled() and checkpoint.exception() is not None:
            # The WAL only grows until the next checkpoint; nothing is lost.
            log.warning("SQLite checkpoint failed; retrying after more commits",
                        exc_info=checkpoint.exception())

    async def close(self) -> None:
        """Idempotent: a stopping service may be stopped again."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
        self._cursor.close()
        self._connection.close()

