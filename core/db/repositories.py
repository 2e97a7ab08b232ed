"""Repository functions: the only place that turns rows into domain objects and back.

Each function takes an open :class:`~sqlalchemy.ext.asyncio.AsyncSession` (the ones typed
:data:`Executor` also a plain :class:`~sqlalchemy.ext.asyncio.AsyncConnection`, which
skips the session's machinery on hot paths); the caller owns the transaction. Signal
transitions are compare-and-set: ``UPDATE ... WHERE id = ? AND status = ?`` changes one
row or none, so exactly one of several concurrent callers wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from secrets import token_hex
from typing import Any

from sqlalchemy import Result, Row, bindparam, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.expression import Executable
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.bounds import is_storable_id
from core.db.engine import Database
from core.db.models import AuditEventRow, OperatorStateRow, OrderRow, SignalRow
from core.domain import (
    AuditEvent,
    OrderReport,
    OrderState,
    OrderType,
    Side,
    Signal,
    SignalStatus,
    can_transition,
)
from core.errors import NotFoundError

__all__ = [
    "add_audit",
    "approve_signal",
    "block_approved_signal",
    "find_operator_state",
    "get_signal",
    "get_signal_and_state",
    "list_audit",
    "list_signals",
    "live_orders",
    "load_operator_state",
    "order_by_client_id",
    "order_report",
    "order_row_for_signal",
    "orders_by_client_ids",
    "record_approval",
    "signal_from_row",
    "transition_signal",
    "update_pending_signal",
]


# Statements of the hot paths, built once: SQLAlchemy computes a statement object's cache
# key once, and the values come as parameters. The UPDATE and INSERT are Core statements on
# the tables (SQLModel's stubs do not declare ``__table__``): no unit of work, no evaluation
# of the criteria against the session (see :func:`_written`).
_SIGNALS = SignalRow.__table__  # type: ignore[attr-defined]
_AUDIT_COLUMNS = (
    "at", "actor", "action", "signal_id", "order_id", "from_status", "to_status", "reason",
)  # fmt: skip
_SELECT_SIGNAL = select(SignalRow).where(col(SignalRow.id) == bindparam("signal_id"))
_SELECT_OPERATOR_STATE = select(OperatorStateRow).where(col(OperatorStateRow.id) == 1)
_OPERATOR_STATE = OperatorStateRow.__table__  # type: ignore[attr-defined]
#: The operator state's columns as a plain row (no ORM object to build or track).
_READ_OPERATOR_STATE = select(_OPERATOR_STATE).where(_OPERATOR_STATE.c.id == 1)
_INSERT_OPERATOR_STATE = insert(_OPERATOR_STATE)
_CAS_SIGNAL = update(_SIGNALS).where(
    _SIGNALS.c.id == bindparam("cas_id"), _SIGNALS.c.status == bindparam("cas_status")
)
_CAS_SIGNAL_VERSION = _CAS_SIGNAL.where(_SIGNALS.c.card_version == bindparam("cas_version"))
_AUDIT = AuditEventRow.__table__  # type: ignore[attr-defined]
_INSERT_AUDIT = insert(_AUDIT)
#: The signal and the operator state it is approved under, in ONE read (the state's
#: columns NULL on a database no engine has started on yet; ``signals`` has none of
#: their names).
_SELECT_SIGNAL_AND_STATE = (
    select(
        _SIGNALS,
        _OPERATOR_STATE.c.trading_state,
        _OPERATOR_STATE.c.pause_reason,
        _OPERATOR_STATE.c.breach_level,
    )
    .select_from(_SIGNALS.outerjoin(_OPERATOR_STATE, _OPERATOR_STATE.c.id == 1))
    .where(_SIGNALS.c.id == bindparam("signal_id"))
)
#: Where a repository function runs its statements: a session's transaction, or a plain
#: connection's (no unit of work, no identity map to keep in step).
Executor = AsyncSession | AsyncConnection

#: Read the row from the database even when the session holds it.
_FRESH = {"populate_existing": True}


def signal_from_row(row: SignalRow | Row[Any]) -> Signal:
    """The domain :class:`Signal` of a row (its ORM object, or its columns as a plain
    row)."""
    assert row.id is not None
    return Signal(
        id=row.id,
        source=row.source,
        symbol=row.symbol,
        side=Side(row.side),
        quantity=row.quantity,
        order_type=OrderType(row.order_type),
        reference_price=row.reference_price,
        created_at=row.created_at,
        expires_at=row.expires_at,
        status=SignalStatus(row.status),
        limit_price=row.limit_price,
        stop_loss=row.stop_loss,
        take_profit=row.take_profit,
        note=row.note,
        status_reason=row.status_reason,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        trail_pct=row.trail_pct,
        breakeven_at_r=row.breakeven_at_r,
        card_version=row.card_version,
    )


def order_report(row: OrderRow) -> OrderReport:
    """The recorded state of an order, as an :class:`OrderReport` (without fills)."""
    return OrderReport(
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=Side(row.side),
        quantity=row.quantity,
        state=OrderState(row.state),
        broker_order_id=row.broker_order_id,
        order_type=OrderType(row.order_type),
        limit_price=row.limit_price,
        filled_quantity=row.filled_quantity,
        average_price=row.average_price,
        fee=row.fee,
        fee_currency=row.fee_currency,
        reason=row.error,
        trigger_price=row.trigger_price,
    )


async def get_signal(session: AsyncSession, signal_id: int) -> Signal:
    """Load one signal. Raises NotFoundError (also for an id no column can hold)."""
    if not is_storable_id(signal_id):
        raise NotFoundError(f"no signal with id {signal_id}")
    found = await session.exec(
        _SELECT_SIGNAL, params={"signal_id": signal_id}, execution_options=_FRESH
    )
    row = found.first()
    if row is None:
        raise NotFoundError(f"no signal with id {signal_id}")
    return signal_from_row(row)


async def get_signal_and_state(db: Database, signal_id: int) -> tuple[Signal, Row[Any] | None]:
    """One signal and the operator state as committed, in ONE statement on a read
    connection of ``db`` (:meth:`~core.db.engine.Database.read_row`: no session, no
    transaction). The state is a read-only plain row whose ``trading_state``,
    ``pause_reason`` and ``breach_level`` are those of
    :class:`~core.db.models.OperatorStateRow` (as :func:`find_operator_state` gives), or
    None on a database no engine has started on yet. Raises NotFoundError (also for an id
    no column can hold)."""
    if not is_storable_id(signal_id):
        raise NotFoundError(f"no signal with id {signal_id}")
    row = await db.read_row(_SELECT_SIGNAL_AND_STATE, {"signal_id": signal_id})
    if row is None:
        raise NotFoundError(f"no signal with id {signal_id}")
    return signal_from_row(row), (row if row.trading_state is not None else None)


async def list_signals(
    session: AsyncSession,
    statuses: Sequence[SignalStatus] | None = None,
    limit: int = 50,
) -> list[Signal]:
    """Signals, newest first, optionally only those in ``statuses``."""
    query = select(SignalRow).order_by(col(SignalRow.id).desc()).limit(limit)
    if statuses:
        query = query.where(col(SignalRow.status).in_([s.value for s in statuses]))
    return [signal_from_row(row) for row in (await session.exec(query)).all()]


async def _execute(db: Executor, statement: Executable, params: Mapping[str, Any]) -> Result[Any]:
    """``statement`` with ``params`` in ``db``'s transaction now."""
    if isinstance(db, AsyncSession):
        return await db.exec(statement, params=params)  # type: ignore[call-overload,no-any-return]
    return await db.execute(statement, params)


