"""Enqueue in the application's own transaction with psycopg 3, SQLAlchemy and Django.

The code under test is README's, verbatim: each module of tests/support/enqueue_examples is a
code block of "From your web app's transaction" (tests/unit/test_enqueue_examples_in_readme.py
keeps them equal). Every driver is held to the two promises of ``taskd.trigger``:

- the run exists only if the transaction commits. The app's ``orders`` table refuses a negative
  amount with a constraint trigger deferred to COMMIT, so ``taskd.trigger`` has run and returned
  a run id when the transaction fails: that run must not exist;
- the daemons are notified at commit. The daemon's poll interval is ten minutes, so only the
  NOTIFY sent at commit can start the run within the test's deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import asyncpg
import django
import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, connections
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine, exc
from sqlalchemy.ext.asyncio import create_async_engine

from taskd import Client, Context, RunStatus, task
from taskd.app import Daemon
from tests.support.enqueue_examples import (
    django_atomic,
    psycopg_async,
    psycopg_errors,
    psycopg_sync,
    sqlalchemy_async,
    sqlalchemy_sync,
)
from tests.support.waiting import wait_for_run

LONG_POLL = 600.0  # seconds: far past every deadline below, so only a NOTIFY starts a run

ORDERS = """
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    amount int NOT NULL
);
CREATE FUNCTION orders_refuse_negative() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.amount < 0 THEN
        RAISE EXCEPTION 'amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
