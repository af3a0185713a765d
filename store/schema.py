"""The SQLite schema, built with sqlite-utils and versioned with `user_version`.

Columns come from the dataclasses in `store/records.py`, so the row format the
gateway builds and the table layout cannot drift apart: a field added to a
record later becomes a column on the next start (`ensure_schema` adds it), and
anything beyond adding columns goes into `MIGRATIONS` under a new version.

Indexes exist for the history views, which page with keysets on (ts, id)
descending: time alone, and route / final_target / outcome each followed by
(ts, id), so every filtered page is an index range scan that stops after
`limit` rows. Free-text search (`q`) over error text uses a trigram FTS5 index
that only holds rows with an error message (a minority), so it costs nothing on
successful requests; routes and targets are matched through the small `names`
table the writer keeps. Version 2 adds attempts by (target, ts) and attempts
with error text by ts (history's target filter and search reach requests that
failed over away from a target), requests that failed over, and the per-target
roll-ups the charts read (`store/rollups.py`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any

import sqlite_utils

from . import rollups
from .records import AttemptRow, DrillRow, EventRow, RequestRow

SCHEMA_VERSION = 2

#: record type -> table name
TABLES: dict[type, str] = {
    RequestRow: "requests",
    AttemptRow: "attempts",
    EventRow: "events",
    DrillRow: "drills",
}

#: columns stored as JSON text
JSON_COLUMNS: dict[str, frozenset[str]] = {
    "requests": frozenset(),
    "attempts": frozenset(),
    "events": frozenset({"detail"}),
    "drills": frozenset({"params", "report"}),
}

#: columns stored as 0/1 and read back as bool
BOOL_COLUMNS: dict[str, frozenset[str]] = {
    "requests": frozenset({"stream"}),
    "attempts": frozenset({"continuation"}),
    "events": frozenset(),
    "drills": frozenset(),
}

PRIMARY_KEYS: dict[str, str | tuple[str, ...] | None] = {
    "requests": "id",
    "attempts": ("request_id", "n"),
    "events": None,            # rowid, exposed as "id" when read
    "drills": "id",
}


class SchemaError(Exception):
    """The database was written by a newer Patchbay (or is not ours)."""


def _sql_type(annotation: Any, column: str, table: str) -> type:
    """Map a dataclass annotation (a string under `from __future__ import annotations`) to a sqlite-utils type."""
    text = str(annotation)
    if column in JSON_COLUMNS[table] or "dict" in text or "list" in text:
        return str
    if "float" in text:
        return float
    if "bool" in text or "int" in text:
        return int
    return str


def columns_for(record: type) -> dict[str, type]:
    """Column name -> sqlite-utils type for a record dataclass, in field order."""
    table = TABLES[record]
    return {f.name: _sql_type(f.type, f.name, table) for f in dataclasses.fields(record)}


def _not_null(record: type) -> set[str]:
    """Fields without a default and not Optional are NOT NULL in the table."""
    out = set()
    for f in dataclasses.fields(record):
        optional = "None" in str(f.type)
        if not optional and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out.add(f.name)
    return out


def _create_v1(db: sqlite_utils.Database) -> None:
    for record, table in TABLES.items():
        db.table(table).create(
            columns_for(record),
            pk=PRIMARY_KEYS[table],
            not_null=_not_null(record),
            if_not_exists=True,
        )
    db.table("names").create({"kind": str, "value": str}, pk=("kind", "value"), if_not_exists=True)

    requests = db.table("requests")
    requests.create_index(["ts", "id"], index_name="requests_ts", if_not_exists=True)
    requests.create_index(["route", "ts", "id"], index_name="requests_route_ts", if_not_exists=True)
    requests.create_index(["final_target", "ts", "id"], index_name="requests_target_ts", if_not_exists=True)
    requests.create_index(["outcome", "ts", "id"], index_name="requests_outcome_ts", if_not_exists=True)
    attempts = db.table("attempts")
    attempts.create_index(["ts"], index_name="attempts_ts", if_not_exists=True)
    events = db.table("events")
    events.create_index(["ts"], index_name="events_ts", if_not_exists=True)
    events.create_index(["kind"], index_name="events_kind", if_not_exists=True)
    events.create_index(["request_id"], index_name="events_request", if_not_exists=True)
    db.table("drills").create_index(["started"], index_name="drills_started", if_not_exists=True)

    # Partial indexes sqlite-utils cannot express: rows with error text (for the
    # dense branch of `q` search) and rows that belong to a drill.
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS requests_err_ts ON requests(ts, id) WHERE error_message IS NOT NULL;
        CREATE INDEX IF NOT EXISTS requests_drill_ts ON requests(drill_id, ts, id) WHERE drill_id IS NOT NULL;

        CREATE VIRTUAL TABLE IF NOT EXISTS requests_fts USING fts5(
            error_class, error_message, content='requests', content_rowid='rowid', tokenize='trigram'
        );
        CREATE TRIGGER IF NOT EXISTS requests_fts_ai AFTER INSERT ON requests
        WHEN new.error_message IS NOT NULL BEGIN
            INSERT INTO requests_fts(rowid, error_class, error_message)
            VALUES (new.rowid, new.error_class, new.error_message);
        END;
        CREATE TRIGGER IF NOT EXISTS requests_fts_ad AFTER DELETE ON requests
        WHEN old.error_message IS NOT NULL BEGIN
            INSERT INTO requests_fts(requests_fts, rowid, error_class, error_message)
            VALUES ('delete', old.rowid, old.error_class, old.error_message);
        END;
        CREATE TRIGGER IF NOT EXISTS requests_fts_au AFTER UPDATE OF error_class, error_message ON requests BEGIN
            INSERT INTO requests_fts(requests_fts, rowid, error_class, error_message)
            SELECT 'delete', old.rowid, old.error_class, old.error_message WHERE old.error_message IS NOT NULL;
            INSERT INTO requests_fts(rowid, error_class, error_message)
            SELECT new.rowid, new.error_class, new.error_message WHERE new.error_message IS NOT NULL;
        END;
        """
    )


