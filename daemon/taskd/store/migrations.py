"""Ordered SQL migrations shipped in the package, applied under an advisory lock.

Two daemons starting at once both call ``apply_migrations``; the second waits on the lock and
then finds nothing left to apply.

A migration, once applied, is history: a shipped file whose checksum no longer matches the one
recorded stops start-up (MigrationError), since the database never ran the new text. A change
is a new numbered migration.

The development migrations 0001_initial..0014_unfinished_children were squashed into
0001_baseline before the first release. A database they migrated has the baseline's schema, so
it is adopted: its fourteen rows in taskd.migrations become the baseline's row, and the
migrations after the baseline apply as usual. Some of the old files were edited after databases
had applied them (the runner then only warned): a row may record an earlier version of its
file. The earlier versions known to leave the baseline's schema are accepted; those that left a
function with an older body have it re-created from the baseline during the adoption.

A database that records a migration this taskd does not ship was migrated by a newer taskd:
migrating it, or running a daemon on it, stops with MigrationError (upgrade taskd).

``migrate`` and ``schema_status`` are public (``taskd.migrate``, ``taskd.schema_status``);
``dry_run_sql`` and ``plain_sql`` print what ``taskd migrate --dry-run`` and ``--sql`` show.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Literal, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.types import ServerVersion

from taskd.errors import MigrationError as MigrationError
from taskd.models import SchemaStatus
from taskd.store.database import connect, describe_connection_error

log = logging.getLogger("taskd.migrations")

# pg_advisory_lock key: a constant, so every taskd process contends for the same lock.
MIGRATION_LOCK_KEY = 0x7A5D_0001
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")

# The squashed migrations as their last versions recorded themselves (version, name, checksum).
# A database is adopted only with these rows, or with some of them in an earlier version listed
# in EARLIER_SQUASHED: any other earlier edit may have left a column, an index or data the
# baseline does not have.
SQUASHED: tuple[tuple[int, str, str], ...] = (
    (1, "initial", "ecee0aadfe8ebfd9088fd22bf4447c86358d0f95e3cff920c7be08d756302675"),
    (2, "events", "ae0fda11a6a83c1d78b659c19e4a9dba97f020aa3a0484aaed67612df70b90bd"),
    (3, "schedules", "2a54746660a5a95cb51cad4a8427408c86cf3dbc9a753d2fd80c9f838f444360"),
    (4, "observability", "9d0585b4a09b2bf41a7e536a4cf9d78a867cdc139d7d53af0706f15c4bc6e260"),
    (5, "idempotency", "538f416461fa8fc7ffa5c313d359f05410ec13c1154b5c3538bca9aa013dff62"),
    (6, "steps", "6f1c79c64d567d76c1225d4120f494c27040b42c0d117e159f6cbe080dd9592f"),
    (7, "waits", "c9c47f63b1bfe90befa39d9d51754466c03df210e70251f58a1e80793d4d7cbe"),
    (8, "wait_tokens", "1afbae48ae8dd6064c75eec5bf6babc621df840484b98c26ecc164ea71ff6e4f"),
    (9, "child_runs", "faeabcad5e575cf28b47dea6b49852d5e125b2fc5b272c9dd7ba0ec09fccb591"),
    (10, "queues", "34207f8b2d43be7b015c76d8e0f73e96c6ef27d34dc65fc67aae7bd3aeb3be49"),
    (11, "waits_hardening", "6095fe3011066a1cff04b0050130ed79a39d358d89ca46fa35ebed3ac38cd208"),
    (
        12,
        "failures_and_reports",
        "7ddcd67dba2609da83165c3377258a492d5850c875ecf0d79831ec907ba9f8df",
    ),
    (13, "worker_process", "0dacf2ad226fc8b784035f3230d65b501c0a306784ba2313ce9ae6cc89a8055f"),
    (14, "unfinished_children", "b607aa381497b5f8e0b9b5a30a16253285f4eb2b6942c1d5927cb424556bc940"),
)
# The last commit that ships the squashed migrations: it can finish a partial migration.
SQUASHED_LAST_COMMIT = "83d7d54"

# Earlier versions of squashed files, as databases recorded them (version, checksum), with the
# functions that version left with a body other than the baseline's. Only the versions shipped
# in the last commits before the squash; each was compared with its file's last version:
EARLIER_SQUASHED: dict[tuple[int, str], tuple[str, ...]] = {
    # 0011 from ac75cca to a08cce9: claim_runs without the start stamped after the slot
    # counts (dd90cec); the tables, columns, indexes and the token backfill are the same.
    (11, "fd9b2f84ee7042c56f3f11542a50dba45eb84f396fa35402c75de078393f8014"): ("claim_runs",),
    # 0012 from eb7243e and 0013 from a3ca83d to dd90cec: only a comment's path differs
    # (daemon/worker/... before the engine moved to daemon/taskd/).
    (12, "39e3439be7b9a7f49753a2612097aaa3e18570d1173f96a31c7191a7dbe9582d"): (),
    (13, "aca87d5324ddfcef796d0a00acde6db7f1f87d6902a01b78a217d651421ddd58"): (),
}
_DOLLAR_QUOTE = re.compile(r"\$(\w*)\$")


# CREATE the bookkeeping table; every migration is recorded there, with its file's checksum.
MIGRATIONS_TABLE = """\
CREATE SCHEMA IF NOT EXISTS taskd;
CREATE TABLE IF NOT EXISTS taskd.migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

