"""The DuckDB backend implements the query layer's read Protocols, method for method.

The store does not import ``service.query`` (the layers forbid it), so nothing but this test and
mypy (``app.py`` annotates the backend with the Protocol type) ties the two together: a Protocol
method the backend lacks, or one whose parameters differ, fails here with its name.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from service.query.source import FindingWriter, ProfileSource, Sources
from service.store.findings import FindingRows
from service.store.source import DuckDBSource, DuckDBSources
from tests.backends import Backend

PAIRS = [(ProfileSource, DuckDBSource), (FindingWriter, FindingRows), (Sources, DuckDBSources)]


def _members(protocol: type) -> list[str]:
    """The methods a Protocol declares (its own, not ``object``'s or ``Protocol``'s)."""
    return sorted(n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_"))


def _shape(fn: Any, annotations: bool) -> list[tuple[str, Any, Any, Any]]:
    """Parameters as (name, kind, default, annotation text): what a caller of the Protocol relies on."""
    return [
        (p.name, p.kind, p.default, p.annotation if annotations else None)
        for p in inspect.signature(fn).parameters.values()
    ]


@pytest.mark.parametrize(("protocol", "impl"), PAIRS, ids=lambda x: x.__name__)
def test_the_duckdb_backend_has_every_protocol_method_with_its_signature(protocol: type, impl: type) -> None:
    members = _members(protocol)
    assert len(members) >= (20 if protocol is ProfileSource else 2)  # the Protocol's methods were found
    missing = [n for n in members if not callable(getattr(impl, n, None))]
    assert not missing, f"{impl.__name__} lacks {protocol.__name__} methods: {missing}"
    # Parameter and return annotations must read the same for the plain-data reads; the opener's
    # types name the backend's own classes (structurally the Protocols), so only their shape is compared.
    exact = protocol is ProfileSource
    differ = {
        n: (_shape(getattr(protocol, n), exact), _shape(getattr(impl, n), exact))
        for n in members
        if _shape(getattr(protocol, n), exact) != _shape(getattr(impl, n), exact)
        or (exact and inspect.signature(getattr(protocol, n)).return_annotation
            != inspect.signature(getattr(impl, n)).return_annotation)
    }  # fmt: skip
    assert not differ, f"{impl.__name__} signatures differ from {protocol.__name__}: {differ}"


def test_the_check_sees_a_missing_and_a_different_method() -> None:
    """A backend without a method, or with a parameter renamed, is told apart from a matching one."""

    class Partial:
        def ping(self) -> None: ...

        def tenants(self, tenant: str) -> list[str]: ...

    assert "list_series" in _members(ProfileSource)
    assert not callable(getattr(Partial, "list_series", None))
    assert _shape(Partial.tenants, True) != _shape(ProfileSource.tenants, True)
    assert _shape(DuckDBSource.tenants, True) == _shape(ProfileSource.tenants, True)


def test_a_duckdb_source_reads_an_empty_store(tmp_path: Path, backend: Backend) -> None:
    """Through the opener, as the handlers read: an empty store answers empty, not an error (a lake
    too: it is DuckDB with the lake attached, read by the same source)."""
    from service.store.db import Database
    from service.types import TimeRange

    with backend.store(tmp_path / "data") as storage:
        db = Database(tmp_path / "data", storage=storage)
        try:
            sources = DuckDBSources(db)
            with sources.read() as src:
                src.ping()
                assert src.tenants() == [] and src.list_series("t") == [] and src.stored_types("t") == set()
                assert src.data_span("t") == (None, None) and src.rollup_done() == {60: 0, 3600: 0}
                assert src.merged_stacks([], TimeRange(0, 10), "sum", [(0, 0, 11)]).num_rows == 0
                assert src.list_findings("t") == [] and src.unresolved_findings("t") == []
            assert sources.write_findings(lambda rows: rows.resolve([], 0)) == 0
        finally:
            db.close()
