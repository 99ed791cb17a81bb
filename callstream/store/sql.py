"""SQLAlchemy Core implementation of :class:`~callstream.store.base.Store`.

SQLite (the embedded default, WAL mode) and PostgreSQL (asyncpg; several nodes may share
one database, docs/cluster.md) share this code; only the migration DDL words and
connection set-up differ, and what is SQLite's alone (PRAGMAs, inline statements, the
stdlib key reader, the node lock) is set up for SQLite only. Writes of one process go
through one asyncio lock: SQLite allows one writer, so they would otherwise pile up on
``SQLITE_BUSY``. On PostgreSQL the outbox's lease writes keep that lock (a lease renewal
and a settle of one worker lock the same rows in different orders), while
:meth:`SqlStore.commit` runs concurrently: a commit waiting for the database's fsync must
not hold up the next call's.

**Idempotency across nodes.** A command's answer is inserted first in its change's
transaction, and only if its ``(call_control_id, command_id)`` has none: the primary key
makes a second node's insert wait for the first's transaction and then find its row, so
the second change is rolled back whole and its caller gets the first answer
(:class:`CommandAlreadyDone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import orjson
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from callstream.store import schema as t
from callstream.store.direct_sqlite import DirectSqlite, Statement
from callstream.store.exceptions import (
    CommandAlreadyDone,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from callstream.store.inline_sqlite import Checkpointer, connect_inline
from callstream.store.key_reader import KeyReader
from callstream.store.migrations import DIALECT_WORDS, LATEST_VERSION, MIGRATIONS
from callstream.store.records import (
    ApiKey,
    Application,
    CallRecord,
    CallResource,
    Change,
    IdempotencyRecord,
    OutboxEvent,
    OutboxStatus,
    Receipt,
)

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


#: The PostgreSQL advisory lock that serialises migrations ("csmigr" in ASCII).
MIGRATION_LOCK_KEY = 0x63736D69677200

#: The one PostgreSQL driver callstream runs on (an async one; see docs/cluster.md).
POSTGRES_DRIVER = "postgresql+asyncpg"


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for ``url``: ``postgresql://`` (and ``postgres://``) mean asyncpg.

    Raises:
        StoreUnavailable: a PostgreSQL URL names another driver.
    """
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"{POSTGRES_DRIVER}{sep}{rest}"
    if scheme.startswith("postgresql+") and scheme != POSTGRES_DRIVER:
        raise StoreUnavailable(
            f"database URL driver {scheme!r} is not supported: use postgresql://"
            f" (or {POSTGRES_DRIVER}://)")
    return url


