"""Ordered SQL migrations shipped in the package, applied under an advisory lock.

Two daemons starting at once both call ``apply_migrations``; the second waits on the lock and
then finds nothing left to apply.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("taskd.migrations")

# pg_advisory_lock key: a constant, so every taskd process contends for the same lock.
MIGRATION_LOCK_KEY = 0x7A5D_0001
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


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
    """Apply every shipped migration not yet recorded; return the ones applied now."""
    applied_now: list[Migration] = []
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
        rows = await connection.fetch("SELECT version, checksum FROM taskd.migrations")
        recorded = {row["version"]: row["checksum"] for row in rows}
        for migration in shipped_migrations():
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    log.warning(
                        "migration %04d_%s changed after it was applied; not re-applied",
                        migration.version,
                        migration.name,
                    )
                continue
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
