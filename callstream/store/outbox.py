"""The webhook outbox queries: claim, settle, list, redeliver, purge.

Rows are inserted by :meth:`SqlStore.commit` in the transaction of the change that caused
them (status ``pending``). Everything after that is here, in Core SQL that SQLite and
PostgreSQL both run.

**Order per call.** Events share an ``ordering_key`` (the call session). Only the oldest
pending event of a key — its *head* — may be attempted, so a call's next event waits
until the previous one is delivered or given up. :meth:`Outbox.claim` picks keys whose
head is due and not leased, and leases every pending event of those keys (oldest first, up
to a bound) to one worker, which sends them in order.

**Fair claims.** A claim takes at most ``per_url`` heads per webhook URL (the event's
``url``, or ``''`` for the settings' default) and none for the URLs in ``skip`` (those the
worker already has enough lanes for), so one receiver's backlog — a hung one's above all
— cannot fill a claim and starve the other applications' events.

**Leases.** ``lease_owner``/``lease_until`` mark rows a worker holds. A worker renews its
leases while it runs and clears them when it settles a row; a worker that dies leaves
leases that expire, or that the next start clears (:meth:`Outbox.release_leases`; with
SQLite one process owns the file, so it clears all; on PostgreSQL a node clears its own,
named by its stable node id). With Redis, a survivor clears a dead node's leases as soon
as the node's liveness expires (``callstream.cluster.node``).

**Several nodes (PostgreSQL).** Any node claims any call's events. The claim locks with
``FOR UPDATE SKIP LOCKED`` both the heads it picks and the rows it leases, so two nodes
claiming at once never take the same call: the per-call order holds across nodes as it
does across one node's lanes. (SQLite has one writer, so claims never overlap there.)

**Batching.** Workers settle many rows per transaction (:meth:`Outbox.settle`): one
executemany UPDATE for the outbox and one INSERT for the attempt log.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from callstream.store import schema as t
from callstream.store.direct_sqlite import Statement
from callstream.store.records import OutboxStatus
from callstream.store.sql import SqlStore

#: Written as a literal, not a bound parameter, so the planners match it to the partial
#: indexes ``... WHERE status = 'pending'`` (SQLite never matches a parameter there).
_PENDING: ColumnElement[str] = literal_column("'pending'", String())

_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")

_o = t.webhook_outbox
_a = t.webhook_attempts

#: Due heads a claim looks at per key it may take, before its per-URL cap: the scan stays
#: bounded however long the backlog, and a URL over its cap leaves room for the others.
CLAIM_SCAN_PER_KEY = 4


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A pending outbox row as a delivery worker sees it."""

    seq: int
    id: str
    ordering_key: str
    event_type: str
    call_control_id: str | None
    data: str  # the event's ``data`` object, serialised
    url: str | None
    failover_url: str | None
    method: str
    content_type: str
    timeout_secs: float
    attempts: int  # attempts ever made
    round_start: int  # ``attempts`` when the current round began (0, or at a redelivery)
    next_attempt_at: float
    created_at: float
    started_at: float | None

    @classmethod
    def from_mapping(cls, m: Any) -> OutboxItem:
        """From a row's mapping (SQLAlchemy) or an ``sqlite3.Row``."""
        return cls(
            seq=m["seq"],
            id=m["id"],
            ordering_key=m["ordering_key"],
            event_type=m["event_type"],
            call_control_id=m["call_control_id"],
            data=m["data"],
            url=m["url"],
            failover_url=m["failover_url"],
            method=m["method"],
            content_type=m["content_type"],
            timeout_secs=m["timeout_secs"],
            attempts=m["attempts"],
            round_start=m["round_start"],
            next_attempt_at=m["next_attempt_at"],
            created_at=m["created_at"],
            started_at=m["started_at"],
        )

    @property
    def round_attempts(self) -> int:
        return self.attempts - self.round_start


