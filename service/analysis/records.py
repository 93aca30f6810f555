"""The ``regressions`` table: findings kept across runs, with their state.

Writes run in the writer thread (``Database.writer.call``), like every write; reads take a cursor.
A finding seen again updates its open row; one that is no longer found and whose value is back
nearer its baseline than its risen level is resolved. Acknowledging keeps a finding listed but marks that
someone looked; it still resolves by itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import xxhash

from service.analysis.findings import Finding
from service.types import TimeRange

__all__ = ["Record", "ack", "get", "list_records", "open_records", "resolve", "save"]

_COLUMNS = (
    "id, finding_key, tenant, kind, service, profile_type, series_ids, function, metric, change_ts, baseline, "
    "baseline_lo, baseline_hi, current, current_lo, current_hi, relative, p_value, p_adjusted, instances, "
    "attribution, details, state, first_seen, last_seen, acked_at, resolved_at"
)


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
        return f"{self.service}: {self.function} {what} {self.relative:+.1%}"


def _record(row: tuple[Any, ...]) -> Record:
    values = list(row)
    values[20] = json.loads(values[20])
    values[21] = json.loads(values[21])
    return Record(*values)


def _finite(x: float) -> float:
    """JSON and the API carry no infinities: a rise from zero is reported as a relative change of 1e9."""
    return max(min(x, 1e9), -1e9) if x == x else 0.0


def save(con: duckdb.DuckDBPyConnection, findings: Sequence[Finding], now: int) -> list[tuple[Record, bool]]:
    """Insert new findings, update the open rows of findings seen again; each record and whether it is new."""
    if not findings:
        return []
    keys = sorted({f.key for f in findings})
    current = {
        r.finding_key: r
        for r in (
            _record(row)
            for row in con.execute(
                f"SELECT {_COLUMNS} FROM regressions WHERE state <> 'resolved' AND finding_key IN (SELECT unnest($k))",
                {"k": keys},
            ).fetchall()
        )
    }
    out: list[tuple[Record, bool]] = []
    for f in findings:
        old = current.get(f.key)
        rid = old.id if old else xxhash.xxh3_64_intdigest(f"{f.key}\x1f{f.change_ts}\x1f{now}".encode())
        rec = Record(
            id=rid,
            finding_key=f.key,
            tenant=f.tenant,
            kind=f.kind,
            service=f.service,
            profile_type=f.profile_type,
            series_ids=f.series_ids,
            function=f.function,
            metric=f.metric,
            change_ts=old.change_ts if old else f.change_ts,
            baseline=_finite(f.baseline.mean),
            baseline_lo=_finite(f.baseline.lo),
            baseline_hi=_finite(f.baseline.hi),
            current=_finite(f.current.mean),
            current_lo=_finite(f.current.lo),
            current_hi=_finite(f.current.hi),
            relative=_finite(f.relative),
            p_value=f.p_value,
            p_adjusted=f.p_adjusted,
            instances=f.instances,
            attribution=f.attribution or (old.attribution if old else {}),
            details=f.details,
            state=old.state if old else "open",
            first_seen=old.first_seen if old else now,
            last_seen=now,
            acked_at=old.acked_at if old else None,
            resolved_at=None,
        )
        out.append((rec, old is None))
    table = pa.Table.from_pylist([_as_row(r) for r, _ in out], schema=_SCHEMA)
    con.register("_b_findings", table)
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM regressions WHERE id IN (SELECT id FROM _b_findings)")
        con.execute(f"INSERT INTO regressions ({_COLUMNS}) SELECT {_COLUMNS} FROM _b_findings")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_b_findings")
    return out


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


def _as_row(r: Record) -> dict[str, Any]:
    row = {name: getattr(r, name) for name in _SCHEMA.names}
    row["attribution"] = json.dumps(r.attribution)
    row["details"] = json.dumps(r.details, default=float)
    return row


def open_records(cur: duckdb.DuckDBPyConnection, tenant: str) -> list[Record]:
    """Findings not resolved yet: what a run checks for a return to baseline."""
    rows = cur.execute(
        f"SELECT {_COLUMNS} FROM regressions WHERE tenant = $t AND state <> 'resolved'", {"t": tenant}
    ).fetchall()
    return [_record(r) for r in rows]


def resolve(con: duckdb.DuckDBPyConnection, ids: Sequence[int], now: int) -> int:
    if not ids:
        return 0
    con.execute(
        "UPDATE regressions SET state = 'resolved', resolved_at = $now WHERE id IN (SELECT unnest($ids))",
        {"now": now, "ids": list(ids)},
    )
    return len(ids)


def ack(con: duckdb.DuckDBPyConnection, tenant: str, rid: int, now: int) -> Record | None:
    """Acknowledge an open finding (a resolved one stays resolved); ``None`` if there is no such finding."""
    con.execute(
        "UPDATE regressions SET state = 'acknowledged', acked_at = $now WHERE id = $id AND tenant = $t AND state = 'open'",
        {"now": now, "id": rid, "t": tenant},
    )
    return get(con, tenant, rid)


def get(cur: duckdb.DuckDBPyConnection, tenant: str, rid: int) -> Record | None:
    row = cur.execute(
        f"SELECT {_COLUMNS} FROM regressions WHERE id = $id AND tenant = $t", {"id": rid, "t": tenant}
    ).fetchone()
    return _record(row) if row else None


def list_records(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    *,
    service: str | None = None,
    kind: str | None = None,
    state: str | None = None,
    tr: TimeRange | None = None,
    limit: int = 1000,
) -> list[Record]:
    """Newest first; ``tr`` keeps findings whose change..last seen span overlaps it."""
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
