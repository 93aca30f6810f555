"""Runs detection end to end: analyze, store, resolve, notify. The schedule and the API both call it.

Reading and testing run on a cursor in the caller's thread (a run never holds up ingestion);
storing goes through the writer thread like every write. Runs are serialized by a lock, so a
scheduled run and an on-demand one never store the same finding twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.analysis.analyze import KINDS, Windows, analyze, returned
from service.analysis.findings import Finding, Tuning
from service.analysis.records import Record, save
from service.analysis.webhook import Webhook
from service.config import AnalysisSettings
from service.query.source import FindingWriter, Sources
from service.types import TimeRange, now_ns

__all__ = ["Analyzer", "RunReport", "record_json"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunReport:
    recent: TimeRange
    baseline: TimeRange
    leak: TimeRange
    tests: int
    seconds: float
    records: list[Record] = field(default_factory=list)  # found in this run
    new: list[int] = field(default_factory=list)  # ids first seen in this run
    resolved: list[int] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # what this run tested: regression, leak


def _storing(
    findings: list[Finding], back: list[int], now: int
) -> Callable[[FindingWriter], list[tuple[Record, bool]]]:
    """The writer's part of a run: store the findings (new or seen again) and resolve the returned ones."""

    def store(rows: FindingWriter) -> list[tuple[Record, bool]]:
        saved = save(rows, findings, now)
        rows.resolve(back, now)
        return saved

    return store


def record_json(r: Record) -> dict[str, Any]:
    """A finding as the webhook posts it: ids as decimal strings, so JavaScript keeps every digit."""
    out = {k: getattr(r, k) for k in Record.__slots__}
    out["id"] = str(r.id)
    out["finding_key"] = str(r.finding_key)
    out["series_ids"] = [str(i) for i in r.series_ids]
    out["title"] = r.title
    return out


class Analyzer:
    def __init__(self, sources: Sources, settings: AnalysisSettings) -> None:
        self.sources = sources
        self.settings = settings
        self.tuning = Tuning.of(settings)
        self._lock = threading.Lock()
        self.last: RunReport | None = None  # the latest run's report (scheduled or on demand)
        self.webhook = (
            Webhook(settings.webhook_url, attempts=settings.webhook_attempts, timeout_s=settings.webhook_timeout_s)
            if settings.webhook_url
            else None
        )

    def windows(self, until: int | None = None) -> Windows:
        s = self.settings
        return Windows.ending(
            until if until is not None else now_ns(),
            int(s.recent_s * 1e9),
            int(s.baseline_s * 1e9),
            int(s.baseline_offset_s * 1e9),
            int(s.leak_window_s * 1e9),
            int(s.recent_long_s * 1e9),
            int(s.recent_short_s * 1e9),
        )

    def run(self, w: Windows | None = None, kinds: frozenset[str] = KINDS, tenant: str | None = None) -> RunReport:
        """One run over ``tenant``, or over every tenant with data, each on its own (tests, false
        discovery rate, findings); ``kinds`` narrows it (the frequent leak-only runs of the schedule)."""
        w = w or self.windows()
        t0 = time.monotonic()
        report = RunReport(w.recent, w.baseline, w.leak, 0, 0.0, kinds=sorted(kinds))
        with self._lock:
            with self.sources.read(timeout_s=self.settings.timeout_s) as src:
                tenants = [tenant] if tenant is not None else src.tenants()
            saved: list[tuple[Record, bool]] = []
            for one in tenants:
                with self.sources.read(timeout_s=self.settings.timeout_s) as src:
                    result = analyze(src, one, w, self.tuning, kinds)
                    tested = [r for r in src.unresolved_findings(one) if r.kind in kinds]
                    back = returned(tested, result, w, self.tuning)
                saved += self.sources.write_findings(_storing(result.findings, back, now_ns()))
                report.tests += result.tests
                report.resolved += back
                for reason, n in result.counts().items():
                    report.verdicts[reason] = report.verdicts.get(reason, 0) + n
        report.seconds = time.monotonic() - t0
        report.records = [r for r, _ in saved]
        report.new = [r.id for r, new in saved if new]
        self.last = report
        for r, new in saved:
            if new:
                log.warning("new %s: %s (p_adj=%.2g)", r.kind, r.title, r.p_adjusted)
                if self.webhook is not None:
                    self.webhook.send(record_json(r))
        return report

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
