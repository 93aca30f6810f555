"""The label index of ``series``: which series carry which label value, kept as tables beside it.

Matching a selector against the ``labels`` MAP column means decoding every series' map (20 ms
and more with 100,000 series), and the label endpoints did the same. Two tables answer instead:

- ``series_label_values(tenant, name, value, value_id)``: each distinct label value once, with
  an id (a hash, computed once when the value is first stored and read back from here ever
  after). Matchers run over this small table — a regex once per distinct value, not once per
  series — and it lists a tenant's label names and values without touching a series;
- ``series_labels(value_id, series_id)``: the postings, one row per stored label of a series.
  Two integer columns: finding the series of a set of values is a semi-join that scans 16 bytes
  a row, however the rows happen to be ordered (strings would need sorted row groups to skip).

Both are plain tables written in the writer's transaction that inserts the series
(:func:`insert_series`), and trimmed by retention's (:data:`EXPIRE`): no index, key or
``ON CONFLICT`` (a DuckLake catalog shared by several nodes has none), and no process memory
that another node's writes would miss. Migration 0004 built them from the series stored before.

The labels of the series found come from :class:`LabelCache` when it has them: a series id is a
hash of its labels, so what the cache holds never goes stale, whichever node wrote it.

Pyroscope's internal labels (``__name__``, ``__profile_type__``…) are columns of ``series``
(:data:`PSEUDO_LABELS`) and are matched there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from service.store.transaction import registered, transaction
from service.types import ProfileType, TimeRange

__all__ = [
    "EXPIRE",
    "LABELS",
    "PSEUDO_LABELS",
    "LabelCache",
    "LabelMatcher",
    "find_series",
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
    temporary table the inserts share. A new value gets its id here; postings take the id stored
    with the value, so a hash function that changed with a DuckDB upgrade could never split a
    value's postings.
    """
    return [
        f"CREATE OR REPLACE TEMP TABLE _new_series AS SELECT * FROM {source} "
        "WHERE series_id NOT IN (SELECT series_id FROM series) QUALIFY row_number() OVER (PARTITION BY series_id) = 1",
        "INSERT INTO series SELECT * FROM _new_series",
        "CREATE OR REPLACE TEMP TABLE _new_labels AS SELECT tenant, unnest(map_keys(labels)) AS name, "
        "unnest(map_values(labels)) AS value, series_id FROM _new_series",
        "INSERT INTO series_label_values SELECT tenant, name, value, hash(tenant, name, value) FROM "
        "(SELECT DISTINCT n.tenant, n.name, n.value FROM _new_labels n ANTI JOIN series_label_values v "
        "ON v.tenant = n.tenant AND v.name = n.name AND v.value = n.value)",
        "INSERT INTO series_labels SELECT v.value_id, n.series_id FROM _new_labels n JOIN series_label_values v "
        "ON v.tenant = n.tenant AND v.name = n.name AND v.value = n.value ORDER BY ALL",
        "DROP TABLE _new_labels",
        "DROP TABLE _new_series",
    ]