# What migrate, schema_status and the CLI accept as the database.
Database: TypeAlias = str | asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def label(self) -> str:
        """The file's name without ``.sql``: how migrations are named to users."""
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class Plan:
    """What migrating a database means, read from its ``taskd.migrations`` (nothing written).

    ``recorded`` is None when the table does not exist. ``adopt`` is None unless the database
    holds the squashed development migrations: then the functions to re-create while adopting.
    """

    recorded: frozenset[tuple[int, str, str]] | None
    applied: tuple[tuple[int, str], ...]
    pending: tuple[Migration, ...]
    unknown: tuple[tuple[int, str], ...]
    adopt: tuple[str, ...] | None

    def refuse_ahead(self) -> None:
        """MigrationError when a newer taskd migrated the database."""
        if self.unknown:
            names = ", ".join(f"{version:04d}_{name}" for version, name in self.unknown)
            raise MigrationError(
                f"the database's taskd schema is newer than this taskd ({_taskd_version()}): "
                f"it has migration(s) {names} that this taskd does not know (a newer taskd "
                "migrated it); upgrade taskd to the version that migrated it"
            )


def shipped_migrations() -> list[Migration]:
    folder = resources.files("taskd.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


async def apply_migrations(connection: asyncpg.Connection) -> list[Migration]:
    """Apply every shipped migration not yet recorded; return the ones applied now.

    Raises MigrationError, before adopting or applying anything, when an applied migration's
    file changed, the database holds migrations this taskd does not know (a newer taskd
    migrated it), or it holds the squashed development migrations in a state it cannot adopt;
    and when a migration fails (that migration's transaction is rolled back).
    """
    refuse_old_server(connection.get_server_version())
    applied_now: list[Migration] = []
    shipped = shipped_migrations()
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        recorded = await _recorded(connection)
        plan = make_plan(recorded, shipped)
        plan.refuse_ahead()
        if recorded is None:
            # only then: CREATE SCHEMA needs the CREATE privilege on the database even when the
            # schema exists, and a daemon's role may well lack it once the schema is current
            await connection.execute(MIGRATIONS_TABLE)
        if plan.adopt is not None:
            await _adopt_squashed(connection, shipped[0], plan.adopt)
        for migration in plan.pending:
            try:
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "INSERT INTO taskd.migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MigrationError(
                    f"migration {migration.filename} failed, nothing of it was applied: "
                    f"{first_line}"
                ) from exc
            log.info("applied migration %s", migration.label)
            applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


OLDEST_SERVER = 15
"""The oldest PostgreSQL major version taskd is tested on (14 reached its end of life on
2026-11-12; no build of it can be had where taskd is tested)."""


def refuse_old_server(version: ServerVersion) -> None:
    """MigrationError when the server is older than the oldest version taskd is tested on."""
    if version.major < OLDEST_SERVER:
        raise MigrationError(
            f"taskd needs PostgreSQL {OLDEST_SERVER} or newer; this server is "
            f"{version.major}.{version.minor}: upgrade it (see the README's PostgreSQL versions)"
        )


async def _recorded(connection: asyncpg.Connection) -> frozenset[tuple[int, str, str]] | None:
    """The rows of taskd.migrations, or None when the table does not exist."""
    if not await connection.fetchval("SELECT to_regclass('taskd.migrations') IS NOT NULL"):
        return None
    rows = await connection.fetch("SELECT version, name, checksum FROM taskd.migrations")
    return frozenset((r["version"], r["name"], r["checksum"]) for r in rows)


