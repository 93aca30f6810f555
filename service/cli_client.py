"""The CLI commands that talk to a running server over its REST API: ingest, export, top, diff, series, targets,
regressions, storage, backup.

Each failure becomes one :class:`Failed` line (``<what failed>: <status> <the API's error>``); ``cli.main`` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from service.cli_format import (
    format_labels,
    output_unit,
    percentage,
    rfc3339,
    rfc3339_ns,
    scaled_label,
    signed,
    table,
    wrap_indented,
)

__all__ = [
    "DEFAULT_URL",
    "Failed",
    "cmd_backup",
    "cmd_diff",
    "cmd_export",
    "cmd_ingest",
    "cmd_regressions",
    "cmd_series",
    "cmd_storage",
    "cmd_targets",
    "cmd_top",
    "server_url",
]

DEFAULT_URL = "http://127.0.0.1:4040"


class Failed(Exception):
    """A command failed for a reason already phrased for the user, on one line."""


def server_url(flag: str | None) -> str:
    """``--url`` beats ``$PROFSTORE_URL`` beats the default a local ``profstore serve`` listens on."""
    return flag or os.environ.get("PROFSTORE_URL") or DEFAULT_URL


def _client(args: argparse.Namespace) -> httpx.Client:
    """A client of a running server, with the token (``--token`` or ``PROFSTORE_TOKEN``) and tenant."""
    headers = {}
    token = args.token or os.environ.get("PROFSTORE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if args.tenant:
        headers["X-Scope-OrgID"] = args.tenant
    return httpx.Client(base_url=server_url(args.url), timeout=args.timeout, headers=headers)


def api_error(r: httpx.Response) -> str:
    """The API's ``error`` text (FastAPI's ``detail`` for routes it answers itself), else the body's start."""
    try:
        body = r.json()
        text = body.get("error") or body.get("detail") or r.text if isinstance(body, dict) else r.text
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = r.text[:300] or r.reason_phrase
    return " ".join(str(text).split())


