"""The DuckDB backend of the query layer's reads: every read above the store runs through here.

:class:`DuckDBSource` answers the reads of one request on one cursor (what the query layer
declares as ``ProfileSource`` in ``service/query/source.py``; this module does not import it:
the match is structural and checked by ``tests/query/test_source.py``). :class:`DuckDBSources`
opens one per request on the :class:`Database`, under its time limit, and runs findings writes
in the writer thread. The SQL lives in the modules named after what they read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import duckdb
import numpy.typing as npt
import pyarrow as pa

from service.store import function_reads, reads, stack_reads, step_reads
from service.store.db import Database
from service.store.export_rows import ExportRows, export_rows
from service.store.findings import FindingRows, Record
from service.store.reads import LabelMatcher, SeriesRow
from service.store.stack_reads import Part, StackRows
from service.types import ProfileType, TimeRange

__all__ = ["DuckDBSource", "DuckDBSources"]

T = TypeVar("T")


class DuckDBSource:
    """The reads of one request, on one DuckDB cursor (which its opener closes)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur

    def list_series(self, tenant: str, profile_type: ProfileType | None = None) -> list[SeriesRow]:
        return reads.list_series(self._cur, tenant, profile_type)

    def find_series(
        self,
        tenant: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[SeriesRow]:
        return reads.find_series(self._cur, tenant, profile_type, selectors, tr)

    def stored_types(self, tenant: str, tr: TimeRange | None = None) -> set[ProfileType]:
        return reads.stored_types(self._cur, tenant, tr)

    def label_names(
        self,
        tenant: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[str]:
        return reads.label_names(self._cur, tenant, profile_type, selectors, tr)

    def label_values(
        self,
        tenant: str,
        name: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[str]:
        return reads.label_values(self._cur, tenant, name, profile_type, selectors, tr)

    def tenants(self) -> list[str]:
        return function_reads.tenants(self._cur)

    def data_span(self, tenant: str) -> tuple[int | None, int | None]:
        return reads.data_span(self._cur, tenant)

    def profile_spans(self, series_ids: list[int], tr: TimeRange) -> list[tuple[int, int, int, int]]:
        return reads.profile_spans(self._cur, series_ids, tr)

    def profiles_around(self, series_ids: list[int], tr: TimeRange) -> tuple[int, int | None, int | None]:
        return reads.profiles_around(self._cur, series_ids, tr)

    def list_profiles(
        self,
        series_ids: list[int],
        tr: TimeRange,
        limit: int,
        *,
        newest_first: bool = True,
        after: tuple[int, int, int] | None = None,
    ) -> list[tuple[Any, ...]]:
        return reads.list_profiles(self._cur, series_ids, tr, limit, newest_first=newest_first, after=after)

    def rollup_done(self) -> dict[int, int]:
        return stack_reads.rollup_done(self._cur)

    def rollups_dirty(self, series_ids: list[int], parts: Sequence[Part]) -> bool:
        return stack_reads.rollups_dirty(self._cur, series_ids, parts)

    def merged_stacks(self, series_ids: list[int], tr: TimeRange, aggregation: str, parts: Sequence[Part]) -> pa.Table:
        return stack_reads.merged_stacks(self._cur, series_ids, tr, aggregation, parts)

    def span_stacks(self, series_ids: list[int], tr: TimeRange, spans: list[str]) -> pa.Table:
        return reads.span_stacks(self._cur, series_ids, tr, spans)

    def stack_rows(self, stack_ids: pa.Array | pa.ChunkedArray) -> StackRows:
        return stack_reads.stack_rows(self._cur, stack_ids)

    def step_values(
        self,
        series_ids: list[int],
        start: int,
        end: int,
        step: int,
        aggregation: str,
        *,
        function: str | None = None,
        value: str = "flat",
    ) -> list[tuple[int, int, float]]:
        return step_reads.step_values(
            self._cur, series_ids, start, end, step, aggregation, function=function, value=value
        )

    def function_exists(self, name: str) -> bool:
        return reads.function_exists(self._cur, name)

    def function_names(self, series_ids: list[int], tr: TimeRange) -> list[str]:
        return reads.function_names(self._cur, series_ids, tr)

    def export_rows(
        self,
        series_ids: list[int],
        tr: TimeRange,
        *,
        latest_only: bool = False,
        averaged: frozenset[str] | None = frozenset(),
    ) -> ExportRows:
        return export_rows(self._cur, series_ids, tr, latest_only=latest_only, averaged=averaged)

    def profile_totals(self, series_ids: list[int], span: TimeRange) -> dict[str, npt.NDArray[Any]]:
        return function_reads.profile_totals(self._cur, series_ids, span)

    def heavy_functions(self, series_ids: list[int], tr: TimeRange, min_share: float) -> list[str]:
        return function_reads.heavy_functions(self._cur, series_ids, tr, min_share)

    def function_values(
        self, series_ids: list[int], span: TimeRange, names: Sequence[str]
    ) -> dict[str, npt.NDArray[Any]]:
        return function_reads.function_values(self._cur, series_ids, span, names)

    def call_edges(self, series_ids: list[int], tr: TimeRange, names: Sequence[str]) -> list[tuple[str, str]]:
        return function_reads.call_edges(self._cur, series_ids, tr, names)

    def unresolved_findings(self, tenant: str) -> list[Record]:
        return FindingRows(self._cur).unresolved(tenant)

    def finding(self, tenant: str, rid: int) -> Record | None:
        return FindingRows(self._cur).get(tenant, rid)

    def list_findings(
        self,
        tenant: str,
        *,
        service: str | None = None,
        kind: str | None = None,
        state: str | None = None,
        tr: TimeRange | None = None,
        limit: int = 1000,
    ) -> list[Record]:
        return FindingRows(self._cur).list(tenant, service=service, kind=kind, state=state, tr=tr, limit=limit)

    def ping(self) -> None:
        reads.ping(self._cur)


class DuckDBSources:
    """Opens a :class:`DuckDBSource` per request on ``db``; findings writes go to its writer thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def read(self, timeout_s: float | None = None) -> Iterator[DuckDBSource]:
        """A source on a fresh cursor, stopped (``QueryTimeout``) past ``timeout_s`` (the database's limit when None)."""
        with self.db.read(timeout_s) as cur:
            yield DuckDBSource(cur)

    def write_findings(self, run: Callable[[FindingRows], T]) -> T:
        """``run`` on the findings table in the writer thread, after what was submitted before; its result."""
        return self.db.writer.call(lambda con: run(FindingRows(con))).result()  # type: ignore[return-value]
