"""Operational endpoints: health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

__all__ = ["router"]

router = APIRouter()


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz", response_model=Health, summary="Liveness: the database answers a query")
def healthz(request: Request) -> Health:
    from service import __version__

    with request.app.state.db.read(timeout_s=5) as cur:
        cur.execute("SELECT 1").fetchone()
    return Health(status="ok", version=__version__)