@dataclass(frozen=True, slots=True)
class Settlement:
    """A worker's verdict on a row it leased: its new state, written by :meth:`Outbox.settle`.

    ``status`` stays ``pending`` for a scheduled retry (``next_attempt_at`` says when) and
    for a row released unattempted.
    """

    seq: int
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    started_at: float | None
    finished_at: float | None = None
    delivered_at: float | None = None
    delivered_to: str | None = None
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP attempt, as kept in ``webhook_attempts``."""

    event_id: str
    attempt: int
    url: str
    outcome: str  # "delivered" | "failed"
    at: float  # began, Unix time
    latency_ms: float
    status_code: int | None = None
    error_code: int | None = None
    error: str | None = None
    response_body: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> AttemptRecord:
        m = row._mapping
        return cls(
            event_id=m["event_id"],
            attempt=m["attempt"],
            url=m["url"],
            outcome=m["outcome"],
            at=m["at"],
            latency_ms=m["latency_ms"],
            status_code=m["status_code"],
            error_code=m["error_code"],
            error=m["error"],
            response_body=m["response_body"],
        )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """An event and its delivery history, for the delivery log API."""

    id: str
    event_type: str
    ordering_key: str
    call_control_id: str | None
    data: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    delivered_at: float | None
    delivered_to: str | None
    last_status: int | None
    last_error: str | None
    history: tuple[AttemptRecord, ...] = ()  # most recent first

    @classmethod
    def from_row(cls, row: Row[Any], history: Sequence[AttemptRecord] = ()) -> DeliveryRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            event_type=m["event_type"],
            ordering_key=m["ordering_key"],
            call_control_id=m["call_control_id"],
            data=m["data"],
            status=OutboxStatus(m["status"]),
            attempts=m["attempts"],
            next_attempt_at=m["next_attempt_at"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            delivered_at=m["delivered_at"],
            delivered_to=m["delivered_to"],
            last_status=m["last_status"],
            last_error=m["last_error"],
            history=tuple(history),
        )


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Filters of the delivery log; empty tuples mean "any"."""

    statuses: tuple[OutboxStatus, ...] = ()
    event_types: tuple[str, ...] = ()
    call_control_id: str | None = None
    event_ids: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PendingBacklog:
    """Undelivered events of one URL (``Outbox.pending_by_url``)."""

    url: str | None
    count: int
    oldest_created_at: float  # epoch seconds


