"""The SQL side of the request log: a writer connection and the statements that turn rows into commits.

Kept apart from the writer thread (store/writer.py) because it is the one
place rows become SQL: the writer thread uses it, and benchmarks and tests
that need to load many rows through exactly the same statements use it
directly. Plain sqlite3 `executemany` is used for the hot inserts: it binds
tuples straight from the dataclasses with the least Python work.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from . import rollups
from .records import RequestRow
from .schema import JSON_COLUMNS, TABLES, configure_writer, ensure_schema

#: errors caused by the environment (retry later) rather than by one row's values
ENV_ERRORS = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)
ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
               TypeError, ValueError, OverflowError, AttributeError, KeyError)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _TableSQL:
    sql: str
    params: Callable[[Any], tuple]


def _build_sql() -> dict[type, _TableSQL]:
    """One INSERT (upsert where there is a key) per record type, and a fast tuple getter."""
    out: dict[type, _TableSQL] = {}
    for record, table in TABLES.items():
        names = [f.name for f in fields(record)]
        cols = ", ".join(names)
        marks = ", ".join("?" for _ in names)
        if table == "requests":
            conflict = "(id)"
        elif table == "attempts":
            conflict = "(request_id, n)"
        elif table == "drills":
            conflict = "(id)"
        else:
            conflict = None
        sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
        if conflict:
            keys = {"(id)": {"id"}, "(request_id, n)": {"request_id", "n"}}[conflict]
            sets = ", ".join(f"{n}=excluded.{n}" for n in names if n not in keys)
            sql += f" ON CONFLICT{conflict} DO UPDATE SET {sets}"
        json_cols = JSON_COLUMNS[table]
        getter = attrgetter(*names)
        params: Callable[[Any], tuple]
        if json_cols:
            idx = [i for i, n in enumerate(names) if n in json_cols]

            def with_json(row: Any, getter=getter, idx=idx) -> tuple:
                values = list(getter(row))
                for i in idx:
                    values[i] = _json(values[i])
                return tuple(values)
            params = with_json
        else:
            params = getter
        out[record] = _TableSQL(sql, params)
    return out


_SQL = _build_sql()


class Sink:
    """A writer connection and the code that turns rows into one transaction.

    Used by the writer thread, and directly by benchmarks and tests that need
    to load many rows through exactly the same statements.
    """

    def __init__(self, path: str):
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._names: set[tuple[str, str]] = set()

    def open(self) -> None:
        """Open (creating the file and schema if needed). Raises on failure."""
        self.close()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.5,
                               uri=self.path.startswith("file:"))
        try:
            configure_writer(conn)
            ensure_schema(conn)
            self._names = {(k, v) for k, v in conn.execute("SELECT kind, value FROM names")}
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            self.conn = None

    def write(self, rows: list[Any]) -> int:
        """Write rows in one transaction (all or nothing). Returns rows written."""
        conn = self.conn
        assert conn is not None
        groups: dict[type, list[tuple]] = {}
        new_names: set[tuple[str, str]] = set()
        for row in rows:
            kind = type(row)
            spec = _SQL[kind]            # KeyError for a foreign object: a row error
            groups.setdefault(kind, []).append(spec.params(row))
        if RequestRow in groups:
            new_names = self._new_names(rows)
        rolled = rollups.deltas(rows)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, params in groups.items():
                conn.executemany(_SQL[kind].sql, params)
            if rolled:
                conn.executemany(rollups.UPSERT, rolled)
            if new_names:
                conn.executemany("INSERT OR IGNORE INTO names (kind, value) VALUES (?, ?)", list(new_names))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._names |= new_names
        return len(rows)

    def write_careful(self, rows: list[Any]) -> tuple[int, list[tuple[Any, str]]]:
        """Write rows one savepoint each, so bad rows are skipped; returns (written, rejected)."""
        conn = self.conn
        assert conn is not None
        rejected: list[tuple[Any, str]] = []
        written = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                try:
                    spec = _SQL[type(row)]
                    params = spec.params(row)
                    conn.execute("SAVEPOINT one")
                    try:
                        conn.execute(spec.sql, params)
                        conn.executemany(rollups.UPSERT, rollups.deltas([row]))
                        if isinstance(row, RequestRow):
                            new = self._new_names([row])
                            if new:
                                conn.executemany("INSERT OR IGNORE INTO names (kind, value) VALUES (?, ?)", list(new))
                                self._names |= new
                    except BaseException:
                        conn.execute("ROLLBACK TO one")
                        conn.execute("RELEASE one")
                        raise
                    conn.execute("RELEASE one")
                    written += 1
                except ROW_ERRORS as exc:
                    rejected.append((row, f"{type(exc).__name__}: {exc}"))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return written, rejected

    def _new_names(self, rows: Iterable[Any]) -> set[tuple[str, str]]:
        names = self._names
        new = set()
        for row in rows:
            if type(row) is RequestRow:
                for kind, value in (("route", row.route), ("target", row.final_target), ("outcome", row.outcome)):
                    if value is not None and (kind, value) not in names:
                        new.add((kind, value))
        return new

    def analyze(self) -> None:
        """Sampled ANALYZE: bounded work (a few ms to tens of ms) whatever the table size."""
        assert self.conn is not None
        self.conn.execute("PRAGMA analysis_limit=1000")
        self.conn.execute("ANALYZE")

    def prune(self, cutoff: float, chunk: int = 5000) -> int:
        """Delete one chunk of rows older than cutoff from each log table; returns rows deleted.

        Small chunks keep each transaction short so live writes interleave with a
        long prune instead of waiting behind it.
        """
        conn = self.conn
        assert conn is not None
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in ("requests", "attempts", "events"):
                cur = conn.execute(
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE ts < ? ORDER BY ts LIMIT ?)",
                    (cutoff, chunk),
                )
                deleted += cur.rowcount
            for res in rollups.RESOLUTIONS:     # roll-ups age out with the rows they count
                conn.execute("DELETE FROM rollups WHERE res = ? AND slot < ?", (res, int(cutoff // res)))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return deleted
