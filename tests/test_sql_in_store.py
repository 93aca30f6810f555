"""SQL runs only in ``service/store/``: everything above it reads through the query layer's
``ProfileSource`` (``service/query/source.py``), so a second storage backend replaces one package.

A line of ``service/`` outside ``service/store/`` that calls ``execute(`` or ``.sql(`` (DuckDB's two
ways to run SQL) fails here with its place. Migrations live outside ``service/``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SQL_CALL = re.compile(r"execute\(|\.sql\(")


def sql_outside_store(root: Path) -> list[str]:
    """``path:line: text`` of every SQL call under ``root/service`` but outside ``root/service/store``."""
    store = root / "service" / "store"
    found = []
    for path in sorted((root / "service").rglob("*.py")):
        if store in path.parents:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _SQL_CALL.search(line):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_sql_runs_only_in_the_store() -> None:
    found = sql_outside_store(ROOT)
    assert not found, "SQL outside service/store/ (add a read to the store and the ProfileSource):\n" + "\n".join(found)
    assert any((ROOT / "service" / "store").rglob("*.py"))  # the scan looked where the code is


def test_the_scan_finds_sql_above_the_store_and_lets_the_store_run_it(tmp_path: Path) -> None:
    for rel, text in {
        "service/store/reads.py": 'cur.execute("SELECT 1")\n',
        "service/query/plan.py": 'done = cur.execute("SELECT 1")\n',
        "service/api/ops.py": 'rel = con.sql("SELECT 1")\n',
        "service/analysis/panel.py": "x = 1  # no SQL here\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert sql_outside_store(tmp_path) == [
        'service/api/ops.py:1: rel = con.sql("SELECT 1")',
        'service/query/plan.py:1: done = cur.execute("SELECT 1")',
    ]