def make_plan(recorded: frozenset[tuple[int, str, str]] | None, shipped: list[Migration]) -> Plan:
    """What migrating a database with these rows in taskd.migrations takes.

    MigrationError when an applied migration's file changed, or the database holds the
    squashed development migrations in a state it cannot adopt. Unknown (newer) migrations
    are listed, not refused: ``Plan.refuse_ahead`` does that.
    """
    rows = set(recorded or ())
    adopt: tuple[str, ...] | None = None
    if _holds_squashed(rows):
        adopt = _adoptable(rows, shipped[0])
        rows = {(shipped[0].version, shipped[0].name, shipped[0].checksum)}
    by_version = {version: (name, checksum) for version, name, checksum in rows}
    pending = []
    for migration in shipped:
        if migration.version not in by_version:
            pending.append(migration)
        elif by_version[migration.version] != (migration.name, migration.checksum):
            raise MigrationError(
                f"migration {migration.filename} changed after this database applied "
                "it (its checksum differs from the one recorded in taskd.migrations): "
                "put the file back as it was applied and make the change a new "
                "numbered migration"
            )
    known = {migration.version for migration in shipped}
    return Plan(
        recorded=recorded,
        applied=tuple(sorted((version, name) for version, (name, _) in by_version.items())),
        pending=tuple(pending),
        unknown=tuple(
            sorted(
                (version, name) for version, (name, _) in by_version.items() if version not in known
            )
        ),
        adopt=adopt,
    )