def _written(
    session: AsyncSession, model: type[SQLModel], key: object, values: Mapping[str, Any]
) -> None:
    """Keep the session's copy of the row ``model`` ``key`` (if it holds one) in step with
    ``values`` an UPDATE has just written, as committed state: what SQLAlchemy's
    ``synchronize_session`` does, without compiling the UPDATE's criteria into Python on
    every call."""
    row = session.sync_session.identity_map.get(identity_key(model, key))
    if row is None:
        return
    for name, value in values.items():
        set_committed_value(row, name, value)


async def add_audit(
    db: Executor,
    *,
    actor: str,
    action: str,
    at: datetime,
    signal_id: int | None = None,
    order_id: int | None = None,
    from_status: str = "",
    to_status: str = "",
    reason: str = "",
) -> None:
    """Insert one audit event in the session's transaction, now (a Core INSERT: no
    unit-of-work, no id read back; an ``order_id`` or ``signal_id`` it names must be in
    the database already, which every id is once the session has drawn it)."""
    params = {
        "at": at,
        "actor": actor,
        "action": action,
        "signal_id": signal_id,
        "order_id": order_id,
        "from_status": from_status,
        "to_status": to_status,
        "reason": reason[:500],
    }
    await _execute(db, _INSERT_AUDIT, params)


async def _compare_and_set(
    db: Executor,
    signal_id: int,
    current: SignalStatus,
    written: dict[str, Any],
    version: int | None = None,
) -> bool:
    """``UPDATE signals SET written WHERE id AND status = current`` (and ``card_version =
    version`` when given); True when it changed the row, which a session's copy then
    follows."""
    params = {"cas_id": signal_id, "cas_status": current.value, **written}
    query = _CAS_SIGNAL
    if version is not None:
        query, params["cas_version"] = _CAS_SIGNAL_VERSION, version
    result = await _execute(db, query, params)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if isinstance(db, AsyncSession):
        _written(db, SignalRow, signal_id, written)
    return True


