"""Operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from service.errors import QueryTimeout, StoreError

__all__ = ["router"]

router = APIRouter()


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz", response_model=Health, summary="Liveness: the database answers a query")
def healthz(request: Request) -> Health:
    from service import __version__

    with request.app.state.sources.read(timeout_s=5) as src:
        src.ping()
    return Health(status="ok", version=__version__)


@router.get(
    "/metrics",
    summary="Prometheus metrics: scrapes by outcome, scrape duration and lateness, ingest, writer, database size",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
)
def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    counts = {"unknown": 0, "up": 0, "down": 0, "elsewhere": 0}
    for h in request.app.state.collector.health.snapshot():
        counts[h.health] += 1
    for health, n in counts.items():
        m.targets.labels(health).set(n)
    try:
        with request.app.state.sources.read(timeout_s=5) as src:
            done = src.rollup_done()
    except (StoreError, QueryTimeout):  # out of reach or slow: the rest still says what this process did
        done = {}
    for resolution, until_ns in done.items():
        m.rollups_complete.labels(str(resolution)).set(until_ns / 1e9)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
