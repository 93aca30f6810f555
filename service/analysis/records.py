"""How a run's findings update the stored ones: a finding seen again keeps its row, its state and when it
started; a new one gets a row of its own.

The rows themselves (``regressions``) are the store's (``service/store/findings.py``); this is the
rule that turns a run's :class:`Finding` into a :class:`Record`. It runs in the writer thread
(through ``Sources.write_findings``), so reading the open rows and replacing them is one step that
no acknowledgement can slip between. A finding that is no longer found and whose value is back nearer
its baseline than its risen level is resolved (``analyze.returned``); acknowledging keeps a finding
listed but marks that someone looked; it still resolves by itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from service.analysis.findings import Finding
from service.query.source import FindingWriter
from service.store.findings import Record

__all__ = ["Record", "save"]


def _finite(x: float) -> float:
    """JSON and the API carry no infinities: a rise from zero is reported as a relative change of 1e9."""
    return max(min(x, 1e9), -1e9) if x == x else 0.0


def save(rows: FindingWriter, findings: Sequence[Finding], now: int) -> list[tuple[Record, bool]]:
    """Insert new findings, update the open rows of findings seen again; each record and whether it is new."""
    if not findings:
        return []
    current = {r.finding_key: r for r in rows.unresolved(keys=sorted({f.key for f in findings}))}
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
    rows.put([r for r, _ in out])
    return out
