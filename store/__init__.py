"""Patchbay's request log: SQLite (WAL) through sqlite-utils, no Textual, no aiohttp.

`Store` is the non-blocking batched writer the gateway feeds; `History` answers
the admin API and `patchbay history`; `history_main` is the CLI entry point.
"""

from .cli import format_history_table, history_main
from .history import History
from .history_sql import BadCursor, decode_cursor, encode_cursor
from .records import AttemptRow, DrillRow, EventRow, RequestRow, new_id
from .schema import SCHEMA_VERSION, SchemaError, ensure_schema
from .sink import Sink
from .writer import Store

__all__ = [
    "AttemptRow", "BadCursor", "DrillRow", "EventRow", "History", "RequestRow", "SCHEMA_VERSION",
    "SchemaError", "Sink", "Store", "decode_cursor", "encode_cursor", "ensure_schema", "format_history_table",
    "history_main", "new_id",
]
