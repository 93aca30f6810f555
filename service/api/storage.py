"""Storage lifecycle endpoints (admin scope): what the database holds, retention on demand, backups."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from service.api.auth import visible_tenants
from service.errors import StoreError
from service.store import backup, cluster, usage
from service.store.retention import Expired, expire
from service.types import now_ns

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


class TableOut(BaseModel):
    name: str
    rows: int
    bytes: int = Field(description="Blocks of the table in the file as of the last checkpoint, in bytes.")


class TenantOut(BaseModel):
    tenant: str
    series: int
    profiles: int = Field(description="Stored profiles (one per series and time), raw or rolled up.")
    oldest: int | None = Field(description="Oldest profile kept (ns since the epoch), raw or rolled up.")
    newest: int | None
    oldest_raw: int | None = Field(description="Oldest profile whose samples are kept (older: rollups only).")


class StorageOut(BaseModel):
    file_bytes: int = Field(description="The DuckDB file and its write-ahead log on disk.")
    tables: list[TableOut]
    tenants: list[TenantOut] = Field(description="The tenants the token may see.")


class ExpireOut(BaseModel):
    deleted: dict[str, int] = Field(description="Rows deleted per table.")
    seconds: float


@router.get("/storage", response_model=StorageOut, summary="Size per table, rows, oldest and newest data per tenant")
def storage(request: Request) -> StorageOut:
    db = request.app.state.db
    allowed = visible_tenants(request)
    with db.read(direct=True) as cur:  # on a lake, the lake's own files rather than this node's copy
        tables = usage.tables(cur)
        tenants = [t for t in usage.tenants(cur) if allowed is None or t.tenant in allowed]
    return StorageOut(
        file_bytes=db.size_bytes(),
        tables=[TableOut(name=t.name, rows=t.rows, bytes=t.bytes) for t in tables],
        tenants=[
            TenantOut(
                tenant=t.tenant, series=t.series, profiles=t.profiles, oldest=t.oldest, newest=t.newest,
                oldest_raw=t.oldest_raw,
            )
            for t in tenants
        ],
    )  # fmt: skip


@router.post("/storage/expire", response_model=ExpireOut, summary="Run the retention job now")
async def expire_now(request: Request) -> ExpireOut:
    """Deletes what is past retention for every tenant (as the hourly job does) and returns the counts."""
    db = request.app.state.db
    settings = request.app.state.settings.retention
    maintenance = request.app.state.maintenance
    if maintenance is not None:  # a lake: its maintenance node runs it, behind the write fence
        report = await run_in_threadpool(lambda: maintenance.run_once(now_ns(), force=True))
        if report is None or report.expired is None:
            why = "another node maintains this lake" if report is None else f"node(s) {report.missing} did not stop"
            raise StoreError(f"retention did not run: {why}; it runs on the lake's maintenance node every interval")
        return ExpireOut(deleted=report.expired.deleted, seconds=report.expired.seconds)
    fut = db.writer.call(lambda con: expire(con, settings, now_ns(), db.known))
    out: Expired = await run_in_threadpool(fut.result)
    return ExpireOut(deleted=out.deleted, seconds=out.seconds)


class ClusterOut(BaseModel):
    backend: str = Field(description="`duckdb` (one node, a file) or `ducklake` (nodes sharing a lake).")
    node: str = Field(description="This node's name: host and data directory.")
    nodes: list[str] = Field(description="The live nodes (heartbeat within 5 s), this one included.")
    maintenance: str | None = Field(description="The node that maintains the lake (rollups, retention, files).")
    fence_epoch: int = Field(description="How many maintenance runs stopped the writers so far.")


@router.get("/cluster", response_model=ClusterOut, summary="The nodes sharing this store, and which maintains it")
def cluster_status(request: Request) -> ClusterOut:
    """On a lake, read from its catalog; on a DuckDB file, the one node."""
    db = request.app.state.db
    if db.cluster is None:
        return ClusterOut(
            backend="duckdb", node=db.node_name, nodes=[db.node_name], maintenance=db.node_name, fence_epoch=0
        )
    with db.read(direct=True) as cur:
        state = cluster.state(cur)
    return ClusterOut(backend="ducklake", node=db.node_name, **state)


class BackupOut(BaseModel):
    dir: str
    tables: dict[str, int] = Field(description="Rows per table in the backup.")
    seconds: float


@router.post("/storage/backup", response_model=BackupOut, summary="Write a consistent backup while serving")
def backup_now(
    request: Request,
    dir: Annotated[str, Query(description="Absolute path, on the server, of a directory to create for the backup.")],
) -> BackupOut:
    """One read transaction exports every table as Parquet (EXPORT DATABASE); writes go on meanwhile.
    `profstore restore DIR` rebuilds a data directory from it."""
    t0 = time.monotonic()
    with request.app.state.db.read(timeout_s=3600, direct=True) as cur:
        tables = backup.export(cur, Path(dir))
    return BackupOut(dir=dir, tables=tables, seconds=time.monotonic() - t0)
