"""Reads on the API's hot paths: compiled once, run on the driver's own connection.

Through an ORM session every query cost 0.3-0.5 ms of CPU on SQLite (issue 12: the token
lookup 0.50 ms, one sync task 0.53, a page 0.74): four or five hand-offs to aiosqlite's
thread per query (cursor, execute, fetch, close, the closing rollback), each a wake-up of
that thread and of the event loop, on two cores that the GIL and wrk share. An API GET
made three of them, so the coordinator saturated near 500 req/s, 0.02-0.03 x a bare
aiohttp handler. Here a request's statements are SQLAlchemy selects compiled once per
dialect, run with positional parameters on a plain DB-API connection, all of a request's
statements in one snapshot:

* SQLite: one ``sqlite3`` connection per worker thread of a small pool, and one hand-off
  per request (``BEGIN``, the statements, ``ROLLBACK`` in one executor call);
* MariaDB: asyncmy connections of our own (asyncmy is asynchronous already: no thread),
  in autocommit: a statement is one round trip (a session's took two or three: the
  pool's ping, the statement, the closing rollback), several share a read-only transaction
  sent with them in one round trip.

A page and its total are best one statement (the total a scalar subquery): one snapshot
and one round trip.

Driver errors leave as SQLAlchemy's (``sqlalchemy.exc.OperationalError`` ...), so the
error envelope tells an unreachable database (503) from a bug (500) as for every route.
Values come back as the API shows them: ``UtcDateTime`` columns as aware UTC datetimes in
whole seconds (coordinator/api/timefmt.py), booleans as bool.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from sqlalchemy import Boolean, Select
from sqlalchemy import exc as sa
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.db.types import UtcDateTime

Row = tuple[Any, ...]
# A select of any columns (Select is generic over the types of its columns).
AnySelect = Select[*tuple[Any, ...]]
Convert = Callable[[Any], Any]
# Worker threads for SQLite reads: a read takes tens of microseconds, two cores run them.
SQLITE_THREADS = 2
# MariaDB connections kept open for reads (8 API clients at once), and the most open at
# once (as the session pool's 10 + 10 overflow: the server's max_connections is shared).
MYSQL_IDLE_MAX = 10
MYSQL_OPEN_MAX = 20


def fields_of(shape: type[msgspec.Struct], fields: dict[str, Any]) -> tuple[Any, ...]:
    """The values of ``fields``, which must name ``shape``'s fields (an API struct) in its
    order: the struct is then built from a row as it comes (``shape(*row)``), and a field
    added to it without its column fails at import, not in an answer."""
    names = tuple(fields)
    if names != shape.__struct_fields__:
        raise ValueError(f"{shape.__name__}: fields {names} are not its own {shape.__struct_fields__}")
    return tuple(fields.values())


def _utc_seconds(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        # "YYYY-MM-DD HH:MM:SS.ffffff" from SQLite and (as text, see MysqlReads) MariaDB;
        # parsing the seconds with the zone is 0.2 us, .replace(microsecond=0, tzinfo=UTC)
        # on top of a parse 0.8 (30 per page of sync tasks)
        return datetime.fromisoformat(value[:19] + "+00:00")
    return value.replace(microsecond=0, tzinfo=UTC)  # type: ignore[no-any-return]


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _converter(column_type: Any) -> Convert | None:
    if isinstance(column_type, UtcDateTime):
        return _utc_seconds
    if isinstance(column_type, Boolean):
        return _bool
    return None


class Compiled:
    """One statement for one dialect: SQL text, the order of its parameters, the values of
    the literals in it, and how to convert each result column."""

    def __init__(self, stmt: AnySelect, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        if compiled.post_compile_params:
            # an IN list is rendered per execution; spell it as ORs of equalities instead
            raise ValueError(f"fast reads compile once; no IN (...) lists: {compiled.string}")
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.literals = {k: v for k, v in compiled.params.items() if v is not None}
        converters = [_converter(c.type) for c in stmt.selected_columns]
        self.converters = tuple((i, f) for i, f in enumerate(converters) if f is not None)

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        literals = self.literals
        return tuple(params[n] if n in params else literals[n] for n in self.names)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Row]:
        if not self.converters:
            return [tuple(r) for r in raw]
        out = []
        for r in raw:
            row = list(r)
            for i, f in self.converters:
                row[i] = f(row[i])
            out.append(tuple(row))
        return out


class Query:
    """A SELECT with named ``bindparam``s, compiled on first use for each dialect (for
    ``only`` that one: SQL of its own, as coordinator/db/json_select.py's)."""

    def __init__(self, stmt: AnySelect, only: str | None = None) -> None:
        self.stmt = stmt
        self.only = only
        self._by_dialect: dict[str, Compiled] = {}
        DECLARED.append(self)

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            if self.only not in (None, dialect.name):
                raise ValueError(f"a statement for {self.only} only, not {dialect.name}: {self.stmt}")
            found = self._by_dialect[dialect.name] = Compiled(self.stmt, dialect)
        return found


# Every Query made (tests/unit/test_fast_reads.py compiles each for both databases).
DECLARED: list[Query] = []
Call = tuple[Query, dict[str, Any]]


class Reads(Protocol):
    dialect: Dialect

    async def fetch(self, *calls: Call, short: bool = True) -> list[list[Row]]:
        """The rows of each statement, all read in one snapshot. ``short``: every statement
        finds a few rows through an index (no scan that grows with a table or an offset)."""
        ...

    async def close(self) -> None: ...


def _as_sqlalchemy(exc: Exception, sql: str) -> sa.DBAPIError:
    """The driver's error as SQLAlchemy's, which coordinator/db/outage.py reads."""
    kind: type[sa.DBAPIError] = sa.DatabaseError
    name = type(exc).__name__
    if name == "OperationalError":
        kind = sa.OperationalError
    elif name == "InterfaceError":
        kind = sa.InterfaceError
    elif name in ("IntegrityError", "ProgrammingError", "DataError"):
        kind = getattr(sa, name)
    return kind(sql, None, exc)  # type: ignore[no-any-return]


class SqliteReads:
    """Short reads on the event loop's own connection, the rest on a worker thread's.

    WAL: readers do not wait for the writer. A short read (a few rows found by an index:
    5-50 us measured) costs less on the event loop than the hand-off to a thread and back
    (with that hand-off a page of sync tasks cost 0.45 ms of CPU per request, without it
    0.2). A read that may scan (a deep page's offset) goes to a worker thread, and so does a
    short one that meets a lock (rare in WAL: a checkpoint resetting the log), so the loop
    never waits for one.
    """

    def __init__(self, path: str, dialect: Dialect) -> None:
        self.path = path
        self.dialect = dialect
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(SQLITE_THREADS, thread_name_prefix="fast-reads")
        # The loop's connection gives up at once on a lock (timeout 0) rather than block the loop.
        self._on_loop = self._open(timeout=0)

    def _open(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        with self._lock:
            self._opened.append(conn)
        return conn

    def _worker_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open(timeout=30)
        return conn

    def _run(self, conn: sqlite3.Connection, calls: tuple[Call, ...]) -> list[list[Row]]:
        def run_each() -> list[list[Row]]:
            out = []
            for query, params in calls:
                c = query.compiled(self.dialect)
                out.append(c.rows(conn.execute(c.sql, c.args(params)).fetchall()))
            return out

        if len(calls) == 1:  # a statement is its own snapshot
            return run_each()
        conn.execute("BEGIN")
        try:
            return run_each()
        finally:
            conn.execute("ROLLBACK")

    def _on_worker(self, calls: tuple[Call, ...]) -> list[list[Row]]:
        return self._run(self._worker_connection(), calls)

    async def fetch(self, *calls: Call, short: bool = True) -> list[list[Row]]:
        try:
            if short:
                try:
                    return self._run(self._on_loop, calls)
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                        raise
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._on_worker, calls)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy(exc, calls[0][0].compiled(self.dialect).sql) from exc

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


MULTI_STATEMENTS = 1 << 16  # asyncmy.constants.CLIENT.MULTI_STATEMENTS (imported late, as asyncmy is)


def _mysql_conversions() -> dict[Any, Any]:
    """asyncmy's, but DATETIME stays text: _utc_seconds parses it in 0.2 us, where asyncmy's
    parse and then the zone's .replace() took 1.8 us (30 per page of sync tasks)."""
    from asyncmy.constants import FIELD_TYPE
    from asyncmy.converters import conversions

    return {**conversions, FIELD_TYPE.DATETIME: str}


class MysqlReads:
    """asyncmy connections of our own, kept idle between requests."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.dialect = engine.dialect
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._kwargs["autocommit"] = True
        # Our statements only (compiled SQL, values escaped by asyncmy): see _run.
        self._kwargs["client_flag"] = self._kwargs.get("client_flag", 0) | MULTI_STATEMENTS
        self._kwargs["conv"] = _mysql_conversions()
        self._idle: list[Any] = []
        self._open = asyncio.Semaphore(MYSQL_OPEN_MAX)

    async def _connect(self) -> Any:
        import asyncmy

        return await asyncmy.connect(*self._args, **self._kwargs)

    async def _run(self, conn: Any, calls: tuple[Call, ...]) -> list[list[Row]]:
        compiled = [(query.compiled(self.dialect), params) for query, params in calls]
        async with conn.cursor() as cur:
            if len(compiled) == 1:  # autocommit: one statement is one round trip and its own snapshot
                c, params = compiled[0]
                await cur.execute(c.sql, c.args(params))
                return [c.rows(await cur.fetchall())]
            # Several share a read-only transaction, all sent at once (multi-statements: one
            # round trip, where a statement each took four; /templates/{id}/instances cost
            # the coordinator and mariadbd about a third less)
            sql = ";".join(("START TRANSACTION READ ONLY", *(c.sql for c, _ in compiled), "COMMIT"))
            await cur.execute(sql, tuple(a for c, params in compiled for a in c.args(params)))
            out = []
            for c, _ in compiled:
                await cur.nextset()
                out.append(c.rows(await cur.fetchall()))
            while await cur.nextset():  # the COMMIT's answer
                pass
        return out

    async def fetch(self, *calls: Call, short: bool = True) -> list[list[Row]]:
        async with self._open:
            return await self._fetch(calls)

    async def _fetch(self, calls: tuple[Call, ...]) -> list[list[Row]]:
        import asyncmy.errors

        lost = (asyncmy.errors.OperationalError, asyncmy.errors.InterfaceError)
        if self._idle:
            conn = self._idle.pop()
            try:
                return self._keep(conn, await self._run(conn, calls))
            except lost:
                # Closed by the server meanwhile (wait_timeout, a restart), and so probably
                # the other kept ones: reads are safe to repeat, once, on a new connection.
                conn.close()
                await self.close()
            except asyncmy.errors.Error as exc:
                conn.close()
                raise _as_sqlalchemy(exc, calls[0][0].compiled(self.dialect).sql) from exc
            except BaseException:
                conn.close()  # cancelled mid-statement: its state is unknown
                raise
        conn = await self._connect_or_raise()
        try:
            return self._keep(conn, await self._run(conn, calls))
        except asyncmy.errors.Error as exc:
            conn.close()
            raise _as_sqlalchemy(exc, calls[0][0].compiled(self.dialect).sql) from exc
        except BaseException:
            conn.close()
            raise

    def _keep(self, conn: Any, result: list[list[Row]]) -> list[list[Row]]:
        if len(self._idle) < MYSQL_IDLE_MAX:
            self._idle.append(conn)
        else:
            conn.close()
        return result

    async def _connect_or_raise(self) -> Any:
        import asyncmy.errors

        try:
            return await self._connect()
        except (asyncmy.errors.OperationalError, asyncmy.errors.InterfaceError, OSError) as exc:
            raise sa.OperationalError("connect", None, exc) from exc

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def open_reads(engine: AsyncEngine) -> Reads:
    """The fast readers for ``engine``'s database."""
    if engine.dialect.name == "sqlite":
        database = make_url(engine.url).database
        if not database or database == ":memory:":
            raise ValueError("fast reads need a SQLite file (an in-memory database is one per connection)")
        return SqliteReads(database, engine.dialect)
    return MysqlReads(engine)