async def transition_signal(
    db: Executor,
    signal_id: int,
    current: SignalStatus,
    new: SignalStatus,
    *,
    actor: str,
    at: datetime,
    reason: str = "",
    action: str | None = None,
    version: int | None = None,
    **values: Any,
) -> bool:
    """Compare-and-set ``current -> new`` and append its audit event.

    Returns False (and changes nothing) when the signal is no longer ``current``, when
    ``version`` is given and the signal's ``card_version`` differs (the card changed since
    it was rendered), or the id is one no column can hold. ``values`` are further columns
    to set in the same UPDATE.

    Raises:
        ValueError: the lifecycle forbids ``current -> new`` (a programming error).
    """
    if not can_transition(current, new):
        raise ValueError(f"forbidden transition {current} -> {new}")
    if not is_storable_id(signal_id):
        return False
    written = {"status": new.value, "status_reason": reason[:500], "updated_at": at, **values}
    if not await _compare_and_set(db, signal_id, current, written, version):
        return False
    await add_audit(
        db,
        actor=actor,
        action=action or new.value.lower(),
        at=at,
        signal_id=signal_id,
        from_status=current.value,
        to_status=new.value,
        reason=reason,
    )
    return True


async def approve_signal(
    conn: AsyncConnection,
    signal_id: int,
    outcome: SignalStatus,
    *,
    actor: str,
    at: datetime,
    reason: str,
    version: int | None = None,
) -> bool:
    """The compare-and-set of an approval: PROPOSED -> APPROVED -> ``outcome`` (SUBMITTED,
    or BLOCKED with ``reason``) in ONE UPDATE, which also records ``actor`` as the one who
    decided at ``at``. It is meant as the first write of the approving transaction (it takes
    the write lock on SQLite and the row lock on PostgreSQL); the caller then reads the
    trading state, may overturn a SUBMITTED with :func:`block_approved_signal`, and records
    both transitions with :func:`record_approval` before it commits, so nobody ever sees
    the row between the two.

    Returns False (and changes nothing) when the signal is no longer PROPOSED, when
    ``version`` is given and the signal's ``card_version`` differs, or the id is one no
    column can hold.

    Raises:
        ValueError: ``outcome`` is not a status an approval leads to (a programming error).
    """
    if not can_transition(SignalStatus.APPROVED, outcome):
        raise ValueError(f"forbidden transition {SignalStatus.APPROVED} -> {outcome}")
    if not is_storable_id(signal_id):
        return False
    written = {
        "status": outcome.value,
        "status_reason": reason[:500],
        "updated_at": at,
        "decided_by": actor[:128],
        "decided_at": at,
    }
    return await _compare_and_set(conn, signal_id, SignalStatus.PROPOSED, written, version)


async def block_approved_signal(
    conn: AsyncConnection, signal_id: int, current: SignalStatus, *, at: datetime, reason: str
) -> None:
    """In the approving transaction, after :func:`approve_signal` moved the signal to
    ``current``: make the outcome BLOCKED with ``reason`` instead (the trading state read
    after the compare-and-set forbids the order). The transaction holds the row, so this
    cannot lose a race."""
    written = {
        "status": SignalStatus.BLOCKED.value,
        "status_reason": reason[:500],
        "updated_at": at,
    }
    held = await _compare_and_set(conn, signal_id, current, written)
    assert held, "the approving transaction holds the signal"


async def record_approval(
    conn: AsyncConnection,
    signal_id: int,
    outcome: SignalStatus,
    *,
    actor: str,
    at: datetime,
    reason: str,
) -> None:
    """The audit events of an approval, in ONE statement (an executemany of the cached
    one-row INSERT: a multi-row ``VALUES`` statement has no cache key, so SQLAlchemy would
    compile it again on every call) and in this order: ``actor``'s
    ``approved`` (PROPOSED -> APPROVED), then ``submitted`` by ``actor`` (APPROVED ->
    SUBMITTED, ``reason`` naming the order) or ``blocked`` by ``system`` (APPROVED ->
    BLOCKED, ``reason`` saying why): the same events as two :func:`transition_signal`
    calls would record."""
    approved, proposed = SignalStatus.APPROVED.value, SignalStatus.PROPOSED.value
    by = actor if outcome is SignalStatus.SUBMITTED else "system"
    rows = [
        dict(zip(_AUDIT_COLUMNS, event, strict=True))
        for event in (
            (at, actor, approved.lower(), signal_id, None, proposed, approved, ""),
            (at, by, outcome.value.lower(), signal_id, None, approved, outcome.value, reason[:500]),
        )
    ]
    await conn.execute(_INSERT_AUDIT, rows)