@asynccontextmanager
async def _connection(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection to ``database``: a new one for a DSN (closed after), one of a pool's,
    or the connection given."""
    if isinstance(database, str):
        try:
            connection = await connect(database)
        except Exception as exc:
            described = describe_connection_error(exc, database)
            if described is None:
                raise
            raise MigrationError(described) from exc
        try:
            yield connection
        finally:
            await connection.close()
    elif isinstance(database, asyncpg.Pool):
        async with database.acquire() as acquired:
            yield acquired
    elif isinstance(database, asyncpg.Connection | PoolConnectionProxy):
        yield database
    else:
        raise TypeError(
            "taskd takes the database as a DSN string, an asyncpg Pool or an asyncpg "
            f"Connection, not {type(database).__name__}"
        )


async def migrate(database: Database) -> list[str]:
    """Create or upgrade the schema ``taskd`` in ``database``; return the migrations applied
    now (``["0002_cancel_wakes_parent"]``; ``[]``: it was current).

    ``database`` is a DSN string (a connection is opened and closed), an asyncpg ``Pool`` (one
    of its connections is used) or an asyncpg ``Connection`` (not inside a transaction).
    Idempotent, and safe from several processes at once: migrations are applied under a
    PostgreSQL advisory lock, so a second caller waits and then finds nothing left to apply.
    Each migration is applied in its own transaction and recorded in ``taskd.migrations``.

    Raises ``MigrationError`` (one line, says what to do) when the database cannot be
    reached, holds migrations this taskd does not know (a newer taskd migrated it: upgrade
    taskd), records an applied migration whose file has since changed, or a migration fails.
    """
    async with _connection(database) as connection:
        applied = await apply_migrations(connection)
    return [migration.label for migration in applied]


async def schema_status(database: Database) -> SchemaStatus:
    """Where the schema ``taskd`` in ``database`` stands against this taskd's migrations:
    ``current``, ``behind``, ``ahead`` or ``uninitialised`` (see ``SchemaStatus``).

    Reads ``taskd.migrations`` only: changes nothing and takes no lock. ``database`` is what
    ``migrate`` takes. A database migrated by taskd's development migrations (before
    ``0001_baseline``) counts as ``0001_baseline`` and is ``behind`` until ``migrate`` adopts
    it. Raises ``MigrationError`` for what no migrating can fix: an applied migration's file
    changed, or the database cannot be reached.
    """
    async with _connection(database) as connection:
        recorded = await _recorded(connection)
    return status_of(make_plan(recorded, shipped_migrations()))


def status_of(plan: Plan) -> SchemaStatus:
    shipped = shipped_migrations()
    state: Literal["current", "behind", "ahead", "uninitialised"]
    if not plan.recorded:
        state = "uninitialised"
    elif plan.unknown:
        state = "ahead"
    elif plan.pending or plan.adopt is not None:
        state = "behind"
    else:
        state = "current"
    return SchemaStatus(
        state=state,
        applied=[f"{version:04d}_{name}" for version, name in plan.applied],
        pending=[migration.label for migration in plan.pending],
        unknown=[f"{version:04d}_{name}" for version, name in plan.unknown],
        database_version=max((version for version, _ in plan.applied), default=0),
        code_version=max((migration.version for migration in shipped), default=0),
    )


async def read_plan(connection: asyncpg.Connection) -> Plan:
    """The plan for this database, read without writing; MigrationError when a newer taskd
    migrated it, or when the server is too old (``taskd migrate --dry-run`` and ``--sql``
    refuse them as ``migrate`` does)."""
    refuse_old_server(connection.get_server_version())
    plan = make_plan(await _recorded(connection), shipped_migrations())
    plan.refuse_ahead()
    return plan


def dry_run_sql(plan: Plan) -> str:
    """What ``taskd migrate`` would run on the database ``plan`` was read from, as SQL with a
    header line per step (``taskd migrate --dry-run``). Empty when there is nothing to do."""
    shipped = shipped_migrations()
    parts: list[str] = []
    if plan.recorded is None:
        parts.append(
            "-- create schema taskd and its bookkeeping table taskd.migrations\n" + MIGRATIONS_TABLE
        )
    if plan.adopt is not None:
        parts.append(
            f"-- adopt the development migrations 0001-{SQUASHED[-1][0]:04d} as "
            f"{shipped[0].filename}: record them as it"
            + (f", re-creating {', '.join(plan.adopt)} from it" if plan.adopt else "")
            + "\n"
            + "".join(baseline_function(shipped[0], name) + "\n" for name in plan.adopt)
            + "WITH squashed AS (DELETE FROM taskd.migrations RETURNING applied_at)\n"
            + "INSERT INTO taskd.migrations (version, name, checksum, applied_at)\n"
            + f"SELECT {shipped[0].version}, '{shipped[0].name}', '{shipped[0].checksum}', "
            + "min(applied_at) FROM squashed;\n"
        )
    for migration in plan.pending:
        parts.append(
            f"-- migration {migration.filename} (checksum {migration.checksum}), then recorded "
            "in taskd.migrations\n" + migration.sql.rstrip() + "\n"
        )
    return "\n".join(parts)


def plain_sql(plan: Plan) -> str:
    """The pending migrations as one plain SQL script a team applies with its own tool
    (``taskd migrate --sql``): after it, taskd sees them as applied.

    The script takes taskd's migration lock for its transaction
    (``pg_advisory_xact_lock``), so it must run in one transaction (Flyway, Alembic and
    Django run each migration in one; ``psql --single-transaction``). It creates the schema and
    ``taskd.migrations`` if missing, stops at once (changing nothing) unless the database
    records exactly the migrations it recorded when the script was made, then runs each
    pending migration and records it with its checksum. Adopting the development migrations
    is left to ``taskd migrate`` (MigrationError).
    """
    if plan.adopt is not None:
        raise MigrationError(
            "this database was migrated by a development build of taskd (before "
            f"{shipped_migrations()[0].filename}): run `taskd migrate` once to adopt it, then "
            "--sql prints the migrations after it"
        )
    if not plan.pending:
        # a statement, not only a comment: some drivers refuse an empty query
        return (
            "-- taskd: no pending migration, the schema is current\n"
            "SELECT 'taskd: no pending migration' AS taskd;\n"
        )
    before = sorted(version for version, _ in plan.applied)
    names = ", ".join(migration.label for migration in plan.pending)
    at = ", ".join(f"{version:04d}_{name}" for version, name in plan.applied) or "none"
    expected = "{" + ",".join(str(version) for version in before) + "}"
    lines = [
        f"-- taskd {_taskd_version()}: migrations {names}, as plain SQL.",
        f"-- Made for a database whose taskd.migrations records: {at}.",
        "-- Run it in ONE transaction (Flyway, Alembic and Django run a migration in one;",
        "-- psql --single-transaction -f FILE). taskd then sees these migrations as applied.",
        "",
        "-- taskd's migration lock, until this transaction ends: a taskd migrating at the same",
        "-- time waits for it",
        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});",
        "",
        MIGRATIONS_TABLE,
        "-- stop, changing nothing, if the database is no longer where this script was made for",
        "DO $taskd_check$",
        "BEGIN",
        "    IF ARRAY(SELECT version FROM taskd.migrations ORDER BY version)",
        f"       IS DISTINCT FROM '{expected}'::int[] THEN",
        "        RAISE EXCEPTION USING MESSAGE = 'taskd: this SQL applies migrations "
        f"{names} to a database that records {at}, but this one records '",
        "            || coalesce((SELECT string_agg(lpad(version::text, 4, '0') || '_' || name,"
        " ', ' ORDER BY version) FROM taskd.migrations), 'none')",
        "            || ': make it again with taskd migrate --sql';",
        "    END IF;",
        "END",
        "$taskd_check$;",
        "",
    ]
    for migration in plan.pending:
        lines += [
            f"-- migration {migration.filename}",
            migration.sql.rstrip(),
            "INSERT INTO taskd.migrations (version, name, checksum) VALUES "
            f"({migration.version}, '{migration.name}', '{migration.checksum}');",
            "",
        ]
    return "\n".join(lines)


def _taskd_version() -> str:
    try:
        return metadata.version("taskd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _holds_squashed(recorded: set[tuple[int, str, str]]) -> bool:
    """Whether the database was migrated by the development migrations (by their names: the
    baseline and the migrations after it have names of their own)."""
    squashed_names = {(version, name) for version, name, _ in SQUASHED}
    return any((version, name) in squashed_names for version, name, _ in recorded)


def _adoptable(recorded: set[tuple[int, str, str]], baseline: Migration) -> tuple[str, ...]:
    """The baseline's functions to re-create when adopting a database migrated by all the
    squashed migrations, each in its last version or an accepted earlier one; MigrationError
    for any other state of them."""
    expected = {version: (name, checksum) for version, name, checksum in SQUASHED}
    have = {version: (name, checksum) for version, name, checksum in recorded}
    accepted = set(SQUASHED) | {
        (version, expected[version][0], checksum) for version, checksum in EARLIER_SQUASHED
    }
    changed = [
        version
        for version in sorted(have)
        if version in expected and (version, *have[version]) not in accepted
    ]
    if changed:
        raise MigrationError(
            f"this database was migrated by a development build of taskd whose "
            f"{changed[0]:04d}_{expected[changed[0]][0]}.sql differs from the one squashed into "
            f"{baseline.filename}, so its schema is not the baseline's: recreate schema taskd "
            "(DROP SCHEMA taskd CASCADE deletes every run) and start again"
        )
    if have.keys() != expected.keys():
        last = max(have)
        raise MigrationError(
            f"this database was migrated by a development build of taskd only up to "
            f"{last:04d}_{have[last][0]}.sql, before its migrations were squashed into "
            f"{baseline.filename}: run `taskd migrate` from commit {SQUASHED_LAST_COMMIT} "
            "first, then start this version"
        )
    stale: list[str] = []
    for version, (_, checksum) in sorted(have.items()):
        for function in EARLIER_SQUASHED.get((version, checksum), ()):
            if function not in stale:
                stale.append(function)
    return tuple(stale)


async def _adopt_squashed(
    connection: asyncpg.Connection, baseline: Migration, stale_functions: tuple[str, ...]
) -> None:
    """Record a database migrated by the squashed migrations as migrated by the baseline,
    after giving the functions an earlier version left behind the baseline's body."""
    async with connection.transaction():
        for function in stale_functions:
            await connection.execute(baseline_function(baseline, function))
        # the earliest application of the squashed ones is when the baseline's schema began
        await connection.execute(
            """
            WITH squashed AS (DELETE FROM taskd.migrations RETURNING applied_at)
            INSERT INTO taskd.migrations (version, name, checksum, applied_at)
            SELECT $1, $2, $3, min(applied_at) FROM squashed
            """,
            baseline.version,
            baseline.name,
            baseline.checksum,
        )
    log.info(
        "adopted a database migrated by the development migrations 0001-%04d as %s%s",
        SQUASHED[-1][0],
        baseline.filename,
        f" (re-created from it: {', '.join(stale_functions)})" if stale_functions else "",
    )


def baseline_function(baseline: Migration, name: str) -> str:
    """The baseline's statement that creates function taskd.<name>, as CREATE OR REPLACE (the
    function keeps its identity, grants and comment)."""
    header = re.compile(rf"^CREATE FUNCTION taskd\.{name}\(", re.MULTILINE)
    found = list(header.finditer(baseline.sql))
    if len(found) != 1:
        raise RuntimeError(f"{baseline.filename} creates taskd.{name} {len(found)} times, not once")
    start = found[0].start()
    opening = _DOLLAR_QUOTE.search(baseline.sql, start)
    if opening is None:
        raise RuntimeError(f"taskd.{name} in {baseline.filename} has no dollar-quoted body")
    closing = baseline.sql.index(opening.group(0), opening.end())
    end = baseline.sql.index(";", closing + len(opening.group(0))) + 1
    statement = baseline.sql[start:end]
    return "CREATE OR REPLACE" + statement.removeprefix("CREATE")