def store_series(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    """Store ``table`` (rows of ``series``) and its index rows in one transaction, as the writer does:
    for tools and tests that write series without profiles."""
    with registered(con, "_given_series", table), transaction(con):
        con.execute(";\n".join(insert_series("_given_series")))


# After retention deleted series: their postings, then the values no posting has any more.
EXPIRE = (
    ("series_labels", "DELETE FROM series_labels WHERE series_id NOT IN (SELECT series_id FROM series)"),
    (
        "series_label_values",
        "DELETE FROM series_label_values WHERE value_id NOT IN (SELECT value_id FROM series_labels)",
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


def _matcher_sql(op: str, k: str, v: str, empty: bool) -> str:
    """One stored-label matcher as a condition on ``series_id``.

    A missing label reads as "" (Prometheus's rule: ``x=""`` matches series without ``x``). A
    matcher that rejects "" holds for the series with a posting of a value it accepts; one that
    accepts "" holds for every series but those with a posting of a value it rejects — a series
    has one posting per label name, so both are exact. Regexes are fully anchored RE2.
    """
    tests = {
        "=": f"value = ${v}",
        "!=": f"value <> ${v}",
        "=~": f"regexp_full_match(value, ${v})",
        "!~": f"NOT regexp_full_match(value, ${v})",
    }
    opposite = {"=": "!=", "!=": "=", "=~": "!~", "!~": "=~"}
    values = f"SELECT value_id FROM series_label_values WHERE tenant = $tenant AND name = ${k} AND "
    if empty:
        return (
            f"series_id NOT IN (SELECT series_id FROM series_labels WHERE value_id IN ({values}{tests[opposite[op]]}))"
        )
    return f"series_id IN (SELECT series_id FROM series_labels WHERE value_id IN ({values}{tests[op]}))"


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
            ands.append(_matcher_sql(op, k, v, empty))
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
    """The ``WHERE`` condition over ``series_seen`` of "of ``tenant``, of the type (any when None), matching
    any of ``selectors`` and seen in ``tr`` (any time when None)"; fills ``params``.

    Over ``series_seen``, not ``series``: on a lake shared by several nodes, ``series`` lags behind
    the profiles committed since the last fold and may hold a series twice (migration 0005); on a
    DuckDB file the view is the table.
    """
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


def _series_of(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None,
    selectors: Sequence[Sequence[LabelMatcher]],
    tr: TimeRange | None,
    params: dict[str, object],
) -> str:
    """A condition on ``series_id`` of the postings: the series :func:`series_where` selects.

    Without a type, a time range or an internal label, the postings alone decide and ``series``
    is not read: a series without postings has no label to list, whether it matches or not.
    """
    params["tenant"] = tenant
    if (
        profile_type is None
        and tr is None
        and not any(name in PSEUDO_LABELS for sel in selectors for name, _, _ in sel)
    ):
        return _selector_sql(cur, selectors, params)
    return f"series_id IN (SELECT series_id FROM series_seen WHERE {series_where(cur, tenant, profile_type, selectors, tr, params)})"


def label_names(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None = None,
    selectors: Sequence[Sequence[LabelMatcher]] = (),
    tr: TimeRange | None = None,
) -> list[str]:
    """Sorted names of the stored labels of the series :func:`find_series` would return (not the
    internal ones); of all the tenant's series, read from the distinct values alone."""
    params: dict[str, object] = {"tenant": tenant}
    if _any(selectors) and profile_type is None and tr is None:
        sql = "SELECT DISTINCT name FROM series_label_values WHERE tenant = $tenant ORDER BY name"
    else:
        of = _series_of(cur, tenant, profile_type, selectors, tr, params)
        sql = (
            "SELECT DISTINCT name FROM series_label_values WHERE tenant = $tenant "
            f"AND value_id IN (SELECT value_id FROM series_labels WHERE {of}) ORDER BY name"
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
    """Sorted values of the stored label ``name`` among the series :func:`find_series` would return."""
    params: dict[str, object] = {"tenant": tenant, "label": name}
    # DISTINCT: two nodes that store the same new value at once each add its row.
    sql = "SELECT DISTINCT value FROM series_label_values WHERE tenant = $tenant AND name = $label"
    if not (_any(selectors) and profile_type is None and tr is None):
        of = _series_of(cur, tenant, profile_type, selectors, tr, params)
        ids = "SELECT value_id FROM series_label_values WHERE tenant = $tenant AND name = $label"
        sql += f" AND value_id IN (SELECT value_id FROM series_labels WHERE {of} AND value_id IN ({ids}))"
    return [r[0] for r in cur.execute(sql + " ORDER BY value", params).fetchall()]


class LabelCache:
    """The labels of series by id, per database file: what :func:`find_series` answers with.

    Reading the ``labels`` maps of the few series a selector matched costs DuckDB about as much
    as reading all of them (it decodes the map column a vector of 2,048 rows at a time, and
    hash-distributed ids put the matches in every vector): 10-20 ms at 100,000 series. A series
    id is a hash of its tenant, type and labels, so the labels stored under an id never change;
    kept here after the first read, they are correct for every later one. Bounded: past
    ``limit`` series it starts over.
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self._limit = limit
        self._by_db: dict[str, dict[int, tuple[tuple[str, str], ...]]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._by_db = {}

    def labels(
        self, cur: duckdb.DuckDBPyConnection, db: str | None, ids: list[int]
    ) -> dict[int, tuple[tuple[str, str], ...]]:
        """The labels of the series ``ids``; those not known yet are read (:meth:`_read`) and kept.

        A series deleted by retention since ``ids`` were read has none (it is left out).
        """
        known = self._by_db.get(db, {}) if db is not None else {}
        found = {i: known[i] for i in ids if i in known}
        missing = [i for i in ids if i not in found]
        if missing:
            fresh = self._read(cur, missing)
            found.update(fresh)
            if db is not None:
                with self._lock:  # readers only look up, without it
                    if sum(len(m) for m in self._by_db.values()) + len(fresh) > self._limit:
                        self._by_db = {}
                    self._by_db.setdefault(db, {}).update(fresh)
        return found

    @staticmethod
    def _read(cur: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, tuple[tuple[str, str], ...]]:
        """The labels of ``ids`` rebuilt from the index: a scan of the 16-byte postings, four to six
        times faster than decoding the label maps. Series without a posting (no labels, or deleted
        since) are looked up in ``series`` (ordered by name, as the writer stores a map)."""
        pairs: dict[int, list[tuple[str, str]]] = {}
        cur.register("_wanted_series", pa.table({"series_id": pa.array(ids, pa.uint64())}))
        try:
            for sid, name, value in cur.execute(
                "SELECT l.series_id, v.name, v.value FROM series_labels l JOIN series_label_values v USING (value_id) "
                "WHERE l.series_id IN (SELECT series_id FROM _wanted_series)"
            ).fetchall():
                pairs.setdefault(int(sid), []).append((name, value))
            bare = [i for i in ids if i not in pairs]
            if bare:
                cur.unregister("_wanted_series")
                cur.register("_wanted_series", pa.table({"series_id": pa.array(bare, pa.uint64())}))
                for sid, labels in cur.execute(
                    "SELECT series_id, labels FROM series WHERE series_id IN (SELECT series_id FROM _wanted_series)"
                ).fetchall():
                    pairs[int(sid)] = list(labels.items())
        finally:
            cur.unregister("_wanted_series")
        return {sid: tuple(sorted(set(p))) for sid, p in pairs.items()}


LABELS = LabelCache()  # the process's one cache (bench resets it to time cold reads)

# The database file a cursor reads (None in memory), selected beside the rows: the cache's key.
DB_PATH = "(SELECT path FROM duckdb_databases() WHERE database_name = current_database())"


def find_series(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None,
    selectors: Sequence[Sequence[LabelMatcher]],
    tr: TimeRange | None,
) -> list[tuple[int, str, dict[str, str], int, int]]:
    """``series_id, profile_type, labels, first_seen, last_seen`` of the series :func:`series_where`
    selects, ordered by type and id: matched over the index, labels from the cache."""
    params: dict[str, object] = {}
    where = series_where(cur, tenant, profile_type, selectors, tr, params)
    rows = cur.execute(
        f"SELECT series_id, profile_type, first_seen, last_seen, {DB_PATH} FROM series_seen WHERE {where} "
        "ORDER BY profile_type, series_id",
        params,
    ).fetchall()
    if not rows:
        return []
    labels = LABELS.labels(cur, rows[0][4], [int(r[0]) for r in rows])
    return [(int(r[0]), r[1], dict(labels[int(r[0])]), r[2], r[3]) for r in rows if int(r[0]) in labels]