def _call(
    args: argparse.Namespace,
    what: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    content: bytes | None = None,
) -> httpx.Response:
    """One request; a non-2xx answer becomes :class:`Failed` naming ``what`` failed, its status and the API's error."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    with _client(args) as client:
        r = client.request("GET" if content is None else "POST", path, params=query, content=content)
    if not r.is_success:
        raise Failed(f"{what}: {r.status_code} {api_error(r)}")
    return r


def _out(line: str = "") -> None:
    print(line)


def _note(line: str) -> None:
    print(f"profstore: {line}", file=sys.stderr)


# ---- ingest -------------------------------------------------------------------------------------------------------

_SUFFIXES = (".gz", ".pb", ".pprof", ".prof", ".proto", ".profile", ".bin", ".out")


def service_from_file(name: str) -> str:
    """The file name without its profile suffixes (``checkout.pb.gz`` → ``checkout``): the service_name a profile
    ingested without one gets, so service pickers (Grafana's, ``/api/v1/series``) show it."""
    stem = Path(name).name
    while True:
        lower = stem.lower()
        cut = next((s for s in _SUFFIXES if lower.endswith(s) and len(stem) > len(s)), None)
        if cut is None:
            return stem
        stem = stem[: -len(cut)]


def _with_service(labels: str, file: str) -> tuple[str, str | None]:
    """``labels`` with a service_name taken from ``file`` when it has none, and the name taken (None: unchanged)."""
    from service.query.selector import parse_labels

    parsed = parse_labels(labels)  # a malformed --labels says so here, before any file is sent
    if "service_name" in parsed or file == "-":
        return labels, None
    service = service_from_file(file)
    return format_labels({"service_name": service, **parsed}), service


def cmd_ingest(args: argparse.Namespace) -> int:
    failed = 0
    for f in args.files:
        labels, derived = _with_service(args.labels, f)
        try:
            body = sys.stdin.buffer.read() if f == "-" else Path(f).read_bytes()
        except OSError as exc:
            if getattr(args, "debug", False):
                raise
            failed += 1  # the other files are still sent: one bad name in a glob does not stop the rest
            _note(describe_os_error(exc, f))
            continue
        try:
            r = _call(args, f"ingest {f}", "/api/v1/ingest", {"labels": labels, "name": args.name}, content=body)
        except Failed as exc:
            failed += 1
            _note(str(exc))
            continue
        if derived is not None:
            _note(
                f'{f}: no service_name in --labels, stored as service_name="{derived}" '
                f"(set it with --labels '{{service_name=\"...\"}}')"
            )
        elif f == "-" and "service_name" not in labels:
            _note("-: no service_name in --labels: service pickers will not show this series")
        out = r.json()
        _out(
            f"{f}: {out['samples']} samples in {', '.join(out['series'])}"
            + (" (already stored)" if out["duplicate"] else "")
        )
    return 1 if failed else 0


def describe_os_error(exc: OSError, name: str | None = None) -> str:
    """``<file>: no such file`` and the like: the file first, as ``cp`` and ``go tool pprof`` say it."""
    where = name or exc.filename or ""
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(exc, PermissionError):
        reason = "permission denied"
    else:
        reason = (exc.strerror or str(exc)).lower()
    return f"{where}: {reason}" if where else reason


# ---- export -------------------------------------------------------------------------------------------------------


def _query_of(args: argparse.Namespace) -> str:
    """The query given as the positional argument or ``--query`` (export keeps the flag it always had)."""
    positional, flag = getattr(args, "query", None), getattr(args, "query_flag", None)
    if positional and flag and positional != flag:
        args.subparser.error(f"two different queries given: {positional!r} and --query {flag!r}; give one")
    query = positional or flag
    if not query:
        args.subparser.error("a query is required, e.g. 'memory:inuse_space:bytes:space:bytes{service_name=\"api\"}'")
    return str(query)


def cmd_export(args: argparse.Namespace) -> int:
    query = _query_of(args)
    if (args.base_from is None) != (args.base_until is None):
        args.subparser.error("--base-from and --base-until go together (the base window of a diff export)")
    to_stdout = args.output == "-"
    if to_stdout and sys.stdout.isatty():
        raise Failed("refusing to write a binary profile to the terminal: redirect stdout or pass -o FILE")
    params = {
        "query": query,
        "from": args.from_,
        "until": args.until,
        "aggregation": args.aggregation,
        "base_from": args.base_from,
        "base_until": args.base_until,
        "base_query": args.base_query,
    }
    r = _call(args, "export", "/api/v1/export", params)
    if to_stdout:
        sys.stdout.buffer.write(r.content)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(r.content)
    # The status line goes to stderr, as go tool pprof's own: the profile may be on stdout (-o - or /dev/stdout).
    print(f"wrote {len(r.content)} bytes to {'stdout' if to_stdout else args.output}", file=sys.stderr)
    return 0


# ---- top, diff, series --------------------------------------------------------------------------------------------


def _sample(profile_type: str) -> tuple[str, str]:
    """(sample type, sample unit) of a profile type ID ``name:sample_type:sample_unit:period_type:period_unit``."""
    parts = profile_type.split(":")
    return (parts[1], parts[2]) if len(parts) >= 3 else (profile_type, "count")


def top_lines(rows: list[dict[str, Any]], total: int, sample_unit: str) -> list[str]:
    """A ``go tool pprof -top`` table: its header line, then flat flat% sum% cum cum% name per row."""
    unit = output_unit([(r["flat"], r["cum"]) for r in rows], total, sample_unit)
    shown = sum(r["flat"] for r in rows)
    lines = [
        f"Showing nodes accounting for {scaled_label(shown, sample_unit, unit)}, "
        f"{percentage(shown, total).strip()} of {scaled_label(total, sample_unit, unit)} total",
        f"{'flat':>10} {'flat':>5}% {'sum':>5}% {'cum':>10} {'cum':>5}%",
    ]
    running = 0
    for r in rows:
        running += r["flat"]
        inline = f" ({r['inline']})" if r.get("inline") else ""
        lines.append(
            f"{scaled_label(r['flat'], sample_unit, unit):>10} {percentage(r['flat'], total)} "
            f"{percentage(running, total)} {scaled_label(r['cum'], sample_unit, unit):>10} "
            f"{percentage(r['cum'], total)}  {r['name']}{inline}"
        )
    return lines


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "from": args.from_,
        "until": args.until,
        "aggregation": args.aggregation,
        "focus": args.focus,
        "ignore": args.ignore,
        "hide": args.hide,
        "group_by": args.group_by,
        "limit": args.limit,
    }


