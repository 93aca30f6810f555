"""The label index of ``series``: which series carry which label value, kept as tables beside it.

Matching a selector against the ``labels`` MAP column means decoding every series' map (20 ms
and more with 100,000 series), and the label endpoints did the same. Two tables answer instead:

- ``series_labels(tenant, name, value, series_id)``: one row per stored label of each series
  (its postings), so ``name="value"`` is a filter on three dictionary-compressed string columns
  that hands back series ids;
- ``series_label_values(tenant, name, value)``: each distinct label value once, which lists the
  label names and values of a tenant without touching a series, and where regexes run (once
  per distinct value, not once per series: 20,000 instances, not 100,000 series).

Both are plain tables written in the writer's transaction that inserts the series
(:func:`insert_series`), and trimmed by retention's (:data:`EXPIRE`): no index, key or
``ON CONFLICT`` (a DuckLake catalog shared by several nodes has none), and no process memory
that another node's writes would miss. Migration 0004 built them from the series stored before.

Pyroscope's internal labels (``__name__``, ``__profile_type__``…) are columns of ``series``
(:data:`PSEUDO_LABELS`) and are matched there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from service.types import ProfileType, TimeRange

__all__ = [
    "EXPIRE",
    "PSEUDO_LABELS",
    "LabelMatcher",
    "insert_series",
    "label_names",
    "label_values",
    "series_where",
    "store_series",
]

# Labels that Pyroscope derives from a series' profile type, which its selectors may name: each
# is a column of ``series``. They take precedence over a stored label of the same name.
PSEUDO_LABELS = {
    "__name__": "name",
    "__profile_type__": "profile_type",
    "__type__": "sample_type",
    "__unit__": "sample_unit",
    "__period_type__": "period_type",
    "__period_unit__": "period_unit",
}

LabelMatcher = tuple[str, str, str]  # label name, operator (=, !=, =~, !~), value or pattern

_OPS = ("=", "!=", "=~", "!~")


def insert_series(source: str) -> list[str]:
    """The statements that store the rows of relation ``source`` (``series`` columns) whose series
    is not stored yet, with their index rows; run them inside the caller's transaction.

    The new series are picked once (an anti-join that reads every stored ``series_id``) into a
    temporary table that the three inserts share.
    """
    unnested = "SELECT tenant, unnest(map_keys(labels)) AS name, unnest(map_values(labels)) AS value"
    return [
        f"CREATE OR REPLACE TEMP TABLE _new_series AS SELECT * FROM {source} "
        "WHERE series_id NOT IN (SELECT series_id FROM series) QUALIFY row_number() OVER (PARTITION BY series_id) = 1",
        "INSERT INTO series SELECT * FROM _new_series",
        f"INSERT INTO series_labels {unnested}, series_id FROM _new_series",
        f"INSERT INTO series_label_values SELECT DISTINCT n.tenant, n.name, n.value FROM ({unnested} FROM _new_series) n "
        "ANTI JOIN series_label_values v ON v.tenant = n.tenant AND v.name = n.name AND v.value = n.value",
        "DROP TABLE _new_series",
    ]


def store_series(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    """Store ``table`` (rows of ``series``) and its index rows in one transaction, as the writer does:
    for tools and tests that write series without profiles."""
    con.register("_given_series", table)
    try:
        con.execute("BEGIN TRANSACTION;\n" + ";\n".join(insert_series("_given_series")) + ";\nCOMMIT;")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended the transaction itself
            con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_given_series")


# After retention deleted series: their postings, then the values no posting has any more.
EXPIRE = (
    ("series_labels", "DELETE FROM series_labels WHERE series_id NOT IN (SELECT series_id FROM series)"),
    (
        "series_label_values",
        "DELETE FROM series_label_values v WHERE NOT EXISTS (SELECT 1 FROM series_labels l "
        "WHERE l.tenant = v.tenant AND l.name = v.name AND l.value = v.value)",
    ),
)


def _empty_matches(cur: duckdb.DuckDBPyConnection, selectors: Sequence[Sequence[LabelMatcher]]) -> list[bool]:
    """Whether each regex matcher (in order) matches "" — asked of DuckDB's RE2, the engine the
    patterns run in, in one query for all of them."""
    patterns = [
        value for sel in selectors for (name, op, value) in sel if op in ("=~", "!~") and name not in PSEUDO_LABELS
    ]
    if not patterns:
        return []
    row = cur.execute("SELECT list_transform($p, x -> regexp_full_match('', x))", {"p": patterns}).fetchone()
    assert row is not None
    return [bool(b) for b in row[0]]


def _matcher_sql(name: str, op: str, k: str, v: str, empty: bool | None) -> str:
    """One stored-label matcher as a condition on ``series_id``.

    A missing label reads as "" (Prometheus's rule: ``x=""`` matches series without ``x``). A
    matcher that rejects "" holds for the series with a posting it accepts; one that accepts ""
    holds for every series but those with a posting it rejects — a series has one posting per
    label name, so both are exact. Regexes are fully anchored RE2 over the distinct values.
    """
    values = "SELECT value FROM series_label_values WHERE tenant = $tenant AND name = ${k} AND {neg}regexp_full_match(value, ${v})"
    holds = {
        "=": f"value = ${v}",
        "!=": f"value <> ${v}",
        "=~": f"value IN ({values.format(k=k, v=v, neg='')})",
        "!~": f"value IN ({values.format(k=k, v=v, neg='NOT ')})",
    }
    fails = {"=": holds["!="], "!=": holds["="], "=~": holds["!~"], "!~": holds["=~"]}
    postings = f"SELECT series_id FROM series_labels WHERE tenant = $tenant AND name = ${k} AND "
    if empty:
        return f"series_id NOT IN ({postings}{fails[op]})"
    return f"series_id IN ({postings}{holds[op]})"


def _selector_sql(
    cur: duckdb.DuckDBPyConnection, selectors: Sequence[Sequence[LabelMatcher]], params: dict[str, object]
) -> str:
    """SQL of "matches any of ``selectors``, each a conjunction", with values as bound parameters."""
    empties = iter(_empty_matches(cur, selectors))
    ors = []
    for i, sel in enumerate(selectors):
        ands = []
        for j, (name, op, value) in enumerate(sel):
            if op not in _OPS:
                raise ValueError(f"unknown label matcher operator {op!r} for label {name!r}; valid: {', '.join(_OPS)}")
            k, v = f"k{i}_{j}", f"v{i}_{j}"
            params[v] = value
            column = PSEUDO_LABELS.get(name)
            if column is not None:
                test = {"=": f"{column} = ${v}", "!=": f"{column} <> ${v}", "=~": f"regexp_full_match({column}, ${v})"}
                ands.append(test.get(op) or f"NOT regexp_full_match({column}, ${v})")
                continue
            params[k] = name
            empty = {"=": value == "", "!=": value != ""}.get(op)
            if empty is None:
                hit = next(empties)
                empty = hit if op == "=~" else not hit
            ands.append(_matcher_sql(name, op, k, v, empty))
        ors.append(" AND ".join(ands) or "TRUE")
    return "(" + " OR ".join(f"({o})" for o in ors) + ")" if ors else "TRUE"


def _any(selectors: Sequence[Sequence[LabelMatcher]]) -> bool:
    """Whether ``selectors`` select every series (none given, or one that is empty)."""
    return not selectors or any(not sel for sel in selectors)


def series_where(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None,
    selectors: Sequence[Sequence[LabelMatcher]],
    tr: TimeRange | None,
    params: dict[str, object],
) -> str:
    """The ``WHERE`` condition over ``series`` of "of ``tenant``, of the type (any when None), matching
    any of ``selectors`` and seen in ``tr`` (any time when None)"; fills ``params``."""
    params["tenant"] = tenant
    where = ["tenant = $tenant"]
    if not _any(selectors):
        where.append(_selector_sql(cur, selectors, params))
    if profile_type is not None:
        where.append("profile_type = $pt")
        params["pt"] = str(profile_type)
    if tr is not None:
        where.append("last_seen >= $seen_from AND first_seen <= $seen_until")
        params["seen_from"], params["seen_until"] = tr.start, tr.end
    return " AND ".join(where)


def _every(profile_type: ProfileType | None, selectors: Sequence[Sequence[LabelMatcher]], tr: TimeRange | None) -> bool:
    return profile_type is None and tr is None and _any(selectors)


def label_names(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None = None,
    selectors: Sequence[Sequence[LabelMatcher]] = (),
    tr: TimeRange | None = None,
) -> list[str]:
    """Sorted names of the stored labels of the series :func:`series_where` selects; of all the
    tenant's series, read from the distinct values alone."""
    params: dict[str, object] = {"tenant": tenant}
    if _every(profile_type, selectors, tr):
        sql = "SELECT DISTINCT name FROM series_label_values WHERE tenant = $tenant ORDER BY name"
    else:
        where = series_where(cur, tenant, profile_type, selectors, tr, params)
        sql = (
            "SELECT DISTINCT name FROM series_labels WHERE tenant = $tenant "
            f"AND series_id IN (SELECT series_id FROM series WHERE {where}) ORDER BY name"
        )
    return [r[0] for r in cur.execute(sql, params).fetchall()]


def label_values(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    name: str,
    profile_type: ProfileType | None = None,
    selectors: Sequence[Sequence[LabelMatcher]] = (),
    tr: TimeRange | None = None,
) -> list[str]:
    """Sorted values of the stored label ``name`` among the series :func:`series_where` selects."""
    params: dict[str, object] = {"tenant": tenant, "label": name}
    if _every(profile_type, selectors, tr):
        sql = "SELECT value FROM series_label_values WHERE tenant = $tenant AND name = $label ORDER BY value"
    else:
        where = series_where(cur, tenant, profile_type, selectors, tr, params)
        sql = (
            "SELECT DISTINCT value FROM series_labels WHERE tenant = $tenant AND name = $label "
            f"AND series_id IN (SELECT series_id FROM series WHERE {where}) ORDER BY value"
        )
    return [r[0] for r in cur.execute(sql, params).fetchall()]
