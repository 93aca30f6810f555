"""The composition root: the one place that wires settings, storage, ingest and the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import errors, ops, rest
from service.config import Settings
from service.store.db import Database
from service.store.ingest import Ingestor

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; storage opens in the lifespan, so building it (e.g. for ``openapi``) touches no file."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.data_dir, read_timeout_s=settings.query_timeout_s, max_batch=settings.write_batch_max)
        app.state.db = db
        app.state.ingestor = Ingestor(db, settings.decode_limits)
        try:
            yield
        finally:
            db.close()

    app = FastAPI(
        title="profstore",
        version=__version__,
        description="Continuous-profiling storage for Go pprof endpoints: pprof in, DuckDB, pprof out.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(rest.router)
    app.include_router(ops.router)
    return app
