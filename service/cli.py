"""profstore: store Go pprof profiles, query them, and export what `go tool pprof` reads.

Server: serve, migrate, backup, restore, storage, targets, regressions, token, openapi.
Profiles: ingest, export, top, diff, series (against a running server: --url or $PROFSTORE_URL).
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from service.cli_client import (
    DEFAULT_URL,
    Failed,
    cmd_backup,
    cmd_diff,
    cmd_export,
    cmd_ingest,
    cmd_regressions,
    cmd_series,
    cmd_storage,
    cmd_targets,
    cmd_top,
    describe_os_error,
    server_url,
)
from service.errors import ProfstoreError

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    from service.config import load_settings

    return load_settings(
        getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), listen=getattr(args, "listen", None)
    )


def _port_free(host: str, port: int) -> None:
    """Refuse early when the address is taken: uvicorn would find out only after opening the database."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Failed(f"{host}:{port} is already in use by another process; pass another --listen") from exc
            raise Failed(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from exc


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.auth import is_loopback
    from service.api.http11 import BoundedHttpToolsProtocol
    from service.app import create_app
    from service.store import migrate
    from service.store.db import DB_FILE, EXTENSION_DIR

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
    # Open (and migrate) the file here, before uvicorn: a data dir in use by another server is then one line
    # (DataDirInUse) instead of uvicorn's startup traceback.
    migrate.prepare(settings.data_dir / DB_FILE, settings.data_dir / EXTENSION_DIR, settings.storage)
    _port_free(settings.host, settings.port)
    flags = {"data_dir": args.data_dir, "listen": args.listen}
    app = create_app(settings, config_path=args.config, overrides={k: v for k, v in flags.items() if v is not None})
    # One worker only: a DuckDB file admits a single process. httptools (with a bound on request heads, see
    # service/api/http11.py) and uvloop, named rather than left to uvicorn's "auto": on its defaults, h11 and
    # asyncio's loop in Python, the HTTP path of a push took ~35 % more CPU (`python -m bench.push --stub-store`).
    # No access log unless asked for: a line per push cost 10 % of the server's CPU at 300 pushes/s.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level="info",
        access_log=settings.access_log,
        http=BoundedHttpToolsProtocol,
        loop="uvloop",
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.store import migrate
    from service.store.db import DB_FILE, EXTENSION_DIR

    settings = _settings(args)
    migrate.prepare(settings.data_dir / DB_FILE, settings.data_dir / EXTENSION_DIR, settings.storage)
    where = (
        settings.data_dir / DB_FILE
        if settings.storage.backend == "duckdb"
        else f"the DuckLake ({settings.storage.data_path})"
    )
    print(f"migrated {where} to head")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from service.app import create_app

    sys.stdout.write(yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True))
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


def _version() -> str:
    try:
        return importlib.metadata.version("profstore")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