async def update_pending_signal(
    session: AsyncSession,
    signal_id: int,
    version: int,
    *,
    actor: str,
    at: datetime,
    reason: str,
    **values: Any,
) -> bool:
    """Compare-and-set an edit of a pending signal: set ``values`` and bump
    ``card_version`` where the signal is still PROPOSED at ``version``; append the audit
    event ``edit`` (PROPOSED -> PROPOSED, ``reason`` lists the changes). Returns False and
    changes nothing otherwise."""
    if not is_storable_id(signal_id):
        return False
    result = await session.exec(
        update(SignalRow)
        .where(
            col(SignalRow.id) == signal_id,
            col(SignalRow.status) == SignalStatus.PROPOSED.value,
            col(SignalRow.card_version) == version,
        )
        .values(card_version=version + 1, updated_at=at, **values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await add_audit(
        session,
        actor=actor,
        action="edit",
        at=at,
        signal_id=signal_id,
        from_status=SignalStatus.PROPOSED.value,
        to_status=SignalStatus.PROPOSED.value,
        reason=reason,
    )
    return True


async def order_row_for_signal(session: AsyncSession, signal_id: int) -> OrderRow | None:
    """The order placed for a signal, if any."""
    query = select(OrderRow).where(col(OrderRow.signal_id) == signal_id)
    return (await session.exec(query)).first()


async def list_audit(
    session: AsyncSession, *, limit: int = 20, signal_id: int | None = None
) -> list[AuditEvent]:
    """Audit events, newest first; only one signal's lineage when ``signal_id`` is given."""
    query = select(AuditEventRow).order_by(col(AuditEventRow.id).desc()).limit(limit)
    if signal_id is not None:
        query = query.where(col(AuditEventRow.signal_id) == signal_id)
    rows = (await session.exec(query)).all()
    return [
        AuditEvent(
            id=row.id or 0,
            at=row.at,
            actor=row.actor,
            action=row.action,
            signal_id=row.signal_id,
            order_id=row.order_id,
            from_status=row.from_status,
            to_status=row.to_status,
            reason=row.reason,
        )
        for row in rows
    ]


async def find_operator_state(session: AsyncSession) -> Row[Any] | None:
    """The operator state as committed, a read-only plain row whose attributes are the
    columns of :class:`~core.db.models.OperatorStateRow` (no ORM object), or None on a
    database no engine has started on yet (the engine creates it at start-up). Only
    reads: fit for :meth:`~core.db.engine.Database.reading`."""
    return (await (await session.connection()).execute(_READ_OPERATOR_STATE)).first()


async def load_operator_state(session: AsyncSession) -> OperatorStateRow:
    """The operator state row, created on first use with a random instance tag."""
    row = (await session.exec(_SELECT_OPERATOR_STATE, execution_options=_FRESH)).first()
    if row is not None:
        return row
    await create_operator_state(session)
    row = await session.get(OperatorStateRow, 1, populate_existing=True)
    assert row is not None
    return row


async def create_operator_state(db: Executor) -> None:
    """Create the operator state row (trading ACTIVE, a random instance tag) in ``db``'s
    transaction, in a savepoint: when another process has created it first, its row stays
    and nothing else is undone."""
    try:
        async with db.begin_nested():
            await _execute(db, _INSERT_OPERATOR_STATE, {"id": 1, "instance_tag": token_hex(3)})
    except IntegrityError:  # another process created it first
        pass


async def order_by_client_id(session: AsyncSession, client_order_id: str) -> OrderRow | None:
    """Our order row with this client order id, or None."""
    query = select(OrderRow).where(col(OrderRow.client_order_id) == client_order_id)
    return (await session.exec(query)).first()


async def orders_by_client_ids(
    session: AsyncSession, client_order_ids: Sequence[str]
) -> list[OrderRow]:
    """Our order rows with these client order ids (those we have), oldest first."""
    if not client_order_ids:
        return []
    query = (
        select(OrderRow)
        .where(col(OrderRow.client_order_id).in_(list(client_order_ids)))
        .order_by(col(OrderRow.id))
    )
    return list((await session.exec(query)).all())


async def live_orders(session: AsyncSession, purposes: Iterable[str]) -> list[OrderRow]:
    """Our orders of these purposes that may still rest at the venue (SUBMITTED or OPEN),
    oldest first."""
    query = (
        select(OrderRow)
        .where(
            col(OrderRow.purpose).in_(list(purposes)),
            col(OrderRow.state).in_([OrderState.SUBMITTED.value, OrderState.OPEN.value]),
        )
        .order_by(col(OrderRow.id))
    )
    return list((await session.exec(query)).all())