class SqlStore:
    """A :class:`Store` over an SQLAlchemy async engine URL."""

    def __init__(self, url: str, *, clock: Any = None, inline_sqlite: bool = True) -> None:
        import time

        self.url = engine_url(url)
        self._clock = clock or time.time
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self.is_sqlite = self.url.startswith("sqlite")
        self.inline_sqlite = inline_sqlite
        self._checkpointer: Checkpointer | None = None
        self._key_reader: KeyReader | None = None
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}
        self._direct: DirectSqlite | None = None
        self._direct_statements: dict[Any, Statement] = {}

    # -- lifecycle ---------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("store is not open")
        return self._engine

    async def open(self) -> None:
        # Every connection is used as a context manager, which ends its transaction
        # (commit in writing(), rollback of the autobegun one in reading()); the pool's
        # own rollback on return would be one more round trip to the driver thread.
        kwargs: dict[str, Any] = {"pool_reset_on_return": None}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            database = make_url(self.url).database
            if database and database != ":memory:" and self.inline_sqlite:
                # Statements run on the loop thread: see store/inline_sqlite.py.
                kwargs["async_creator"] = partial(connect_inline, database, timeout=30)
                self._checkpointer = Checkpointer(database)
        engine = create_async_engine(self.url, **kwargs)
        manual_checkpoints = self._checkpointer is not None
        if self.is_sqlite:

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL survives process crashes (kill -9); only an OS crash can
                # lose the last transactions.
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                if manual_checkpoints:  # done off the loop thread by the Checkpointer
                    cur.execute("PRAGMA wal_autocheckpoint=0")
                cur.close()

        self._engine = engine
        try:
            await self._migrate()
        except (SQLAlchemyError, OSError) as exc:  # OSError: asyncpg could not connect
            await engine.dispose()
            self._engine = None
            shown = make_url(self.url).render_as_string(hide_password=True)
            raise StoreUnavailable(f"cannot open database {shown}: {exc}") from exc
        if self._checkpointer is not None:
            self._checkpointer.start()
            assert database is not None
            self._key_reader = KeyReader(database)
            self._direct = DirectSqlite(database)

    async def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._key_reader is not None:
            self._key_reader.close()
            self._key_reader = None
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _migrate(self) -> None:
        dialect = self.engine.dialect.name
        words = DIALECT_WORDS.get(dialect)
        if words is None:
            raise StoreUnavailable(f"unsupported database dialect {dialect!r}")
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Nodes starting together migrate one at a time (SQLite: one node per
                # file); the lock ends with the transaction.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATION_LOCK_KEY})
            await conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)"))
            current = (await conn.execute(select(t.schema_version.c.version))).scalar()
            if current is None:
                current = 0
                await conn.execute(insert(t.schema_version).values(version=0))
            if current > LATEST_VERSION:
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this callstream "
                    f"({LATEST_VERSION}); upgrade callstream"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(text(statement.format(**words)))
                await conn.execute(update(t.schema_version).values(version=version))
                log.info("store migrated to schema version %d", version)

    @contextlib.asynccontextmanager
    async def writing(self, *, exclusive: bool = True) -> AsyncIterator[AsyncConnection]:
        """One write transaction; errors become :class:`StoreError`.

        ``exclusive=False`` (PostgreSQL only) skips the process's write lock, for
        transactions that lock rows in one order and so cannot deadlock with the others.
        """
        async with self._write_lock if exclusive or self.is_sqlite else contextlib.nullcontext():
            try:
                async with self.engine.begin() as conn:
                    yield conn
            except SQLAlchemyError as exc:
                raise StoreError(f"write failed: {exc}") from exc

    @property
    def direct(self) -> DirectSqlite | None:
        """The stdlib connection for hot writes (inline SQLite only): store/direct_sqlite.py."""
        return self._direct

    @contextlib.asynccontextmanager
    async def writing_direct(self) -> AsyncIterator[sqlite3.Connection]:
        """One write transaction on :attr:`direct`; errors become :class:`StoreError`.

        The body runs synchronously: it must not ``await``, so that no other coroutine of
        this process runs while the transaction holds SQLite's write lock.
        """
        assert self._direct is not None
        async with self._write_lock:
            try:
                with self._direct.transaction() as db:
                    yield db
            except sqlite3.Error as exc:
                raise StoreError(f"write failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"read failed: {exc}") from exc

    def _upsert(
        self, table: Any, values: dict[str, Any], keys: list[str]
    ) -> tuple[Any, dict[str, Any]]:
        """``(statement, parameters)`` for ``conn.execute``: insert, or update on conflict.

        The statement depends only on the table and the column names, so it is built once
        and its values are bound at execution: building one from values each time cost
        more than SQLite running it.
        """
        key = (table.name, tuple(values), tuple(keys))
        stmt = self._upserts.get(key)
        if stmt is None:
            ins = (sqlite_insert if self.is_sqlite else pg_insert)(table)
            stmt = ins.on_conflict_do_update(
                index_elements=keys,
                set_={k: ins.excluded[k] for k in values if k not in keys},
            )
            self._upserts[key] = stmt
        return stmt, values

    # -- the transactional write -------------------------------------------

    async def commit(self, change: Change) -> None:
        if not change:
            return
        now = self._clock()
        calls = [_call_row(c) for c in sorted(change.calls, key=lambda c: c.call_control_id)]
        resources = [_resource_row(r) for r in sorted(change.resources, key=lambda r: r.id)]
        events = [_event_row(ev, now) for ev in change.events]
        if self.direct is not None:
            async with self.writing_direct() as db:
                for rec in change.idempotency:  # first: a duplicate rolls back the rest
                    self._insert_answer_direct(db, rec)
                for row in calls:
                    db.execute(*self._direct_upsert(t.calls, row, "call_control_id"))
                for row in resources:
                    db.execute(*self._direct_upsert(t.call_resources, row, "id"))
                if events:
                    db.executemany(self.direct_statement(
                        ("insert", t.webhook_outbox.name),
                        lambda: Statement.compile(insert(t.webhook_outbox), list(events[0])),
                    ).sql, events)
            return
        # Concurrent on PostgreSQL (API requests, call events): rows are locked in key
        # order, and new outbox rows lock nothing another transaction holds.
        async with self.writing(exclusive=False) as conn:
            for rec in change.idempotency:  # first: a duplicate rolls back the rest unwritten
                await self._insert_answer(conn, rec)
            for row in calls:
                await conn.execute(*self._upsert(t.calls, row, ["call_control_id"]))
            for row in resources:
                await conn.execute(*self._upsert(t.call_resources, row, ["id"]))
            if events:
                await conn.execute(insert(t.webhook_outbox), events)

    def direct_statement(self, key: Any, build: Callable[[], Statement]) -> Statement:
        """The statement cached under ``key``, compiled by ``build`` the first time."""
        stmt = self._direct_statements.get(key)
        if stmt is None:
            stmt = self._direct_statements[key] = build()
        return stmt

    def _direct_upsert(self, table: Any, row: dict[str, Any], key: str) -> tuple[str, Any]:
        stmt = self.direct_statement(
            ("upsert", table.name, tuple(row)),
            lambda: Statement.compile(self._upsert(table, row, [key])[0], list(row)),
        )
        return stmt.sql, stmt.bind(row)

    async def _insert_answer(self, conn: AsyncConnection, rec: IdempotencyRecord) -> None:
        """Store a command's answer unless its command_id has one.

        Raises:
            CommandAlreadyDone: it has one (the transaction then rolls back).
        """
        stored = await conn.execute(_answer_insert(postgres=not self.is_sqlite), _answer_row(rec))
        if stored.first() is None:
            first = await _idempotency(conn, rec.call_control_id, rec.command_id)
            assert first is not None  # the conflicting row, committed
            raise CommandAlreadyDone(first)

    def _insert_answer_direct(self, db: sqlite3.Connection, rec: IdempotencyRecord) -> None:
        """:meth:`_insert_answer` in a direct transaction."""
        insert_stmt = self.direct_statement(
            "answer-insert", lambda: Statement.compile(_answer_insert(postgres=False)))
        if db.execute(insert_stmt.sql, _answer_row(rec)).fetchone() is None:
            select_stmt = self.direct_statement(
                "answer-select", lambda: Statement.compile(_IDEMPOTENCY_SELECT))
            row = db.execute(select_stmt.sql, {
                "i_call": rec.call_control_id, "i_command": rec.command_id}).fetchone()
            assert row is not None  # the conflicting row, committed
            raise CommandAlreadyDone(_idempotency_record(row))

    # -- API keys ----------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        async with self.writing() as conn:
            await conn.execute(
                insert(t.api_keys).values(
                    id=key.id,
                    prefix=key.prefix,
                    key_hash=key.key_hash,
                    label=key.label,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """Read on every request (no cache), so it must be cheap: see store/key_reader.py."""
        if self._key_reader is not None:
            try:
                return self._key_reader.find(key_hash)
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc
        async with self.reading() as conn:
            row = (
                await conn.execute(select(t.api_keys).where(t.api_keys.c.key_hash == key_hash))
            ).first()
        return ApiKey(**row._mapping) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        async with self.reading() as conn:
            rows = (await conn.execute(select(t.api_keys).order_by(t.api_keys.c.created_at))).all()
        return [ApiKey(**r._mapping) for r in rows]

    async def revoke_api_key(self, key_id_or_prefix: str, now: str) -> bool:
        c = t.api_keys.c
        async with self.writing() as conn:
            result = await conn.execute(
                update(t.api_keys)
                .where((c.id == key_id_or_prefix) | (c.prefix == key_id_or_prefix))
                .where(c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(result.rowcount)

    # -- applications ------------------------------------------------------

    async def put_application(self, app: Application) -> None:
        values = {
            "id": app.id,
            "application_name": app.application_name,
            "webhook_event_url": app.webhook_event_url,
            "webhook_event_failover_url": app.webhook_event_failover_url,
            "webhook_timeout_secs": app.webhook_timeout_secs,
            "active": app.active,
            "created_at": app.created_at,
            "updated_at": app.updated_at,
            "extra": _dumps(app.extra),
        }
        async with self.writing() as conn:
            await conn.execute(*self._upsert(t.applications, values, ["id"]))

    async def get_application(self, app_id: str) -> Application | None:
        """Read for every incoming call: on the direct connection where there is one."""
        if self._direct is not None:
            stmt = self.direct_statement("application", lambda: Statement.compile(_APPLICATION))
            try:
                found = self._direct.read(stmt, {"a_id": app_id})
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc
            return _application(dict(found[0])) if found else None
        async with self.reading() as conn:
            row = (await conn.execute(_APPLICATION, {"a_id": app_id})).first()
        return _application(dict(row._mapping)) if row else None

    async def list_applications(self) -> list[Application]:
        async with self.reading() as conn:
            rows = (
                await conn.execute(select(t.applications).order_by(t.applications.c.created_at))
            ).all()
        return [_application(dict(r._mapping)) for r in rows]

    async def delete_application(self, app_id: str) -> bool:
        async with self.writing() as conn:
            result = await conn.execute(
                t.applications.delete().where(t.applications.c.id == app_id)
            )
        return bool(result.rowcount)

    # -- calls -------------------------------------------------------------

    async def get_call(self, call_control_id: str) -> CallRecord | None:
        async with self.reading() as conn:
            row = (
                await conn.execute(
                    select(t.calls).where(t.calls.c.call_control_id == call_control_id)
                )
            ).first()
        return _call(row) if row else None

    async def list_calls(self, *, alive: bool | None = True,
                         owner: str | None = None) -> list[CallRecord]:
        """Calls of every node on this store, or of ``owner`` (the ``calls_owner``
        index), oldest first."""
        query = select(t.calls).order_by(t.calls.c.start_time)
        if alive is not None:
            query = query.where(t.calls.c.is_alive == alive)
        if owner is not None:
            query = query.where(t.calls.c.owner == owner)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [_call(r) for r in rows]

    async def live_call_owners(self) -> list[str]:
        """The nodes (or workers) that own live calls."""
        query = select(t.calls.c.owner).distinct().where(t.calls.c.is_alive)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return sorted(str(row[0]) for row in rows)

    async def list_resources(self, call_control_id: str) -> list[CallResource]:
        c = t.call_resources.c
        async with self.reading() as conn:
            rows = (
                await conn.execute(
                    select(t.call_resources)
                    .where(c.call_control_id == call_control_id)
                    .order_by(c.created_at)
                )
            ).all()
        return [
            CallResource(**{**r._mapping, "params": orjson.loads(r.params)}) for r in rows
        ]

    async def get_idempotency(
        self, call_control_id: str, command_id: str
    ) -> IdempotencyRecord | None:
        async with self.reading() as conn:
            return await _idempotency(conn, call_control_id, command_id)


#: The columns of a command's stored answer, as :func:`_answer_row` gives them.
_ANSWER_COLUMNS = ("call_control_id", "command_id", "status_code", "body", "created_at")


@functools.cache
def _answer_insert(*, postgres: bool) -> Any:
    """INSERT of a command's answer unless its (call, command_id) has one; built once."""
    ins = (pg_insert if postgres else sqlite_insert)(t.idempotency)
    return (
        ins.values({k: bindparam(k) for k in _ANSWER_COLUMNS})
        .on_conflict_do_nothing(index_elements=["call_control_id", "command_id"])
        .returning(t.idempotency.c.command_id)
    )


_IDEMPOTENCY_SELECT = select(t.idempotency).where(
    (t.idempotency.c.call_control_id == bindparam("i_call"))
    & (t.idempotency.c.command_id == bindparam("i_command"))
)


async def _idempotency(
    conn: AsyncConnection, call_control_id: str, command_id: str
) -> IdempotencyRecord | None:
    row = (
        await conn.execute(
            _IDEMPOTENCY_SELECT, {"i_call": call_control_id, "i_command": command_id}
        )
    ).first()
    return None if row is None else _idempotency_record(row._mapping)


def _idempotency_record(m: Any) -> IdempotencyRecord:
    """From a row's mapping (SQLAlchemy) or an ``sqlite3.Row``."""
    return IdempotencyRecord(
        call_control_id=m["call_control_id"],
        command_id=m["command_id"],
        receipt=Receipt(m["status_code"], bytes(m["body"])),
        created_at=m["created_at"],
    )


def _answer_row(rec: IdempotencyRecord) -> dict[str, Any]:
    return {
        "call_control_id": rec.call_control_id,
        "command_id": rec.command_id,
        "status_code": rec.receipt.status_code,
        "body": rec.receipt.body,
        "created_at": rec.created_at,
    }


def _resource_row(res: CallResource) -> dict[str, Any]:
    return {
        "id": res.id,
        "call_control_id": res.call_control_id,
        "kind": res.kind,
        "status": res.status,
        "params": _dumps(res.params),
        "created_at": res.created_at,
        "updated_at": res.updated_at,
    }


def _event_row(ev: OutboxEvent, now: float) -> dict[str, Any]:
    return {
        "id": ev.id,
        "ordering_key": ev.ordering_key,
        "event_type": ev.event_type,
        "call_control_id": ev.call_control_id,
        "data": _dumps(ev.data),
        "url": ev.url,
        "failover_url": ev.failover_url,
        "method": ev.method,
        "content_type": ev.content_type,
        "timeout_secs": ev.timeout_secs,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _call_row(call: CallRecord) -> dict[str, Any]:
    return {
        "call_control_id": call.call_control_id,
        "call_leg_id": call.call_leg_id,
        "call_session_id": call.call_session_id,
        "connection_id": call.connection_id,
        "direction": call.direction,
        "from_": call.from_,
        "to": call.to,
        "state": call.state,
        "is_alive": call.is_alive,
        "start_time": call.start_time,
        "owner": call.owner,
        "client_state": call.client_state,
        "answer_time": call.answer_time,
        "end_time": call.end_time,
        "hangup_cause": call.hangup_cause,
        "hangup_source": call.hangup_source,
        "sip_hangup_cause": call.sip_hangup_cause,
        "webhook_url": call.webhook_url,
        "webhook_failover_url": call.webhook_failover_url,
        "details": _dumps(call.details),
    }


def _call(row: Row[Any]) -> CallRecord:
    m = dict(row._mapping)
    m["details"] = orjson.loads(m["details"])
    m["is_alive"] = bool(m["is_alive"])
    return CallRecord(**m)


_APPLICATION = select(t.applications).where(t.applications.c.id == bindparam("a_id"))


def _application(m: dict[str, Any]) -> Application:
    m["extra"] = orjson.loads(m["extra"])
    m["active"] = bool(m["active"])
    return Application(**m)
