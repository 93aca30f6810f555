"""``profstore``: serve, migrate, ingest, export, targets, regressions, storage, backup, restore, token, openapi."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.errors import ProfstoreError

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:4040"


def _settings(args: argparse.Namespace):
    from service.config import load_settings

    return load_settings(
        getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), listen=getattr(args, "listen", None)
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.auth import is_loopback
    from service.app import create_app

    settings = _settings(args)
    if not settings.auth.tokens and not is_loopback(settings.host):
        if not args.insecure_no_auth:
            print(
                f"profstore: refusing to serve {settings.listen} without authentication: anyone who reaches it could "
                "read and write every tenant's profiles. Configure auth.tokens (see `profstore token`), listen on "
                "127.0.0.1, or pass --insecure-no-auth.",
                file=sys.stderr,
            )
            return 2
        logging.getLogger("profstore").warning(
            "serving %s WITHOUT AUTHENTICATION (--insecure-no-auth): every client may read and write every tenant",
            settings.listen,
        )
    flags = {"data_dir": args.data_dir, "listen": args.listen}
    app = create_app(settings, config_path=args.config, overrides={k: v for k, v in flags.items() if v is not None})
    # One worker only: a DuckDB file admits a single process.
    uvicorn.run(app, host=settings.host, port=settings.port, workers=1, log_level="info")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.store import migrate

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.data_dir / "profstore.duckdb")
    print(f"migrated {settings.data_dir / 'profstore.duckdb'} to head")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from service.app import create_app

    sys.stdout.write(yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.dir).absolute()
    with _client(args) as client:
        r = client.post("/api/v1/storage/backup", params={"dir": str(target)})
    if r.status_code != 200:
        print(f"backup failed: {r.status_code} {_error(r)}", file=sys.stderr)
        return 1
    body = r.json()
    rows = sum(body["tables"].values())
    print(f"backed up {rows} rows of {len(body['tables'])} tables to {target} in {body['seconds']:.1f} s")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from service.store.backup import restore
    from service.store.db import DB_FILE

    settings = _settings(args)
    tables = restore(Path(args.dir).absolute(), settings.data_dir / DB_FILE)
    print(f"restored {sum(tables.values())} rows of {len(tables)} tables into {settings.data_dir / DB_FILE}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from service.api.auth import hash_token

    token = secrets.token_urlsafe(32)
    print(f"token:  {token}")
    print("config (auth.tokens):")
    scopes = ", ".join(args.scopes)
    tenants = ", ".join(f'"{t}"' for t in args.tenants)
    print(f"  - {{name: {args.name}, sha256: {hash_token(token)}, scopes: [{scopes}], tenants: [{tenants}]}}")
    return 0


def _client(args: argparse.Namespace) -> httpx.Client:
    """A client of a running server, with the token (``--token`` or ``PROFSTORE_TOKEN``) and tenant."""
    headers = {}
    token = args.token or os.environ.get("PROFSTORE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if args.tenant:
        headers["X-Scope-OrgID"] = args.tenant
    return httpx.Client(base_url=args.url, timeout=args.timeout, headers=headers)


def cmd_ingest(args: argparse.Namespace) -> int:
    failed = 0
    with _client(args) as client:
        for f in args.files:
            params = {"labels": args.labels}
            if args.name:
                params["name"] = args.name
            r = client.post("/api/v1/ingest", params=params, content=Path(f).read_bytes())
            if r.status_code == 200:
                body = r.json()
                print(
                    f"{f}: {body['samples']} samples in {', '.join(body['series'])}"
                    + (" (already stored)" if body["duplicate"] else "")
                )
            else:
                failed += 1
                print(f"{f}: {r.status_code} {_error(r)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    params = {"query": args.query, "from": args.from_, "until": args.until}
    with _client(args) as client:
        r = client.get("/api/v1/export", params={k: v for k, v in params.items() if v})
    if r.status_code != 200:
        print(f"export failed: {r.status_code} {_error(r)}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(r.content)
    print(f"wrote {len(r.content)} bytes to {args.output}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    body = _get_json(args, "/api/v1/targets", "targets")
    if body is None:
        return 1
    rows = [("JOB", "INSTANCE", "PROFILE", "HEALTH", "LAST SCRAPE", "DURATION", "FAILS", "LAST ERROR")]
    for t in body["targets"]:
        err = f"{t['last_error_kind']}: {t['last_error']}" if t["health"] == "down" else ""
        rows.append((
            t["job"], t["instance"], t["profile"], t["health"], (t["last_scrape"] or "-")[:19],
            f"{t['last_duration_s']:.2f}s" if t["last_duration_s"] is not None else "-",
            str(t["consecutive_failures"]), err[:100],
        ))  # fmt: skip
    _table(rows)
    for err in body.get("file_sd_errors", []):
        print(f"file_sd: {err}", file=sys.stderr)
    return 0


def cmd_regressions(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("service", args.service), ("kind", args.kind), ("state", args.state)) if v}
    findings = _get_json(args, "/api/v1/regressions", "regressions", params)
    if findings is None:
        return 1
    rows = [("ID", "STATE", "SINCE", "P_ADJ", "INSTANCES", "FINDING")]
    for f in findings:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f["change_ts"] / 1e9))
        rows.append((f["id"], f["state"], since, f"{f['p_adjusted']:.1e}", str(len(f["instances"])), f["title"]))
    _table(rows)
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    body = _get_json(args, "/api/v1/storage", "storage")
    if body is None:
        return 1
    print(f"database file: {body['file_bytes'] / 2**20:.1f} MiB")
    _table(
        [("TABLE", "ROWS", "MIB")] + [(t["name"], str(t["rows"]), f"{t['bytes'] / 2**20:.1f}") for t in body["tables"]]
    )

    def day(ns: int | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ns / 1e9)) if ns else "-"

    _table(
        [("TENANT", "SERIES", "PROFILES", "OLDEST", "OLDEST RAW", "NEWEST")]
        + [
            (
                t["tenant"],
                str(t["series"]),
                str(t["profiles"]),
                day(t["oldest"]),
                day(t["oldest_raw"]),
                day(t["newest"]),
            )
            for t in body["tenants"]
        ]
    )
    return 0


def _get_json(args: argparse.Namespace, path: str, what: str, params: dict[str, str] | None = None) -> Any:
    """The JSON answer of a GET, or None after printing why it failed."""
    with _client(args) as client:
        r = client.get(path, params=params)
    if r.status_code != 200:
        print(f"{what} failed: {r.status_code} {_error(r)}", file=sys.stderr)
        return None
    return r.json()


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except (json.JSONDecodeError, AttributeError):
        return r.text[:300]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profstore", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def client_flags(sp: argparse.ArgumentParser, timeout: float) -> None:
        sp.add_argument("--url", default=DEFAULT_URL)
        sp.add_argument("--timeout", type=float, default=timeout)
        sp.add_argument("--token", help="API token (default: $PROFSTORE_TOKEN)")
        sp.add_argument("--tenant", help="tenant (X-Scope-OrgID); default: the token's only tenant, else anonymous")

    def storage_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, help="YAML settings file")
        sp.add_argument("--data-dir", type=Path, help="directory of the DuckDB file (default ./data)")

    s = sub.add_parser("serve", help="run the HTTP server (applies migrations first)")
    storage_flags(s)
    s.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:4040)")
    s.add_argument(
        "--insecure-no-auth", action="store_true", help="serve off loopback without auth.tokens (logged at each start)"
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("migrate", help="apply database migrations")
    storage_flags(s)
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("storage", help="rows and bytes per table and data per tenant of a running server")
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_storage)

    s = sub.add_parser("backup", help="write a consistent backup of a running server into a new directory")
    s.add_argument("dir", help="directory to create (on the server's machine)")
    client_flags(s, 3600.0)
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("restore", help="rebuild an empty data directory from a backup (server stopped)")
    s.add_argument("dir", help="a directory written by `profstore backup`")
    storage_flags(s)
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("token", help="make a new API token and print it with its auth.tokens entry")
    s.add_argument("--name", default="client", help="who holds it")
    s.add_argument("--scopes", nargs="+", choices=["read", "write", "admin"], default=["read"])
    s.add_argument("--tenants", nargs="+", default=["*"], help="tenants it may use (* = all)")
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("openapi", help="print the OpenAPI document (YAML)")
    s.set_defaults(func=cmd_openapi)

    s = sub.add_parser("ingest", help="send pprof files to a running server")
    s.add_argument("files", nargs="+")
    s.add_argument("--labels", default="{}", help='series labels, e.g. {service_name="checkout"}')
    s.add_argument("--name", help="profile name (inferred when absent)")
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("export", help="fetch a merged pprof from a running server")
    s.add_argument("--query", required=True, help="<profile type>{<selector>}")
    s.add_argument("--from", dest="from_", help="start (RFC 3339, unix s/ms, now-1h)")
    s.add_argument("--until", help="end (default now)")
    s.add_argument("-o", "--output", required=True)
    client_flags(s, 300.0)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("targets", help="show the scrape targets of a running server and their health")
    client_flags(s, 30.0)
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("regressions", help="list the regression and leak findings of a running server")
    s.add_argument("--service", help="only this service_name")
    s.add_argument("--kind", choices=["regression", "leak"])
    s.add_argument("--state", choices=["open", "acknowledged", "resolved"])
    client_flags(s, 30.0)
    s.set_defaults(func=cmd_regressions)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines per scrape otherwise
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ProfstoreError as exc:
        print(f"profstore: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # the client commands: server down, wrong URL, timeout
        where = getattr(args, "url", "")
        print(f"profstore: cannot reach {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
