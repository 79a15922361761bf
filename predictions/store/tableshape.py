"""The live table as a writer finds it: which columns it has, their types, whether the unique key
exists. Both database writers adapt their rows to it, so one image writes into the platform's
table as the platform made it (no migration run), into it after `entrypoint.py migrate`, and into
a table an earlier version of this image made.

Rows (predictions/store/rows.py) are in the platform's types; `adapt` sends only the columns the table
has, each value in the column's own type (a table an earlier image version made has a boolean
exact_match, a double epoch …). A column the rows NEED that the table lacks is refused, naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from predictions.store.rows import ADDED_COLUMNS, COLUMN_TYPES, NEEDED_COLUMNS, ROW_COLUMNS, row_id
from predictions.store.writers.base import PermanentWriteError

#: The one command that brings a table up to this image's migrations (sql/).
MIGRATE_COMMAND = "SUPABASE_DB_URL=postgresql://… python entrypoint.py migrate"

_INTEGER = {"integer", "bigint", "smallint", "int", "int4", "int8", "int2"}
_FLOAT = {"double precision", "real", "numeric", "float8", "float4"}


def coerce(value: Any, pg_type: str) -> Any:
    """`value` in the column's type where Python and JSON would otherwise differ from it:
    1.0 into a boolean column is True, True into a float column 1.0, 41.7 into an integer 42."""
    if value is None:
        return None
    if pg_type in _INTEGER:
        if isinstance(value, float):
            return int(round(value)) if math.isfinite(value) else None
        return int(value) if isinstance(value, bool) else value
    if pg_type in _FLOAT or pg_type.startswith("numeric"):
        return float(value) if isinstance(value, (bool, int)) else value
    if pg_type == "boolean" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return value


@dataclass
class TableShape:
    """`columns`: name → Postgres type as the table has them. `unique_key`: whether a unique key on
    (job_id, step, sample_index) exists; None while unknown (the API learns it on the first write)."""

    columns: dict[str, str]
    unique_key: bool | None = None

    @classmethod
    def assumed(cls) -> TableShape:
        """What sql/ makes: every column in its type (when the table cannot be described)."""
        return cls({"id": "uuid", **COLUMN_TYPES}, None)

    @property
    def missing(self) -> list[str]:
        """Columns the rows carry that the table lacks, in row order."""
        return [c for c in ROW_COLUMNS if c not in self.columns]

    def check_needed(self) -> None:
        """Raise PermanentWriteError naming every needed column the table lacks."""
        lacking = [c for c in NEEDED_COLUMNS if c not in self.columns]
        if lacking:
            raise PermanentWriteError(
                f"table training_predictions has no column {', '.join(lacking)}: every prediction row needs "
                f"{'it' if len(lacking) == 1 else 'them'}; run the migrations once: {MIGRATE_COMMAND}")

    def drop(self, column: str) -> None:
        """Forget a column the server says is not there; refused for a needed one."""
        self.columns.pop(column, None)
        self.check_needed()

    @property
    def derived_ids(self) -> bool:
        """Whether rows carry their derived `id` (rows.row_id): the table's primary key is a uuid `id`,
        as the platform made it, so every insert is idempotent on it."""
        return self.columns.get("id") == "uuid"

    def adapt(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with only the table's columns, each value in its column's type, and its derived
        `id` when the table's `id` is a uuid."""
        adapted = {c: coerce(v, self.columns[c]) for c, v in row.items() if c in self.columns and c != "id"}
        if self.derived_ids:
            adapted["id"] = row_id(row["job_id"], row["step"], row["sample_index"])
        return adapted

    def report(self) -> list[str]:
        """Startup report lines: what the table lacks and the command that adds it."""
        lines = []
        missing = self.missing
        if missing:
            added = [c for c in missing if c in ADDED_COLUMNS]
            platform = [c for c in missing if c not in ADDED_COLUMNS]
            what = ", ".join(added + platform)
            lines.append(f"table: training_predictions lacks {len(missing)} column(s) this image writes: {what}; "
                         "rows are stored without them (their values stay in the local spool). "
                         f"To add them, run once: {MIGRATE_COMMAND}")
        differ = [f"{c} is {t}, not {COLUMN_TYPES[c]}" for c, t in self.columns.items()
                  if c in COLUMN_TYPES and t and t != COLUMN_TYPES[c]]
        if differ:
            lines.append(f"table: columns in other types than the platform's ({'; '.join(differ)}): values are sent "
                         "in the table's types (a job id that is not a UUID cannot be stored in a uuid job_id). "
                         f"To convert them, run once: {MIGRATE_COMMAND}")
        if self.unique_key is False and self.derived_ids:
            lines.append("table: no unique key on (job_id, step, sample_index): each row's id is derived from them, "
                         "so an insert sent twice conflicts on the primary key and every row is stored once. "
                         f"To add the key as well (and move older duplicate copies aside), run once: {MIGRATE_COMMAND}")
        elif self.unique_key is False:
            lines.append("table: no unique key on (job_id, step, sample_index) and no uuid primary key `id`: each "
                         "write reads which samples of the round are stored and inserts the others, which a retry "
                         "that commits late can store twice. To add the key (and move duplicate copies aside), run "
                         f"once: {MIGRATE_COMMAND}")
        if not lines:
            lines.append("table: training_predictions has every column and the unique key this image uses")
        return lines
