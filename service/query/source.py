"""What the query layer reads, declared here and implemented by a storage backend.

Everything above the store (query, analysis, export, the REST and Connect handlers) reads stored
data only through a :class:`ProfileSource`, opened per request by :class:`Sources`. Methods take
and return plain data (series rows, Arrow tables, numpy arrays, our dataclasses), never SQL or a
database cursor, so a second backend (several nodes, another engine) implements these methods and
nothing above it changes. Decisions stay above the line: which rollup answers which part of a
range is the query layer's plan (:mod:`service.query.plan`), handed to the backend as ``parts``;
how a run's findings update the stored ones is analysis'. The DuckDB backend is
``service.store.source``; it does not import this module (structural typing), and
``tests/query/test_source.py`` checks that it has every method here, with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy.typing as npt
import pyarrow as pa

from service.store.export_rows import ExportRows
from service.store.findings import Record
from service.store.reads import LabelMatcher, SeriesRow
from service.store.stack_reads import Part, StackRows
from service.types import ProfileType, TimeRange

__all__ = ["FindingWriter", "Part", "ProfileSource", "Sources"]

T = TypeVar("T")


class ProfileSource(Protocol):
    """Reads of one consistent view of the store (one request, one cursor), under its time limit."""

    # Series and labels. ``selectors``: series match any of them, each a conjunction of matchers.
    def list_series(self, tenant: str, profile_type: ProfileType | None = None) -> list[SeriesRow]: ...

    def find_series(
        self,
        tenant: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[SeriesRow]: ...

    def stored_types(self, tenant: str, tr: TimeRange | None = None) -> set[ProfileType]: ...

    def label_names(
        self,
        tenant: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[str]: ...

    def label_values(
        self,
        tenant: str,
        name: str,
        profile_type: ProfileType | None = None,
        selectors: Sequence[Sequence[LabelMatcher]] = (),
        tr: TimeRange | None = None,
    ) -> list[str]: ...

    def tenants(self) -> list[str]: ...

    def data_span(self, tenant: str) -> tuple[int | None, int | None]: ...

    # Profiles.
    def profile_spans(self, series_ids: list[int], tr: TimeRange) -> list[tuple[int, int, int, int]]: ...

    def profiles_around(self, series_ids: list[int], tr: TimeRange) -> tuple[int, int | None, int | None]: ...

    def list_profiles(
        self,
        series_ids: list[int],
        tr: TimeRange,
        limit: int,
        *,
        newest_first: bool = True,
        after: tuple[int, int, int] | None = None,
    ) -> list[tuple[Any, ...]]: ...

    # Stacks: rollup state for planning, merges of a plan's parts, the rows that name frames.
    def rollup_done(self) -> dict[int, int]: ...

    def rollups_dirty(self, series_ids: list[int], parts: Sequence[Part]) -> bool: ...

    def merged_stacks(
        self, series_ids: list[int], tr: TimeRange, aggregation: str, parts: Sequence[Part]
    ) -> pa.Table: ...

    def span_stacks(self, series_ids: list[int], tr: TimeRange, spans: list[str]) -> pa.Table: ...

    def stack_rows(self, stack_ids: pa.Array | pa.ChunkedArray) -> StackRows: ...

    # Values over time, and function names.
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
    ) -> list[tuple[int, int, float]]: ...

    def function_exists(self, name: str) -> bool: ...

    def function_names(self, series_ids: list[int], tr: TimeRange) -> list[str]: ...

    # Export.
    def export_rows(
        self,
        series_ids: list[int],
        tr: TimeRange,
        *,
        latest_only: bool = False,
        averaged: frozenset[str] | None = frozenset(),
    ) -> ExportRows: ...

    # Detection: per-function numbers per profile.
    def profile_totals(self, series_ids: list[int], span: TimeRange) -> dict[str, npt.NDArray[Any]]: ...

    def heavy_functions(self, series_ids: list[int], tr: TimeRange, min_share: float) -> list[str]: ...

    def function_values(
        self, series_ids: list[int], span: TimeRange, names: Sequence[str]
    ) -> dict[str, npt.NDArray[Any]]: ...

    def call_edges(self, series_ids: list[int], tr: TimeRange, names: Sequence[str]) -> list[tuple[str, str]]: ...

    def caller_paths(
        self, series_ids: list[int], tr: TimeRange, name: str
    ) -> list[tuple[int, int, tuple[str, ...], float]]: ...

    # Findings.
    def unresolved_findings(self, tenant: str) -> list[Record]: ...

    def finding(self, tenant: str, rid: int) -> Record | None: ...

    def list_findings(
        self,
        tenant: str,
        *,
        service: str | None = None,
        kind: str | None = None,
        state: str | None = None,
        tr: TimeRange | None = None,
        limit: int = 1000,
    ) -> list[Record]: ...

    # Liveness.
    def ping(self) -> None: ...


class FindingWriter(Protocol):
    """The findings table as the writer sees it: reads and writes in one serialized step."""

    def unresolved(self, tenant: str | None = None, keys: Sequence[int] | None = None) -> list[Record]: ...

    def put(self, records: Sequence[Record]) -> None: ...

    def resolve(self, ids: Sequence[int], now: int) -> int: ...

    def ack(self, tenant: str, rid: int, now: int) -> Record | None: ...


class Sources(Protocol):
    """Opens a :class:`ProfileSource` per request, and runs findings writes where writes run."""

    def read(self, timeout_s: float | None = None) -> AbstractContextManager[ProfileSource]: ...

    def write_findings(self, run: Callable[[FindingWriter], T]) -> T: ...