-- checked at COMMIT: after taskd.trigger has returned its run id
CREATE CONSTRAINT TRIGGER orders_amount AFTER INSERT ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION orders_refuse_negative();
"""


@task(id="send-receipt")
async def send_receipt(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"receipt_for": payload["order_id"]}


@pytest.fixture
async def orders(db: asyncpg.Connection) -> None:
    await db.execute(ORDERS)


async def _only_run_is(client: Client, db: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """The committed order has its run; the refused one left neither an order nor a run."""
    assert [r.id for r in await client.list_runs()] == [run_id]
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 1
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def _completed_by_notify(client: Client, daemon: Daemon, run_id: uuid.UUID) -> Any:
    run = await wait_for_run(client, run_id)  # 30 s at most, against a 600 s poll
    assert run.status is RunStatus.COMPLETED
    assert daemon.listener is not None and daemon.listener.last_notification_at is not None
    return run


async def test_psycopg_sync(
    client: Client, db: asyncpg.Connection, database: str, orders: None, start_daemon
) -> None:
    def web_request() -> uuid.UUID:
        with psycopg.connect(database, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.CheckViolation, match="must not be negative"):
                psycopg_sync.place_order(conn, "bob", -5)
            return psycopg_sync.place_order(conn, "ann", 30)

    async with start_daemon([send_receipt], poll_interval=LONG_POLL) as daemon:
        run_id = await anyio.to_thread.run_sync(web_request)
        assert isinstance(run_id, uuid.UUID)
        run = await _completed_by_notify(client, daemon, run_id)
    order_id = await db.fetchval("SELECT id FROM orders WHERE customer = 'ann'")
    assert run.payload == {"order_id": order_id} and run.output == {"receipt_for": order_id}
    assert run.queue == "emails" and run.tags == ["customer:ann"]
    row = await db.fetchrow(
        "SELECT idempotency_key, concurrency_key FROM taskd.runs WHERE id = $1", run_id
    )
    assert dict(row) == {"idempotency_key": f"receipt-{order_id}", "concurrency_key": "ann"}
    await _only_run_is(client, db, run_id)


async def test_psycopg_async(
    client: Client, db: asyncpg.Connection, database: str, orders: None, start_daemon
) -> None:
    async with start_daemon([send_receipt], poll_interval=LONG_POLL) as daemon:
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.CheckViolation):
                await psycopg_async.place_order(conn, "bob", -5)
            run_id = await psycopg_async.place_order(conn, "ann", 30)
        run = await _completed_by_notify(client, daemon, run_id)
    assert run.tags == ["async"] and run.output == {"receipt_for": run.payload["order_id"]}
    await _only_run_is(client, db, run_id)


def _sqlalchemy_url(dsn: str, driver: str) -> str:
    scheme, rest = dsn.split("://", 1)
    assert scheme in ("postgresql", "postgres"), dsn
    return f"postgresql+{driver}://{rest}"


async def test_sqlalchemy_session(
    client: Client, db: asyncpg.Connection, database: str, orders: None, start_daemon
) -> None:
    engine = create_engine(_sqlalchemy_url(database, "psycopg"))

    def web_request() -> uuid.UUID:
        with pytest.raises(exc.IntegrityError, match="must not be negative") as refused:
            sqlalchemy_sync.place_order(engine, "bob", -5)
        assert refused.value.orig.sqlstate == "23514"  # the driver's error, its SQLSTATE
        return sqlalchemy_sync.place_order(engine, "ann", 30)

    try:
        async with start_daemon([send_receipt], poll_interval=LONG_POLL) as daemon:
            run_id = await anyio.to_thread.run_sync(web_request)
            run = await _completed_by_notify(client, daemon, run_id)
    finally:
        engine.dispose()
    order_id = await db.fetchval("SELECT id FROM orders")
    assert run.output == {"receipt_for": order_id}
    key = await db.fetchval("SELECT idempotency_key FROM taskd.runs WHERE id = $1", run_id)
    assert key == f"receipt-{order_id}"
    await _only_run_is(client, db, run_id)


async def test_sqlalchemy_async_session(
    client: Client, db: asyncpg.Connection, database: str, orders: None, start_daemon
) -> None:
    engine = create_async_engine(_sqlalchemy_url(database, "asyncpg"))
    try:
        async with start_daemon([send_receipt], poll_interval=LONG_POLL) as daemon:
            with pytest.raises(exc.IntegrityError, match="must not be negative") as refused:
                await sqlalchemy_async.place_order(engine, "bob", -5)
            assert refused.value.orig.sqlstate == "23514"
            run_id = await sqlalchemy_async.place_order(engine, "ann", 30)
            run = await _completed_by_notify(client, daemon, run_id)
    finally:
        await engine.dispose()
    assert uuid.UUID(str(run_id)) == run.id
    assert run.output == {"receipt_for": run.payload["order_id"]}
    await _only_run_is(client, db, run.id)


def _django_database(dsn: str) -> dict[str, Any]:
    """Django's DATABASES entry for a libpq URL (the embedded server's is a socket path)."""
    parts = urlsplit(dsn)
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": host,
        "PORT": str(parts.port or ""),
    }


@pytest.fixture
def django_on(database: str) -> Iterator[None]:
    """Django configured for this test's database, as a project's settings.py would."""
    if not settings.configured:
        settings.configure(DATABASES={"default": _django_database(database)}, USE_TZ=True)
        django.setup()
    else:  # a later test: the same settings, this test's database
        connections.close_all()
        settings.DATABASES["default"].update(_django_database(database))
    yield
    connections.close_all()


async def test_django_atomic(
    client: Client, db: asyncpg.Connection, orders: None, django_on: None, start_daemon
) -> None:
    def web_request() -> uuid.UUID:
        try:
            with pytest.raises(IntegrityError, match="must not be negative") as refused:
                django_atomic.place_order("bob", -5)
            assert refused.value.__cause__.sqlstate == "23514"  # psycopg's error
            return django_atomic.place_order("ann", 30)
        finally:
            connection.close()  # Django's connections belong to their thread

    async with start_daemon([send_receipt], poll_interval=LONG_POLL) as daemon:
        run_id = await anyio.to_thread.run_sync(web_request)
        run = await _completed_by_notify(client, daemon, run_id)
    order_id = await db.fetchval("SELECT id FROM orders")
    assert run.output == {"receipt_for": order_id}
    await _only_run_is(client, db, run_id)


async def test_options_and_refusals_through_psycopg(
    client: Client, db: asyncpg.Connection, database: str
) -> None:
    """README's option values and error codes, as a psycopg caller meets them."""
    await db.execute("UPDATE taskd.settings SET value = '1000' WHERE key = 'max_payload_bytes'")

    def calls() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with psycopg.connect(database, autocommit=True) as conn:
            enqueue = psycopg_errors.enqueue
            out["later"] = enqueue(conn, "send-receipt", {"order_id": 1}, {"delay": "10 minutes"})
            out["at"] = enqueue(
                conn, "send-receipt", {"order_id": 2}, {"run_at": "2030-01-02T03:04:05+00:00"}
            )
            first = enqueue(conn, "send-receipt", {}, {"idempotency_key": "k1"})
            out["same_key"] = (first, enqueue(conn, "send-receipt", {}, {"idempotency_key": "k1"}))
            for name, args in {
                "too_large": ("send-receipt", {"blob": "x" * 2000}, {}),
                "unknown_option": ("send-receipt", {}, {"priorty": 1}),
                "empty_task": ("", {}, {}),
            }.items():
                with pytest.raises(psycopg_errors.EnqueueRefused) as refused:
                    enqueue(conn, *args)
                out[name] = (refused.value.__cause__.sqlstate, str(refused.value))
            out["bad_values"] = {}
            for option, bad in [
                ("delay", "10 minuts"),
                ("run_at", "tomorrowish"),
                ("ttl", "forever"),
                ("idempotency_ttl", "a while"),  # read only with a key
                ("priority", "high"),
                ("max_attempts", 1.5),
                ("tags", "not-a-list"),
            ]:
                options = {option: bad, "idempotency_key": f"bad-{option}"}
                with pytest.raises(psycopg.Error) as refused_value:
                    conn.execute(
                        "SELECT taskd.trigger(%s, %s, %s)",
                        ("send-receipt", Jsonb({}), Jsonb(options)),
                    )
                error = refused_value.value
                out["bad_values"][option] = (type(error).__name__, error.sqlstate)
            with pytest.raises(psycopg.errors.InvalidParameterValue) as no_name:
                conn.execute("SELECT taskd.send_event(%s, %s)", ("", Jsonb({})))
            out["event_unnamed"] = no_name.value.sqlstate
            for name, sql, args in [
                ("cancel_unknown", "SELECT taskd.cancel(%s)", (uuid.uuid4(),)),
                ("token_unknown", "SELECT taskd.complete_token(%s)", (uuid.uuid4(),)),
            ]:
                with pytest.raises(psycopg.Error) as no_such:
                    conn.execute(sql, args)
                out[name] = (type(no_such.value), no_such.value.sqlstate)
            out["canceled"] = conn.execute("SELECT taskd.cancel(%s)", (out["later"],)).fetchone()
            with pytest.raises(psycopg.Error) as finished:
                conn.execute("SELECT taskd.cancel(%s)", (out["later"],))
            out["cancel_finished"] = finished.value.sqlstate
        return out

    out = await anyio.to_thread.run_sync(calls)
    later = await client.get_run(out["later"])
    assert 595 <= (later.run_at - later.created_at).total_seconds() <= 605
    at = await client.get_run(out["at"])
    assert at.run_at.isoformat() == "2030-01-02T03:04:05+00:00"
    first, again = out["same_key"]
    assert first == again, "one run per idempotency key"
    assert out["too_large"] == (
        "54000",
        "taskd.trigger: payload is 2012 bytes, over the limit of 1000 bytes",  # as README says
    )
    assert out["unknown_option"] == ("22023", "taskd.trigger: unknown option(s): priorty")
    assert out["empty_task"] == ("22023", "taskd.trigger: task_id must not be empty")
    assert out["bad_values"] == {
        "delay": ("InvalidDatetimeFormat", "22007"),
        "run_at": ("InvalidDatetimeFormat", "22007"),
        "ttl": ("InvalidDatetimeFormat", "22007"),
        "idempotency_ttl": ("InvalidDatetimeFormat", "22007"),
        "priority": ("InvalidTextRepresentation", "22P02"),
        "max_attempts": ("InvalidTextRepresentation", "22P02"),
        "tags": ("InvalidParameterValue", "22023"),
    }
    assert out["event_unnamed"] == "22023"
    # taskd's own codes (TD404: no such run or token, TD409: already finished) have no
    # class of their own in psycopg: a DatabaseError whose sqlstate says which
    assert out["cancel_unknown"] == (psycopg.DatabaseError, "TD404")
    assert out["token_unknown"] == (psycopg.DatabaseError, "TD404")
    assert out["canceled"] == ("canceled",)
    assert out["cancel_finished"] == "TD409"
    assert len(await client.list_runs()) == 3, "nothing from the refused calls was enqueued"