TIME_HELP = "RFC 3339 (2026-12-06T13:00:00Z), unix seconds or ms, or relative (now-1h, now-1h30m)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profstore", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version", action="version", version=f"profstore {_version()}")
    p.add_argument("--debug", action="store_true", help="on an error, print the Python stack trace too")
    # --debug also after the command; SUPPRESS keeps a subcommand from resetting the global flag to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help, description=help[:1].upper() + help[1:] + ".", parents=[common],
            epilog=f"example:\n  {example}" if example else None, formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sp.set_defaults(subparser=sp)
        return sp

    def client_flags(sp: argparse.ArgumentParser, timeout: float) -> None:
        sp.add_argument("--url", metavar="URL", help=f"the server (default: $PROFSTORE_URL, else {DEFAULT_URL})")
        sp.add_argument(
            "--timeout", type=float, default=timeout, metavar="SECONDS",
            help=f"how long to wait for the server's answer (default: {timeout:g})",
        )  # fmt: skip
        sp.add_argument("--token", help="API token (default: $PROFSTORE_TOKEN)")
        sp.add_argument("--tenant", help="tenant (X-Scope-OrgID); default: the token's only tenant, else anonymous")

    def storage_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file")
        sp.add_argument("--data-dir", type=Path, metavar="DIR", help="directory of the DuckDB file (default ./data)")

    def window_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--from", dest="from_", metavar="TIME", help=f"start (default now-1h): {TIME_HELP}")
        sp.add_argument("--until", metavar="TIME", help="end, same formats (default now)")

    def stack_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--limit", type=int, metavar="N", help="rows to show (default 100)")
        sp.add_argument("--focus", metavar="REGEX", help="keep stacks with a frame matching REGEX (pprof's -focus)")
        sp.add_argument("--ignore", metavar="REGEX", help="drop stacks with a frame matching REGEX (pprof's -ignore)")
        sp.add_argument("--hide", metavar="REGEX", help="drop frames matching REGEX from every stack (pprof's -hide)")
        aggregation_flag(sp)
        sp.add_argument("--group-by", metavar="LABELS", help="one table per value of these labels, e.g. pod,region")

    def aggregation_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--aggregation", choices=["sum", "avg", "last"],
            help="how a series' profiles combine over the range (default: sum for cpu/alloc/block/mutex, "
            "avg for in-use memory, goroutines, threads)",
        )  # fmt: skip

    query_help = 'a profile type and a label selector, TYPE{label="value", ...} (see the example)'
    heap = "'memory:inuse_space:bytes:space:bytes{service_name=\"api\"}'"
    cpu = "'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name=\"api\"}'"

    s = command("serve", "run the HTTP server (applies migrations first)")
    storage_flags(s)
    s.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:4040)")
    s.add_argument(
        "--insecure-no-auth", action="store_true", help="serve off loopback without auth.tokens (logged at each start)"
    )
    s.set_defaults(func=cmd_serve)

    s = command("migrate", "apply database migrations (the server stopped)")
    storage_flags(s)
    s.set_defaults(func=cmd_migrate)

    s = command(
        "ingest",
        "send pprof files to a running server",
        "curl -s localhost:6060/debug/pprof/heap | profstore ingest - --labels '{service_name=\"api\"}'",
    )
    s.add_argument("files", nargs="+", metavar="FILE", help="pprof files (gzipped or not); - reads stdin")
    s.add_argument(
        "--labels", default="{}", metavar="LABELS",
        help='series labels, e.g. {service_name="checkout"}; without service_name, the file name is used',
    )  # fmt: skip
    s.add_argument("--name", help="profile name, e.g. block or mutex (inferred when absent)")
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_ingest)

    s = command(
        "export",
        "fetch the merged pprof of a query (what `go tool pprof` reads)",
        f"profstore export {heap} --from now-1h -o heap.pb.gz && go tool pprof -top heap.pb.gz",
    )
    s.add_argument("query", nargs="?", metavar="QUERY", help=query_help)
    s.add_argument("--query", dest="query_flag", metavar="QUERY", help="the same as the positional QUERY")
    window_flags(s)
    aggregation_flag(s)
    s.add_argument("--base-from", metavar="TIME", help="with --base-until: the diff against this base window")
    s.add_argument("--base-until", metavar="TIME", help="end of the base window")
    s.add_argument("--base-query", metavar="QUERY", help="the base window's query when it differs from QUERY")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the .pb.gz; - for stdout")
    client_flags(s, 300.0)
    s.set_defaults(func=cmd_export)

    s = command(
        "top", "top functions of a query, as `go tool pprof -top` prints them", f"profstore top {cpu} --from now-15m"
    )
    s.add_argument("query", metavar="QUERY", help=query_help)
    window_flags(s)
    s.add_argument("--order", choices=["flat", "cum"], default="flat", help="sort by flat (default) or cum")
    stack_flags(s)
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_top)

    s = command(
        "diff",
        "per function: a base window against the current one",
        f"profstore diff {cpu} --from now-1h --base-from now-25h --base-until now-24h",
    )
    s.add_argument("query", metavar="QUERY", help=query_help)
    window_flags(s)
    s.add_argument("--base-from", required=True, metavar="TIME", help="start of the base window")
    s.add_argument("--base-until", required=True, metavar="TIME", help="end of the base window")
    s.add_argument("--base-query", metavar="QUERY", help="the base window's query when it differs from QUERY")
    s.add_argument("--by", choices=["flat", "cum"], default="flat", help="compare flat (default) or cum")
    s.add_argument("--no-normalize", action="store_true", help="compare raw values, not shares of each window's total")
    stack_flags(s)
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_diff)

    s = command(
        "series",
        "the series a query matches, with their first and last profile",
        "profstore series 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{}' --from now-1d",
    )
    s.add_argument("query", metavar="QUERY", help=query_help)
    window_flags(s)
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_series)

    s = command("targets", "the scrape targets of a running server and their health")
    client_flags(s, 30.0)
    s.set_defaults(func=cmd_targets)

    s = command("regressions", "the regression and leak findings of a running server")
    s.add_argument("--service", metavar="NAME", help="only this service_name")
    s.add_argument("--kind", choices=["regression", "leak"], help="only this kind")
    s.add_argument("--state", choices=["open", "acknowledged", "resolved"], help="only this state")
    client_flags(s, 30.0)
    s.set_defaults(func=cmd_regressions)

    s = command("storage", "rows and bytes per table and data per tenant of a running server")
    client_flags(s, 60.0)
    s.set_defaults(func=cmd_storage)

    s = command("backup", "write a consistent backup of a running server into a new directory")
    s.add_argument("dir", metavar="DIR", help="directory to create (on the server's machine)")
    client_flags(s, 3600.0)
    s.set_defaults(func=cmd_backup)

    s = command("restore", "rebuild an empty data directory from a backup (the server stopped)")
    s.add_argument("dir", metavar="DIR", help="a directory written by `profstore backup`")
    storage_flags(s)
    s.set_defaults(func=cmd_restore)

    s = command("token", "make a new API token and print it with its auth.tokens entry")
    s.add_argument("--name", default="client", help="who holds it")
    s.add_argument("--scopes", nargs="+", choices=["read", "write", "admin"], default=["read"], help="what it may do")
    s.add_argument("--tenants", nargs="+", default=["*"], metavar="TENANT", help="tenants it may use (* = all)")
    s.set_defaults(func=cmd_token)

    s = command("openapi", "print the OpenAPI document (YAML)")
    s.set_defaults(func=cmd_openapi)
    return p


def describe(exc: BaseException, args: argparse.Namespace) -> str:
    """One line a user can act on, for any error a command let through."""
    url = server_url(getattr(args, "url", None))
    if isinstance(exc, Failed | ProfstoreError):
        text = str(exc)
    elif isinstance(exc, httpx.TimeoutException):
        text = f"{url} did not answer within {args.timeout:g} s; raise --timeout"
    elif isinstance(exc, httpx.ConnectError):
        reason = str(exc).split("] ", 1)[-1].lower() or "connection failed"
        text = f"cannot reach {url}: {reason}; is `profstore serve` running there? (--url or $PROFSTORE_URL)"
    elif isinstance(exc, httpx.HTTPError):
        text = f"cannot reach {url}: {exc}"
    elif isinstance(exc, OSError):
        text = describe_os_error(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (--debug shows where)"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error ends as one line on stderr and exit 1 (usage errors: argparse's exit 2;
    Ctrl-C: 130); ``--debug`` lets the stack trace through instead."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines per scrape otherwise
    args = _parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("profstore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `profstore top … | head`: the reader left; nothing more to say, not even at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if debug:
            raise
        print(f"profstore: {describe(exc, args)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