def _add_v2(db: sqlite_utils.Database) -> None:
    """Failovers are found in history: requests by any target they tried (not only the one that
    ended them), requests that failed over, and attempts' own errors, each an index walk."""
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS attempts_target_ts ON attempts(target, ts, outcome);
        CREATE INDEX IF NOT EXISTS attempts_err_ts ON attempts(ts) WHERE error IS NOT NULL;
        CREATE INDEX IF NOT EXISTS requests_failover_ts ON requests(ts, id) WHERE failovers > 0;
        """
    )
    db.execute(rollups.CREATE)
    rollups.backfill(db.conn)


#: version -> function that brings a database from version-1 to version.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _create_v1,
    2: _add_v2,
}


def configure_writer(conn: sqlite3.Connection) -> None:
    """Pragmas for the one writer connection: WAL so readers never wait, NORMAL sync
    (a process kill loses nothing committed; only power loss can drop the last commits)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=500")
    conn.execute("PRAGMA journal_size_limit=67108864")
    conn.execute("PRAGMA foreign_keys=OFF")


def open_db(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """Wrap a connection for sqlite-utils without plugins or recursive triggers (plain, predictable SQL)."""
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def ensure_schema(conn: sqlite3.Connection) -> int:
    """Create or migrate the schema; returns the version now in the file.

    Runs under BEGIN IMMEDIATE so two processes starting at once do not both
    migrate. Refuses a file from a newer schema rather than writing into it.
    """
    db = open_db(conn)
    version = user_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaError(f"database schema version {version} is newer than this Patchbay ({SCHEMA_VERSION})")
    needs_columns = _missing_columns(db)
    if version == SCHEMA_VERSION and not needs_columns:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = user_version(conn)
        while version < SCHEMA_VERSION:
            MIGRATIONS[version + 1](db)
            version += 1
            conn.execute(f"PRAGMA user_version={version}")
        for table, column, kind in _missing_columns(db):
            db.table(table).add_column(column, kind)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version


def _missing_columns(db: sqlite_utils.Database) -> list[tuple[str, str, type]]:
    """Record fields that have no column yet (a field added to records.py since the file was made)."""
    out = []
    existing_tables = set(db.table_names())
    for record, table in TABLES.items():
        if table not in existing_tables:
            continue
        have = {c.name for c in db[table].columns}
        for name, kind in columns_for(record).items():
            if name not in have:
                out.append((table, name, kind))
    return out