class Outbox:
    """The outbox queries over a :class:`SqlStore` (its ``writing()``/``reading()``)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    @property
    def _is_postgres(self) -> bool:
        return not self.store.is_sqlite

    # -- the delivery worker ----------------------------------------------

    @contextlib.asynccontextmanager
    async def _delivery_write(self) -> AsyncIterator[AsyncConnection]:
        """A delivery worker's transaction (claim, renew, settle).

        On PostgreSQL it commits without waiting for the WAL flush (``synchronous_commit``
        off for this transaction only): a database crash can then forget the last
        fraction of a second of leases, which lapse anyway, and of verdicts, whose events
        are then sent again: never lost, possibly repeated, as any crash of a worker
        between a 2xx and its settle already allows. Events themselves are committed
        durably, with the change that caused them. SQLite commits in WAL without an fsync.
        """
        async with self.store.writing() as conn:
            if self._is_postgres:
                await conn.execute(_ASYNC_COMMIT)
            yield conn

    async def release_leases(self, owner: str | None = None, *,
                             ending_by: float | None = None) -> int:
        """Clear leases left by a dead worker: ``owner``'s, or every one when ``None``.

        ``ending_by`` keeps leases that end later than it: those taken or renewed after
        the worker was found dead (by a new process under the same name) are its own.
        """
        stmt = update(_o).where(_o.c.status == _PENDING, _o.c.lease_owner.is_not(None))
        if owner is not None:
            stmt = stmt.where(_o.c.lease_owner == owner)
        if ending_by is not None:
            stmt = stmt.where(_o.c.lease_until <= ending_by)
        async with self.store.writing() as conn:
            result = await conn.execute(stmt.values(lease_owner=None, lease_until=None))
        return int(result.rowcount or 0)

    async def lease_holders(self, now: float) -> list[str]:
        """The workers (node ids on PostgreSQL) holding leases that have not expired."""
        async with self.store.reading() as conn:
            rows = await conn.execute(
                select(_o.c.lease_owner).distinct().where(
                    _o.c.status == _PENDING, _o.c.lease_owner.is_not(None),
                    _o.c.lease_until >= now))
            return sorted(str(row[0]) for row in rows)

    async def claim(
        self,
        owner: str,
        now: float,
        *,
        lease_secs: float,
        max_keys: int,
        max_events: int,
        per_url: int | None = None,
        skip_urls: Sequence[str] = (),
    ) -> list[OutboxItem]:
        """Lease due work: every pending event of up to ``max_keys`` keys whose head is due.

        Args:
            per_url: at most this many keys whose head has the same ``url`` (``max_keys``
                if omitted).
            skip_urls: take no key whose head has one of these ``url`` values (``''`` is
                the settings' default URL, a ``NULL`` in the row).

        Returns:
            The leased rows in ``seq`` order (at most ``max_events``). A key's rows are a
            prefix of its pending events, so sending them in order keeps the call's order.
        """
        params = _claim_params(owner, now, lease_secs, max_keys, max_events, per_url,
                               skip_urls)
        if self.store.direct is not None:
            async with self.store.writing_direct() as db:
                return self._claim_direct(db, params, len(skip_urls))
        async with self._delivery_write() as conn:
            return await self._claim(conn, params, len(skip_urls))

    async def renew_leases(self, owner: str, until: float) -> int:
        """Extend every lease ``owner`` holds."""
        async with self._delivery_write() as conn:
            result = await conn.execute(
                update(_o)
                .where(_o.c.status == _PENDING, _o.c.lease_owner == owner)
                .values(lease_until=until)
            )
        return int(result.rowcount or 0)

    async def settle(
        self,
        owner: str,
        now: float,
        settlements: Sequence[Settlement],
        attempts: Sequence[AttemptRecord],
        releases: Sequence[int] = (),
    ) -> None:
        """Write verdicts, the attempt log and released leases in one transaction.

        Only rows still leased by ``owner`` are changed, so a worker whose lease lapsed
        cannot overwrite what another worker did since.
        """
        if not (settlements or attempts or releases):
            return
        if self.store.direct is not None:
            async with self.store.writing_direct() as db:
                self._settle_direct(db, owner, now, settlements, attempts, releases)
            return
        async with self._delivery_write() as conn:
            await _settle(conn, owner, now, settlements, attempts, releases)

    async def settle_and_claim(
        self,
        owner: str,
        now: float,
        settlements: Sequence[Settlement],
        attempts: Sequence[AttemptRecord],
        releases: Sequence[int],
        *,
        lease_secs: float,
        max_keys: int,
        max_events: int,
        per_url: int | None = None,
        skip_urls: Sequence[str] = (),
    ) -> list[OutboxItem]:
        """:meth:`settle`, then :meth:`claim` (when ``max_keys`` > 0), in one transaction.

        The delivery worker's one write per cycle: the claim sees the heads the verdicts
        just settled, and SQLite pays one transaction instead of two.
        """
        if not (settlements or attempts or releases or max_keys > 0):
            return []
        params = _claim_params(owner, now, lease_secs, max_keys, max_events, per_url,
                               skip_urls)
        if self.store.direct is not None:
            async with self.store.writing_direct() as db:
                self._settle_direct(db, owner, now, settlements, attempts, releases)
                return self._claim_direct(db, params, len(skip_urls)) if max_keys > 0 else []
        async with self._delivery_write() as conn:
            await _settle(conn, owner, now, settlements, attempts, releases)
            if max_keys <= 0:
                return []
            return await self._claim(conn, params, len(skip_urls))

    async def _claim(
        self, conn: AsyncConnection, params: dict[str, Any], skips: int
    ) -> list[OutboxItem]:
        stmt = _claim_statement(postgres=self._is_postgres, skips=skips)
        return _items(row._mapping for row in await conn.execute(stmt, params))

    def _claim_direct(
        self, db: sqlite3.Connection, params: dict[str, Any], skips: int
    ) -> list[OutboxItem]:
        stmt = self.store.direct_statement(
            ("claim", skips),
            lambda: Statement.compile(_claim_statement(postgres=False, skips=skips)))
        return _items(db.execute(stmt.sql, stmt.bind(params)))

    def _settle_direct(
        self,
        db: sqlite3.Connection,
        owner: str,
        now: float,
        settlements: Sequence[Settlement],
        attempts: Sequence[AttemptRecord],
        releases: Sequence[int],
    ) -> None:
        for name, stmt, params in _settle_batches(owner, now, settlements, attempts, releases):
            columns = list(params[0]) if name == "attempts" else None  # an INSERT's
            compiled = self.store.direct_statement(
                ("settle", name), functools.partial(Statement.compile, stmt, columns))
            db.executemany(compiled.sql, [compiled.bind(p) for p in params])

    async def count_pending(self) -> int:
        async with self.store.reading() as conn:
            value = (
                await conn.execute(
                    select(func.count()).select_from(_o).where(_o.c.status == _PENDING)
                )
            ).scalar()
        return int(value or 0)

    async def pending_by_url(self, *, limit: int = 10) -> list[PendingBacklog]:
        """Events still to deliver, per URL (most first, at most ``limit`` URLs)."""
        count = func.count().label("n")
        stmt = (
            select(_o.c.url, count, func.min(_o.c.created_at).label("oldest"))
            .where(_o.c.status == _PENDING)
            .group_by(_o.c.url)
            .order_by(count.desc())
            .limit(limit)
        )
        async with self.store.reading() as conn:
            rows = (await conn.execute(stmt)).all()
        return [PendingBacklog(r.url, int(r.n), float(r.oldest)) for r in rows]

    # -- the delivery log ---------------------------------------------------

    async def list_deliveries(
        self, flt: DeliveryFilter, *, page_number: int = 1, page_size: int = 20
    ) -> tuple[list[DeliveryRecord], int]:
        """One page of events, newest first, with their attempts; and the total count."""
        where = _filter_clause(flt)
        query = select(_o).order_by(_o.c.seq.desc()).limit(page_size)
        query = query.offset((page_number - 1) * page_size)
        count = select(func.count()).select_from(_o)
        if where is not None:
            query = query.where(where)
            count = count.where(where)
        async with self.store.reading() as conn:
            total = int((await conn.execute(count)).scalar() or 0)
            rows = (await conn.execute(query)).all()
            history = await _history(conn, [r.id for r in rows])
        return [DeliveryRecord.from_row(r, history.get(r.id, ())) for r in rows], total

    async def get_delivery(self, event_id: str) -> DeliveryRecord | None:
        async with self.store.reading() as conn:
            row = (await conn.execute(select(_o).where(_o.c.id == event_id))).first()
            if row is None:
                return None
            history = await _history(conn, [event_id])
        return DeliveryRecord.from_row(row, history.get(event_id, ()))

    async def redeliver(self, event_id: str, now: float) -> DeliveryRecord | None:
        """Queue an event again now, with a fresh round of retries (and budget).

        A delivered or failed event becomes pending; a pending one waiting out a back-off
        is made due at once; one being attempted right now is left alone. Returns the
        event, or ``None`` when there is no such event.
        """
        async with self.store.writing() as conn:
            row = (await conn.execute(select(_o).where(_o.c.id == event_id))).first()
            if row is None:
                return None
            busy = (
                row.status == OutboxStatus.PENDING.value
                and row.lease_until is not None
                and row.lease_until >= now
            )
            if not busy:
                await conn.execute(
                    update(_o)
                    .where(_o.c.seq == row.seq)
                    .values(
                        status=OutboxStatus.PENDING.value,
                        round_start=_o.c.attempts,
                        next_attempt_at=now,
                        started_at=None,  # the retry budget counts from the round's start
                        finished_at=None,
                        delivered_at=None,
                        updated_at=now,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
        return await self.get_delivery(event_id)

    async def redeliver_failed(
        self, since: float, now: float, *, limit: int, call_control_id: str | None = None
    ) -> int:
        """Queue again, as :meth:`redeliver` does, up to ``limit`` failed events given up at
        or after ``since`` (oldest first); returns how many. Those queued are pending, so
        calling again queues the next ones.
        """
        chosen = (
            select(_o.c.seq)
            .where(_o.c.status == OutboxStatus.FAILED.value, _o.c.finished_at >= since)
            .order_by(_o.c.seq)
            .limit(limit)
        )
        if call_control_id is not None:
            chosen = chosen.where(_o.c.call_control_id == call_control_id)
        async with self.store.writing() as conn:
            result = await conn.execute(
                update(_o)
                .where(_o.c.seq.in_(chosen))
                .values(
                    status=OutboxStatus.PENDING.value,
                    round_start=_o.c.attempts,
                    next_attempt_at=now,
                    started_at=None,
                    finished_at=None,
                    delivered_at=None,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        return int(result.rowcount or 0)

    async def purge(self, before: float, *, batch: int = 1000) -> int:
        """Delete delivered and failed events (and their attempts) finished before ``before``.

        Works in batches, each its own transaction, so the write lock is never held long.
        """
        removed = 0
        while True:
            async with self.store.writing() as conn:
                ids = (
                    await conn.execute(
                        select(_o.c.id)
                        .where(_o.c.finished_at < before, _o.c.status != _PENDING)
                        .limit(batch)
                    )
                ).scalars().all()
                if not ids:
                    return removed
                await conn.execute(delete(_a).where(_a.c.event_id.in_(ids)))
                await conn.execute(delete(_o).where(_o.c.id.in_(ids)))
            removed += len(ids)
            if len(ids) < batch:
                return removed


def _claim_params(
    owner: str,
    now: float,
    lease_secs: float,
    max_keys: int,
    max_events: int,
    per_url: int | None,
    skip_urls: Sequence[str],
) -> dict[str, Any]:
    """The parameters of :func:`_claim_statement` (built for ``len(skip_urls)``)."""
    params = {"c_owner": owner, "c_now": now, "c_until": now + lease_secs,
              "c_keys": max_keys, "c_events": max_events,
              "c_per_url": per_url or max_keys, "c_scan": max_keys * CLAIM_SCAN_PER_KEY}
    for i, url in enumerate(skip_urls):
        params[f"c_skip{i}"] = url
    return params


@functools.cache
def _claim_statement(*, postgres: bool, skips: int) -> Any:
    """The claim UPDATE, built once per dialect; its values are bound at execution.

    Building it costs ~1.5 ms (three aliases of a 25-column table, and a cache key made
    from all of it), more than running it: the worker claims on every cycle.
    Parameters: ``c_owner``, ``c_now``, ``c_until``, ``c_keys``, ``c_events``,
    ``c_per_url``, ``c_scan`` and ``c_skip0`` … one per URL to skip (``skips`` of them:
    plain binds rather than one expanding list, so the statement compiles once for
    store/direct_sqlite.py).
    """
    now: BindParameter[float] = bindparam("c_now", type_=Float())
    h = _o.alias("h")
    p = _o.alias("p")
    ld = _o.alias("ld")
    earlier = select(p.c.seq).where(
        p.c.ordering_key == h.c.ordering_key, p.c.status == _PENDING, p.c.seq < h.c.seq
    )
    url = func.coalesce(h.c.url, "")
    # The oldest due heads first, bounded, so the scan stops early as a plain LIMIT does;
    # then at most c_per_url of them per URL.
    due_where = [
        h.c.status == _PENDING,
        h.c.next_attempt_at <= now,
        _lease_free(h.c.lease_until, now),
        ~exists(earlier),
    ]
    if skips:
        due_where.append(url.not_in([bindparam(f"c_skip{i}") for i in range(skips)]))
    due_rows = (
        select(h.c.ordering_key, h.c.seq, url.label("url"))
        .where(*due_where)
        .order_by(h.c.seq)
        .limit(bindparam("c_scan", type_=Integer()))
    )
    if postgres:
        # The head row is a call's token: a claim takes a call only with its head locked,
        # so two nodes' concurrent claims never both take one call. Without it, a claim
        # whose snapshot predates another node's could take the rows past the other's
        # bound (max_events) while the other sends the earlier ones. A head that another
        # claim holds is skipped; one that it has just leased fails the re-check.
        due_rows = due_rows.with_for_update(of=h, skip_locked=True)
    due = due_rows.subquery("due")
    ranked = select(
        due.c.ordering_key,
        due.c.seq,
        func.row_number().over(partition_by=due.c.url, order_by=due.c.seq).label("url_rank"),
    ).subquery("ranked")
    heads = (
        select(ranked.c.ordering_key)
        .where(ranked.c.url_rank <= bindparam("c_per_url", type_=Integer()))
        .order_by(ranked.c.seq)
        .limit(bindparam("c_keys", type_=Integer()))
    )
    rows = (
        select(ld.c.seq)
        .where(
            ld.c.status == _PENDING,
            _lease_free(ld.c.lease_until, now),
            ld.c.ordering_key.in_(heads),
        )
        .order_by(ld.c.seq)
        .limit(bindparam("c_events", type_=Integer()))
    )
    if postgres:
        rows = rows.with_for_update(skip_locked=True)
    return (
        update(_o)
        .where(_o.c.seq.in_(rows))
        .values(lease_owner=bindparam("c_owner"), lease_until=bindparam("c_until"))
        .returning(*_o.c)
    )


def _items(rows: Iterable[Any]) -> list[OutboxItem]:
    """Claimed rows (SQLAlchemy mappings or ``sqlite3.Row``) in ``seq`` order."""
    return sorted((OutboxItem.from_mapping(r) for r in rows), key=lambda item: item.seq)


def _settle_batches(
    owner: str,
    now: float,
    settlements: Sequence[Settlement],
    attempts: Sequence[AttemptRecord],
    releases: Sequence[int],
) -> list[tuple[str, Any, list[dict[str, Any]]]]:
    """The (name, statement, executemany parameters) that write a batch of verdicts."""
    batches: list[tuple[str, Any, list[dict[str, Any]]]] = []
    if settlements:
        batches.append((
            "settle",
            _SETTLE,
            [
                {
                    "b_owner": owner,
                    "b_now": now,
                    "b_seq": s.seq,
                    "b_status": s.status.value,
                    "b_attempts": s.attempts,
                    "b_next": s.next_attempt_at,
                    "b_started": s.started_at,
                    "b_finished": s.finished_at,
                    "b_delivered_at": s.delivered_at,
                    "b_delivered_to": s.delivered_to,
                    "b_last_status": s.last_status,
                    "b_last_error": s.last_error,
                }
                for s in settlements
            ],
        ))
    if releases:
        batches.append(
            ("release", _RELEASE, [{"b_owner": owner, "b_seq": seq} for seq in releases]))
    if attempts:
        batches.append((
            "attempts",
            insert(_a),
            [
                {
                    "event_id": a.event_id,
                    "attempt": a.attempt,
                    "url": a.url,
                    "outcome": a.outcome,
                    "status_code": a.status_code,
                    "error_code": a.error_code,
                    "error": a.error,
                    "response_body": a.response_body,
                    "latency_ms": a.latency_ms,
                    "at": a.at,
                }
                for a in attempts
            ],
        ))
    return batches


async def _settle(
    conn: AsyncConnection,
    owner: str,
    now: float,
    settlements: Sequence[Settlement],
    attempts: Sequence[AttemptRecord],
    releases: Sequence[int],
) -> None:
    for _, stmt, params in _settle_batches(owner, now, settlements, attempts, releases):
        await conn.execute(stmt, params)


_SETTLE = (
    update(_o)
    .where(_o.c.seq == bindparam("b_seq"), _o.c.lease_owner == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        started_at=bindparam("b_started"),
        finished_at=bindparam("b_finished"),
        delivered_at=bindparam("b_delivered_at"),
        delivered_to=bindparam("b_delivered_to"),
        last_status=bindparam("b_last_status"),
        last_error=bindparam("b_last_error"),
        updated_at=bindparam("b_now"),
        lease_owner=None,
        lease_until=None,
    )
)
_RELEASE = (
    update(_o)
    .where(_o.c.seq == bindparam("b_seq"), _o.c.lease_owner == bindparam("b_owner"))
    .values(lease_owner=None, lease_until=None)
)


def _lease_free(lease_until: Any, now: float | ColumnElement[float]) -> ColumnElement[bool]:
    return or_(lease_until.is_(None), lease_until < now)


def _filter_clause(flt: DeliveryFilter) -> ColumnElement[bool] | None:
    terms: list[ColumnElement[bool]] = []
    if flt.statuses:
        terms.append(_o.c.status.in_([s.value for s in flt.statuses]))
    if flt.event_types:
        terms.append(_o.c.event_type.in_(flt.event_types))
    if flt.call_control_id is not None:
        terms.append(_o.c.call_control_id == flt.call_control_id)
    if flt.event_ids:
        terms.append(_o.c.id.in_(flt.event_ids))
    return and_(*terms) if terms else None


async def _history(
    conn: AsyncConnection, event_ids: Sequence[str]
) -> dict[str, list[AttemptRecord]]:
    out: dict[str, list[AttemptRecord]] = {}
    if not event_ids:
        return out
    rows = (
        await conn.execute(
            select(_a).where(_a.c.event_id.in_(event_ids)).order_by(_a.c.id.desc())
        )
    ).all()
    for r in rows:
        out.setdefault(r.event_id, []).append(AttemptRecord.from_row(r))
    return out