def pprof_order(rows: list[dict[str, Any]], order: str) -> list[dict[str, Any]]:
    """Rows in ``go tool pprof -top``'s order: by flat (or cum), ties by name, then by the other value, so that
    equal values list (and sum%) as pprof lists them."""
    first, second = ("flat", "cum") if order == "flat" else ("cum", "flat")
    return sorted(rows, key=lambda r: (-abs(r[first]), r["name"], -abs(r[second])))


def cmd_top(args: argparse.Namespace) -> int:
    body = _call(args, "top", "/api/v1/top", {"query": _query_of(args), "order": args.order, **_filters(args)}).json()
    body["rows"] = pprof_order(body["rows"], args.order)
    for g in body.get("groups") or []:
        g["rows"] = pprof_order(g["rows"], args.order)
    sample_type, unit = _sample(body["profile_type"])
    _out(f"Type: {sample_type}")
    _out(f"Aggregation: {body['aggregation']}")
    groups = body.get("groups")
    if groups is None:
        groups = [{"labels": None, "rows": body["rows"], "total": body["total"], "functions": body.get("functions")}]
    for g in groups:
        if g["labels"] is not None:
            _out()
            _out(f"Group: {format_labels(g['labels'])}")
        lines = top_lines(g["rows"], g["total"], unit)
        functions = g.get("functions")
        if isinstance(functions, int) and functions > len(g["rows"]):  # as pprof says it, when --limit cut the table
            lines.insert(1, f"Showing top {len(g['rows'])} nodes out of {functions}")
        for line in lines:
            _out(line)
    return 0


def diff_lines(body: dict[str, Any], rows: list[dict[str, Any]], base_total: int, current_total: int) -> list[str]:
    """One diff table: values in pprof's units, shares as pprof's percentages, the change in points of share
    (normalized) or in the profile's unit, and the change relative to the base."""
    _, unit = _sample(body["profile_type"])
    normalized = body["normalized"]
    out_unit = output_unit([(r["base"] or r["current"], 0) for r in rows], max(base_total, current_total), unit)
    table_rows = [("BASE", "CURRENT", "BASE%", "CURRENT%", "CHANGE", "RELATIVE", "NAME")]
    for r in rows:
        b, c = r["base"], r["current"]
        sb = b / base_total if base_total else 0.0
        sc = c / current_total if current_total else 0.0
        if normalized:
            change, base_term = sc - sb, sb
            change_text = signed(100 * change) + "pp"
        else:
            change, base_term = float(c - b), float(b)
            change_text = ("+" if c >= b else "") + scaled_label(c - b, unit, out_unit)
        relative = signed(100 * change / base_term, 1) + "%" if base_term else "new"
        table_rows.append((
            scaled_label(b, unit, out_unit), scaled_label(c, unit, out_unit), percentage(b, base_total).strip(),
            percentage(c, current_total).strip(), change_text, relative, r["name"],
        ))  # fmt: skip
    return table(table_rows, right=range(6))


