"""The composition root: the one place that wires settings, storage, ingest, the collector and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.analysis.analyze import KINDS
from service.analysis.runner import Analyzer
from service.api import auth, errors, limits, ops, params, push, querier, query, regressions, rest, storage, targets, ui
from service.collector.jobs import Collector
from service.collector.ownership import Ownership
from service.collector.scrape import warm_up as warm_up_scrapes
from service.config import RetentionSettings, Settings, load_settings
from service.errors import InvalidRequest
from service.metrics import Metrics
from service.pprof.decode import Envelope
from service.query.source import Sources
from service.query.stacks import StackNames
from service.store import cluster, series_fold
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.maintenance import LakeMaintenance
from service.store.retention import expire
from service.store.source import DuckDBSources
from service.store.stack_rollups import compact
from service.store.staging import warm_up
from service.store.workers import Workers
from service.types import now_ns

__all__ = ["create_app"]

log = logging.getLogger(__name__)

LAKE_LINGER_S = 1.0


def create_app(
    settings: Settings | None = None, *, config_path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> FastAPI:
    """Build the app; storage and the collector start in the lifespan, so building it touches no file.

    ``config_path`` and ``overrides`` (the command-line flags) are what a reload reads again.
    """
    settings = settings or Settings()
    metrics = Metrics()

    def observe_batch(seconds: float, profiles: int) -> None:
        metrics.batch_seconds.observe(seconds)
        metrics.batch_profiles.observe(profiles)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(
            settings.data_dir,
            read_timeout_s=settings.query_timeout_s,
            max_batch=settings.write_batch_max,
            linger_s=_linger_s(settings),
            max_unapplied=settings.write_max_pending,
            observe_batch=observe_batch,
            checkpoint_idle_bytes=settings.checkpoint_idle_bytes,
            checkpoint_busy_bytes=settings.checkpoint_busy_bytes,
            memory_limit=settings.duckdb_memory_limit,
            storage=settings.storage,
        )
        metrics.watch(
            db.writer.depth, db.size_bytes, lambda: db.writer.conflicts,
            lambda: len(db.cluster.live) if db.cluster is not None else 1,
            lambda: db.replica.rebuilds if db.replica is not None else 0,
        )  # fmt: skip
        workers = Workers(settings.ingest_workers) if settings.ingest_workers else None
        if workers is not None:
            workers.start()
        ingestor = Ingestor(db, settings.decode_limits, metrics, workers)
        app.state.db = db
        # Every read of stored data above the store goes through this: the query layer's ProfileSource
        # per request. Annotated so that mypy checks the DuckDB backend against the Protocol.
        sources: Sources = DuckDBSources(db)
        app.state.sources = sources
        app.state.ingestor = ingestor

        def sink(env: Envelope, labels: Mapping[str, str], name: str, tenant: str) -> int:
            return ingestor.store(env, labels=labels, name=name, tenant=tenant, source="scrape").samples

        collector = Collector(
            sink,
            limits=settings.decode_limits,
            metrics=metrics,
            concurrency=settings.scrape_concurrency,
            max_pending_stores=settings.scrape_max_pending_stores,
            max_samples=settings.max_samples,
            max_stack_depth=settings.max_stack_depth,
            # On a lake the live nodes share the targets out (rendezvous hashing); alone, it scrapes them all.
            ownership=_ownership(db.cluster) if db.cluster is not None else None,
            join_grace_s=2 * cluster.HEARTBEAT_S,
        )
        app.state.collector = collector
        base_dir = settings.config_dir

        async def reload() -> int:
            if config_path is None:
                raise InvalidRequest("profstore was started without --config; there is no file to reload")
            new = await asyncio.get_running_loop().run_in_executor(
                None, lambda: load_settings(config_path, **dict(overrides or {}))
            )
            collector.configure(new.scrape_configs, base_dir)
            log.info("configuration reloaded from %s", config_path)
            return len(collector.health.snapshot())

        async def on_sighup() -> None:
            try:
                await reload()
            except InvalidRequest as exc:
                log.error("reload refused, the running configuration stays: %s", exc)

        app.state.reload = reload
        analyzer = Analyzer(sources, settings.analysis)
        app.state.analyzer = analyzer
        # Compiled kernels load (or compile, on a fresh checkout) before the first scrape is due.
        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        await asyncio.get_running_loop().run_in_executor(None, warm_up_scrapes)
        # What exists now (modules, compiled kernels, schemas) lives as long as the process. Frozen,
        # a full collection never walks it again: one over the startup heap paused a request ~100 ms.
        gc.freeze()
        await collector.start(settings.scrape_configs, base_dir)
        if db.cluster is None:
            maintenance = None
            tasks = [
                asyncio.get_running_loop().create_task(_compact_every(db, settings.compaction_interval_s)),
                asyncio.get_running_loop().create_task(_expire_every(db, settings.retention)),
            ]
        else:  # on a lake, one node at a time maintains it, behind the write fence
            maintenance = LakeMaintenance(
                db.maintenance_cursor, db.node_name, db.known, settings.retention, settings.compaction_interval_s,
                # First: retention reads series' last_seen, which on a lake is exact only once folded.
                before=[("fold", series_fold.fold), ("dedupe", series_fold.dedupe)],
            )  # fmt: skip
            await asyncio.get_running_loop().run_in_executor(None, maintenance.claim)
            tasks = [
                asyncio.get_running_loop().create_task(_maintain_every(maintenance, settings.compaction_interval_s))
            ]
        app.state.maintenance = maintenance
        detection = AsyncIOScheduler()
        if settings.analysis.enabled:
            detection.add_job(
                _analyze, "interval", args=[analyzer, KINDS, maintenance], seconds=settings.analysis.interval_s,
                id="analysis", max_instances=1, coalesce=True,
            )  # fmt: skip
            if settings.analysis.leak_interval_s < settings.analysis.interval_s:
                detection.add_job(
                    _analyze, "interval", args=[analyzer, frozenset({"leak"}), maintenance],
                    seconds=settings.analysis.leak_interval_s, id="leaks", max_instances=1, coalesce=True,
                )  # fmt: skip
            detection.start()
        loop = asyncio.get_running_loop()
        hup = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # only in the main thread
            reloads: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly

            def on_signal() -> None:
                task = loop.create_task(on_sighup())
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(signal.SIGHUP, on_signal)
            hup = True
        try:
            yield
        finally:
            gc.unfreeze()  # an app built and stopped in one process (tests) leaves nothing uncollectable
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            if detection.running:
                detection.shutdown(wait=False)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await collector.stop()
            analyzer.close()
            ingestor.close()
            db.close()  # the writer drains its queue and commits before the file closes

    app = FastAPI(
        title="profstore",
        version=__version__,
        description="Continuous-profiling storage for Go pprof endpoints: pprof in, DuckDB, pprof out.",
        lifespan=lifespan,
        # Every REST endpoint refuses query parameters it does not declare (a typo is not ignored).
        dependencies=[Depends(check) for check in params.APP_CHECKS],
    )
    app.state.settings = settings
    app.state.stack_names = StackNames()  # named frames by content-hash stack id, for every query
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(limits.QueryLimit, limit=settings.max_concurrent_queries, metrics=metrics)
    app.add_middleware(auth.Auth, settings=settings.auth)  # added last: runs first, refused requests never queue
    app.include_router(rest.router)
    app.include_router(query.router)
    app.include_router(targets.router)
    app.include_router(regressions.router)
    app.include_router(ops.router)
    app.include_router(storage.router)
    app.include_router(querier.router)
    app.include_router(push.connect_router)
    app.include_router(push.router)
    app.include_router(ui.router)
    app.mount("/ui", ui.files(), name="ui")
    app.add_exception_handler(StarletteHTTPException, _no_route)
    return app


# Connect clients read {"code", "message"}; everything else, the REST API's {"error"}.
_CONNECT_PREFIXES = ("/querier.v1.", "/push.v1.")


async def _no_route(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 (no route) and 405 (route, not this method) in the API's error shape,
    naming what was asked and where the API is; its ``Allow`` header is kept."""
    assert isinstance(exc, StarletteHTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404 and path.startswith("/api/v1/"):
        message = f"no route {method} {path}; the endpoints are listed at /docs"
    elif exc.status_code == 404:
        message = f"no route {method} {path}; the API is under /api/v1 (see /docs)"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {method} is not allowed on {path}; allowed: {allowed or 'none'} (see /docs)"
    else:
        message = str(exc.detail)
    body: dict[str, str] = (
        {"code": "unimplemented", "message": message} if path.startswith(_CONNECT_PREFIXES) else {"error": message}
    )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _ownership(node: cluster.Node) -> Ownership:
    """What the collector asks at each due run: this node's name and the live nodes' (read at that moment)."""
    return lambda: (node.name, node.live)


async def _analyze(analyzer: Analyzer, kinds: frozenset[str], maintenance: LakeMaintenance | None) -> None:
    """A scheduled detection run, on a worker thread; a failure is logged and the next run comes anyway.
    On a lake only the maintenance node runs it: findings are one table that one node keeps."""
    if maintenance is not None and not maintenance.holding:
        return
    try:
        report = await asyncio.get_running_loop().run_in_executor(None, lambda: analyzer.run(kinds=kinds))
    except Exception:
        log.exception("regression analysis failed; the next run is in %g s", analyzer.settings.interval_s)
        return
    log.info(
        "analysis: %d tests in %.1f s, %d findings (%d new), %d resolved",
        report.tests, report.seconds, len(report.records), len(report.new), len(report.resolved),
    )  # fmt: skip


async def _compact_every(db: Database, interval_s: float) -> None:
    """Keep the stack rollups current (in the writer thread, between batches); a failure waits for the next turn."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.wrap_future(db.writer.call(lambda con: compact(con, now_ns())))
        except Exception:
            log.exception("compacting stack rollups failed; retrying in %g s", interval_s)


def _linger_s(settings: Settings) -> float:
    """The writer's linger: as set, else 0.25 s on a file and 1 s on a lake, where every commit is a
    Parquet file per table and a catalog transaction (a node then commits at most once a second,
    and other nodes see a push within about that)."""
    if "write_batch_linger_s" in settings.model_fields_set or settings.storage.backend == "duckdb":
        return settings.write_batch_linger_s
    return LAKE_LINGER_S


async def _maintain_every(maintenance: LakeMaintenance, interval_s: float) -> None:
    """The lake's maintenance, on the node that holds its lease (the others only try to take it)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await asyncio.get_running_loop().run_in_executor(None, lambda: maintenance.run_once(now_ns()))
        except Exception:
            log.exception("maintaining the lake failed; retrying in %g s", interval_s)
            continue
        if report is not None and not report.missing:
            log.info(
                "lake maintenance (fence %d): writers stopped in %.2f s, fenced %.2f s, %s",
                report.epoch, report.waited_s, report.fenced_s,
                ", ".join(f"{k} {v:.2f} s" for k, v in report.steps.items()),
            )  # fmt: skip
            if report.expired is not None and any(report.expired.deleted.values()):
                log.info("retention: deleted %s", report.expired.deleted)


async def _expire_every(db: Database, settings: RetentionSettings) -> None:
    """Delete what is past retention (in the writer thread, between batches): at start, then every interval."""
    while True:
        try:
            out = await asyncio.wrap_future(db.writer.call(lambda con: expire(con, settings, now_ns(), db.known)))
            if any(out.deleted.values()):  # type: ignore[attr-defined]
                log.info("retention: deleted %s in %.1f s", out.deleted, out.seconds)  # type: ignore[attr-defined]
        except Exception:
            log.exception("retention failed; retrying in %g s", settings.interval_s)
        await asyncio.sleep(settings.interval_s)
