"""The ``regressions`` table: findings kept across runs, with their state, as rows in and out.

Which findings to keep and how a run updates them is analysis' business (``analysis/records.py``);
this module only reads and writes rows. Writes must run in the writer thread
(``Database.writer.call``), like every write; reads take a cursor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from service.store.transaction import registered, transaction
from service.types import TimeRange

__all__ = ["FindingRows", "Record", "list_findings"]

# The table's columns, in the order of Record's fields (rows read back become Records positionally).
_SCHEMA = pa.schema(
    [
        ("id", pa.uint64()),
        ("finding_key", pa.uint64()),
        ("tenant", pa.string()),
        ("kind", pa.string()),
        ("service", pa.string()),
        ("profile_type", pa.string()),
        ("series_ids", pa.list_(pa.uint64())),
        ("function", pa.string()),
        ("metric", pa.string()),
        ("change_ts", pa.int64()),
        ("baseline", pa.float64()),
        ("baseline_lo", pa.float64()),
        ("baseline_hi", pa.float64()),
        ("current", pa.float64()),
        ("current_lo", pa.float64()),
        ("current_hi", pa.float64()),
        ("relative", pa.float64()),
        ("p_value", pa.float64()),
        ("p_adjusted", pa.float64()),
        ("instances", pa.list_(pa.string())),
        ("attribution", pa.string()),
        ("details", pa.string()),
        ("state", pa.string()),
        ("first_seen", pa.int64()),
        ("last_seen", pa.int64()),
        ("acked_at", pa.int64()),
        ("resolved_at", pa.int64()),
    ]
)
_COLUMNS = ", ".join(_SCHEMA.names)


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    finding_key: int
    tenant: str
    kind: str
    service: str
    profile_type: str
    series_ids: list[int]
    function: str
    metric: str
    change_ts: int
    baseline: float
    baseline_lo: float
    baseline_hi: float
    current: float
    current_lo: float
    current_hi: float
    relative: float
    p_value: float
    p_adjusted: float
    instances: list[str]
    attribution: dict[str, Any]
    details: dict[str, Any]
    state: str
    first_seen: int
    last_seen: int
    acked_at: int | None
    resolved_at: int | None

    @property
    def title(self) -> str:
        if self.kind == "leak":
            what = self.profile_type.split(":")[1]
            rate = float(self.details.get("per_minute", 0.0))
            return f"{self.service}: {what} keeps growing, {rate:+,.0f}/min (top site {self.function or '?'})"
        what = "flat" if self.metric == "flat_share" else "cum"
        title = f"{self.service}: {self.function} {what} {self.relative:+.1%}"
        entry = self.details.get("entry") or {}
        if entry.get("function") and entry["function"] != self.function:
            title += f", entering at {entry['function']}"
        return title


def _record(row: tuple[Any, ...]) -> Record:
    values = list(row)
    values[20] = json.loads(values[20])
    values[21] = json.loads(values[21])
    return Record(*values)


def _as_row(r: Record) -> dict[str, Any]:
    row = {name: getattr(r, name) for name in _SCHEMA.names}
    row["attribution"] = json.dumps(r.attribution)
    row["details"] = json.dumps(r.details, default=float)
    return row


class FindingRows:
    """The ``regressions`` rows through one connection: a read cursor, or the writer's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def unresolved(self, tenant: str | None = None, keys: Sequence[int] | None = None) -> list[Record]:
        """Findings not resolved yet, of ``tenant`` (any when None) and with one of ``keys`` (any when None)."""
        sql = f"SELECT {_COLUMNS} FROM regressions WHERE state <> 'resolved'"
        params: dict[str, Any] = {}
        if tenant is not None:
            sql += " AND tenant = $t"
            params["t"] = tenant
        if keys is not None:
            sql += " AND finding_key IN (SELECT unnest($k))"
            params["k"] = sorted(keys)
        return [_record(r) for r in self._con.execute(sql, params).fetchall()]

    def put(self, records: Sequence[Record]) -> None:
        """Store ``records``, each replacing the row of its id if there is one, in one transaction."""
        if not records:
            return
        con = self._con
        batch = pa.Table.from_pylist([_as_row(r) for r in records], schema=_SCHEMA)
        with registered(con, "_b_findings", batch), transaction(con):
            con.execute("DELETE FROM regressions WHERE id IN (SELECT id FROM _b_findings)")
            con.execute(f"INSERT INTO regressions ({_COLUMNS}) SELECT {_COLUMNS} FROM _b_findings")

    def resolve(self, ids: Sequence[int], now: int) -> int:
        """Mark the findings ``ids`` resolved at ``now``; how many were asked."""
        if not ids:
            return 0
        self._con.execute(
            "UPDATE regressions SET state = 'resolved', resolved_at = $now WHERE id IN (SELECT unnest($ids))",
            {"now": now, "ids": list(ids)},
        )
        return len(ids)

    def ack(self, tenant: str, rid: int, now: int) -> Record | None:
        """Acknowledge an open finding (a resolved one stays resolved); ``None`` if there is no such finding."""
        self._con.execute(
            "UPDATE regressions SET state = 'acknowledged', acked_at = $now "
            "WHERE id = $id AND tenant = $t AND state = 'open'",
            {"now": now, "id": rid, "t": tenant},
        )
        return self.get(tenant, rid)

    def get(self, tenant: str, rid: int) -> Record | None:
        row = self._con.execute(
            f"SELECT {_COLUMNS} FROM regressions WHERE id = $id AND tenant = $t", {"id": rid, "t": tenant}
        ).fetchone()
        return _record(row) if row else None


def list_findings(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    *,
    service: str | None = None,
    kind: str | None = None,
    state: str | None = None,
    tr: TimeRange | None = None,
    limit: int = 1000,
) -> list[Record]:
    """Findings of ``tenant``, newest first; ``tr`` keeps findings whose change..last seen span overlaps it."""
    sql = f"SELECT {_COLUMNS} FROM regressions WHERE tenant = $t"
    params: dict[str, Any] = {"t": tenant, "limit": limit}
    for col, val in (("service", service), ("kind", kind), ("state", state)):
        if val is not None:
            sql += f" AND {col} = ${col}"
            params[col] = val
    if tr is not None:
        sql += " AND last_seen >= $start AND change_ts <= $end"
        params.update(start=tr.start, end=tr.end)
    rows = cur.execute(sql + " ORDER BY last_seen DESC, id LIMIT $limit", params).fetchall()
    return [_record(r) for r in rows]
