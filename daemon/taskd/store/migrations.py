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
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from taskd.errors import TaskdError

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


class MigrationError(TaskdError):
    """The migrations recorded in the database do not fit the shipped ones; start-up stops.

    Its message is one line that names the migration and says what to do.
    """


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
    file changed or the database holds the squashed development migrations in a state it
    cannot adopt.
    """
    applied_now: list[Migration] = []
    shipped = shipped_migrations()
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE SCHEMA IF NOT EXISTS taskd;
            CREATE TABLE IF NOT EXISTS taskd.migrations (
                version    int PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        rows = await connection.fetch("SELECT version, name, checksum FROM taskd.migrations")
        recorded = {(r["version"], r["name"], r["checksum"]) for r in rows}
        stale_functions: tuple[str, ...] | None = None
        if _holds_squashed(recorded):
            stale_functions = _adoptable(recorded, shipped[0])
            recorded = {(shipped[0].version, shipped[0].name, shipped[0].checksum)}
        by_version = {version: (name, checksum) for version, name, checksum in recorded}
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
        if stale_functions is not None:
            await _adopt_squashed(connection, shipped[0], stale_functions)
        for migration in pending:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


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
