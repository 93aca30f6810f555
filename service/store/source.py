"""The DuckDB backend of the query layer's reads: every read above the store runs through here.

:class:`DuckDBSource` answers the reads of one request on one cursor (what the query layer
declares as ``ProfileSource`` in ``service/query/source.py``; this module does not import it:
the match is structural and checked by ``tests/query/test_source.py``). :class:`DuckDBSources`
opens one per request on the :class:`Database`, under its time limit, and runs findings writes
in the writer thread. The SQL lives in the modules named after what they read.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

import duckdb

from service.store import export_rows, findings, function_reads, reads, stack_reads, step_reads
from service.store.db import Database
from service.store.findings import FindingRows, Record

__all__ = ["DuckDBSource", "DuckDBSources"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _on_cursor(
    read: Callable[Concatenate[duckdb.DuckDBPyConnection, P], R],
) -> Callable[Concatenate[DuckDBSource, P], R]:
    """``read`` as a method of :class:`DuckDBSource`, run on the source's cursor.

    The store's read functions take the cursor first and otherwise have the Protocol's signature,
    so a method is the function bound to the cursor and is not written again: mypy sees the
    method's parameters as ``read``'s (and checks them against ``ProfileSource`` where ``app.py``
    annotates the backend), and so does ``inspect`` (``tests/query/test_source.py``).
    """

    def method(self: DuckDBSource, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return read(self._cur, *args, **kwargs)

    functools.update_wrapper(method, read)
    sig = inspect.signature(read)
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[own, *list(sig.parameters.values())[1:]])  # type: ignore[attr-defined]
    return method


class DuckDBSource:
    """The reads of one request, on one DuckDB cursor (which its opener closes)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur

    list_series = _on_cursor(reads.list_series)
    find_series = _on_cursor(reads.find_series)
    stored_types = _on_cursor(reads.stored_types)
    label_names = _on_cursor(reads.label_names)
    label_values = _on_cursor(reads.label_values)
    tenants = _on_cursor(function_reads.tenants)
    data_span = _on_cursor(reads.data_span)
    profile_spans = _on_cursor(reads.profile_spans)
    profiles_around = _on_cursor(reads.profiles_around)
    list_profiles = _on_cursor(reads.list_profiles)
    rollup_done = _on_cursor(stack_reads.rollup_done)
    rollups_dirty = _on_cursor(stack_reads.rollups_dirty)
    merged_stacks = _on_cursor(stack_reads.merged_stacks)
    span_stacks = _on_cursor(reads.span_stacks)
    stack_rows = _on_cursor(stack_reads.stack_rows)
    step_values = _on_cursor(step_reads.step_values)
    function_exists = _on_cursor(reads.function_exists)
    function_names = _on_cursor(reads.function_names)
    export_rows = _on_cursor(export_rows.export_rows)
    profile_totals = _on_cursor(function_reads.profile_totals)
    heavy_functions = _on_cursor(function_reads.heavy_functions)
    function_values = _on_cursor(function_reads.function_values)
    call_edges = _on_cursor(function_reads.call_edges)
    caller_paths = _on_cursor(function_reads.caller_paths)
    ping = _on_cursor(reads.ping)
    list_findings = _on_cursor(findings.list_findings)

    # The two findings reads the writer makes too, through FindingRows (its FindingWriter).
    def unresolved_findings(self, tenant: str) -> list[Record]:
        return FindingRows(self._cur).unresolved(tenant)

    def finding(self, tenant: str, rid: int) -> Record | None:
        return FindingRows(self._cur).get(tenant, rid)


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