def cmd_diff(args: argparse.Namespace) -> int:
    params = {
        "query": _query_of(args),
        "base_from": args.base_from,
        "base_until": args.base_until,
        "base_query": args.base_query,
        "by": args.by,
        "normalize": "false" if args.no_normalize else None,
        **_filters(args),
    }
    body = _call(args, "diff", "/api/v1/diff", params).json()
    sample_type, unit = _sample(body["profile_type"])
    how = (
        "change in points of each window's share (pp); --no-normalize for raw values"
        if body["normalized"]
        else "change in raw values (not normalized)"
    )
    _out(f"Type: {sample_type}, by {args.by}, aggregation {body['aggregation']}: {how}")
    groups = body.get("groups")
    if groups is None:
        groups = [{"labels": None, "rows": body["rows"], "base_total": body["base_total"], "current_total": body["current_total"]}]  # fmt: skip
    for g in groups:
        if g["labels"] is not None:
            _out()
            _out(f"Group: {format_labels(g['labels'])}")
        _out(
            f"Base total {scaled_label(g['base_total'], unit)}, current total {scaled_label(g['current_total'], unit)}"
        )
        for line in diff_lines(body, g["rows"], g["base_total"], g["current_total"]):
            _out(line)
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    params = {"query": _query_of(args), "from": args.from_, "until": args.until}
    series = _call(args, "series", "/api/v1/series", params).json()
    rows = [("LABELS", "FIRST", "LAST", "PROFILES")]
    for s in series:
        rows.append((format_labels(s["labels"]), rfc3339_ns(s["first_seen"]), rfc3339_ns(s["last_seen"]), str(s["profiles"])))  # fmt: skip
    for line in table(rows, right=[3]):
        _out(line)
    return 0


# ---- operations ---------------------------------------------------------------------------------------------------


def _iso(text: str | None) -> str:
    return rfc3339(datetime.fromisoformat(text)) if text else "-"


def cmd_targets(args: argparse.Namespace) -> int:
    body = _call(args, "targets", "/api/v1/targets").json()
    header = ("JOB", "INSTANCE", "PROFILE", "HEALTH", "LAST SCRAPE", "DURATION", "FAILS")
    rows: list[tuple[str, ...]] = [header]
    errors: list[str | None] = [None]
    for t in body["targets"]:
        rows.append((
            t["job"], t["instance"], t["profile"], t["health"], _iso(t["last_scrape"]),
            f"{t['last_duration_s']:.2f}s" if t["last_duration_s"] is not None else "-",
            str(t["consecutive_failures"]),
        ))  # fmt: skip
        # The whole error, cause included: it is what a user acts on, so it is wrapped, never cut.
        down = t["health"] == "down" and t.get("last_error")
        errors.append(f"last error ({t['last_error_kind']}): {t['last_error']}" if down else None)
    for line, err in zip(table(rows, right=[5, 6]), errors, strict=True):
        _out(line)
        if err:
            for wrapped in wrap_indented(err):
                _out(wrapped)
    for err in body.get("file_sd_errors", []):
        _note(f"file_sd: {err}")
    return 0


def cmd_regressions(args: argparse.Namespace) -> int:
    params = {"service": args.service, "kind": args.kind, "state": args.state}
    findings = _call(args, "regressions", "/api/v1/regressions", params).json()
    rows = [("ID", "STATE", "SINCE", "P_ADJ", "INSTANCES", "FINDING")]
    for f in findings:
        since = rfc3339_ns(f["change_ts"])
        rows.append((f["id"], f["state"], since, f"{f['p_adjusted']:.1e}", str(len(f["instances"])), f["title"]))
    for line in table(rows):
        _out(line)
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    body = _call(args, "storage", "/api/v1/storage").json()
    _out(f"database file: {body['file_bytes'] / 2**20:.1f} MiB")
    tables = [("TABLE", "ROWS", "MIB")]
    tables += [(t["name"], str(t["rows"]), f"{t['bytes'] / 2**20:.1f}") for t in body["tables"]]
    for line in table(tables, right=[1, 2]):
        _out(line)
    tenants = [("TENANT", "SERIES", "PROFILES", "OLDEST", "OLDEST RAW", "NEWEST")]
    for t in body["tenants"]:
        tenants.append((
            t["tenant"], str(t["series"]), str(t["profiles"]),
            rfc3339_ns(t["oldest"]), rfc3339_ns(t["oldest_raw"]), rfc3339_ns(t["newest"]),
        ))  # fmt: skip
    for line in table(tenants, right=[1, 2]):
        _out(line)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.dir).absolute()
    with _client(args) as client:
        r = client.post("/api/v1/storage/backup", params={"dir": str(target)})
    if not r.is_success:
        raise Failed(f"backup: {r.status_code} {api_error(r)}")
    body = r.json()
    rows = sum(body["tables"].values())
    _out(f"backed up {rows} rows of {len(body['tables'])} tables to {target} in {body['seconds']:.1f} s")
    return 0
