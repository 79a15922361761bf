"""Make a prediction row storable: what Postgres text and a JSON request body cannot hold.

A model's output is arbitrary text: it may contain NUL (Postgres text refuses it), lone UTF-16
surrogates (not encodable as UTF-8, so the request body would be invalid), megabytes of
repetition (one row would exceed the API's request limit), and its scores may be NaN or inf
(not valid JSON). Each would fail a whole round at the server; here each becomes a storable
value, and a cut text is flagged in `text_truncated` so the UI can say so.
"""

from __future__ import annotations

import json
import math
from typing import Any

from predictions.store.rows import TEXT_COLUMNS

REPLACEMENT = "\ufffd"


def _clean_str(s: str) -> str:
    """Drop NUL; replace lone surrogates with U+FFFD (a valid surrogate pair becomes its char)."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        # The UTF-16 round trip joins well-formed pairs (a spool read with surrogatepass may hold
        # them) and turns each lone surrogate into U+FFFD, in C, without a per-char loop.
        s = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return s


def _clean_value(value: Any) -> Any:
    """Clean strings wherever they are (validation_errors is a list of them); NaN/inf → None.

    Non-finite floats are nulled in every column, not only FLOAT_COLUMNS: a NaN anywhere would
    make the whole body invalid JSON. Ints pass through (JSON numbers either way).
    """
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean_value(v) for v in value]
    if isinstance(value, dict):
        return {(_clean_str(k) if isinstance(k, str) else k): _clean_value(v) for k, v in value.items()}
    return value


def sanitize_row(row: dict[str, Any], *, max_text_chars: int) -> dict[str, Any]:
    """A copy of `row` that Postgres text and a UTF-8 JSON body can hold.

    NUL removed from every string; lone surrogates → U+FFFD; each of TEXT_COLUMNS capped at
    `max_text_chars` (and `text_truncated` set when one was cut); non-finite floats → None
    (the scores of FLOAT_COLUMNS, and any other float).
    Never raises on odd values: what it does not know it leaves as it is.
    """
    assert max_text_chars > 0, "max_text_chars must be positive"
    out = {key: _clean_value(value) for key, value in row.items()}
    cut = False
    for column in TEXT_COLUMNS:
        text = out.get(column)
        if isinstance(text, str) and len(text) > max_text_chars:
            out[column] = text[:max_text_chars]
            cut = True
    if cut:
        out["text_truncated"] = True
    return out


def _json_size(row: dict[str, Any]) -> int:
    """Bytes of `row` in the request body, encoded as postgrest-py encodes it (compact, UTF-8)."""
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def split_by_bytes(rows: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Split one round into request bodies of at most `max_bytes` each, in order.

    A body is `[row,row,…]`: two brackets plus one comma between rows. A row larger than
    `max_bytes` on its own goes alone (sanitize_row capped its text already; the server decides).
    """
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2  # the brackets
    for row in rows:
        row_size = _json_size(row)
        added = row_size + (1 if current else 0)
        if current and size + added > max_bytes:
            chunks.append(current)
            current, size, added = [], 2, row_size
        current.append(row)
        size += added
    if current:
        chunks.append(current)
    return chunks
