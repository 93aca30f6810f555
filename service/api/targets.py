"""The collector's side of the API: target health and configuration reload."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.api.auth import tenant_of
from service.collector.jobs import Collector

__all__ = ["router"]

router = APIRouter()


class Target(BaseModel):
    job: str
    instance: str = Field(examples=["127.0.0.1:6060"])
    profile: str = Field(description="The pprof_config entry scraped.", examples=["process_cpu"])
    url: str = Field(examples=["http://127.0.0.1:6060/debug/pprof/profile?seconds=14"])
    labels: dict[str, str] = Field(description="Labels of the series this target writes.")
    interval_s: float
    timeout_s: float
    health: str = Field(
        description="unknown (not scraped yet), up (last scrape stored), down (last scrape failed), "
        "elsewhere (on a lake: another node scrapes it, see owner)."
    )
    owner: str | None = Field(
        None,
        description="On a lake: the node that scrapes this target now (host:data dir), as this node sees the live "
        "nodes; every node answers the same once they agree. Absent on a single node.",
        examples=["host-a:/var/lib/profstore"],
    )
    last_scrape: datetime | None = None
    last_duration_s: float | None = None
    last_outcome: str | None = Field(
        None, description="stored, baseline (first scrape of a cumulative type), rebaseline_restart, or an error kind."
    )
    last_error: str | None = Field(None, description="The most recent failure, kept after the target recovers.")
    last_error_kind: str | None = Field(
        None,
        description="dns, connection_refused, connect, timeout, http_status, not_pprof, malformed, too_large, "
        "profiling_disabled, store or internal.",
    )
    consecutive_failures: int
    scrapes: int
    failures: int
    skipped: int = Field(description="Runs skipped because the previous scrape of this target was still running.")
    last_bytes: int
    last_samples: int
    notes: list[str] = Field(description="What the last scrape changed, e.g. truncated stacks or a delta baseline.")
    next_run: datetime | None = None


class Targets(BaseModel):
    targets: list[Target]
    file_sd_errors: list[str] = Field(description="file_sd files that could not be read; their old targets stay.")


class Reloaded(BaseModel):
    status: str = Field(examples=["reloaded"])
    targets: int = Field(description="Targets x profile types scraped now.")


@router.get("/api/v1/targets", response_model=Targets, summary="Every target x profile type and its health")
def targets(request: Request) -> Targets:
    collector: Collector = request.app.state.collector
    out = []
    tenant = tenant_of(request)
    for h in sorted(collector.health.snapshot(), key=lambda h: h.spec.key):
        s = h.spec
        if s.tenant != tenant:
            continue
        query = "&".join(f"{k}={v}" for k, v in s.params.items())
        out.append(
            Target(
                job=s.job,
                instance=s.instance,
                profile=s.profile,
                url=f"{s.url}?{query}" if query else s.url,
                labels=s.labels,
                interval_s=s.interval_s,
                timeout_s=s.timeout_s,
                health=h.health,
                owner=collector.owner_of(s),
                last_scrape=datetime.fromtimestamp(h.last_scrape_ns / 1e9, UTC) if h.last_scrape_ns else None,
                last_duration_s=h.last_duration_s,
                last_outcome=h.last_outcome,
                last_error=h.last_error,
                last_error_kind=h.last_error_kind,
                consecutive_failures=h.consecutive_failures,
                scrapes=h.scrapes,
                failures=h.failures,
                skipped=h.skipped,
                last_bytes=h.last_bytes,
                last_samples=h.last_samples,
                notes=list(h.notes),
                next_run=collector.next_run(s.key),
            )
        )
    return Targets(targets=out, file_sd_errors=collector.sd_errors)


@router.post(
    "/-/reload",
    response_model=Reloaded,
    summary="Re-read the --config file; on an error the running configuration stays and the error is returned (400)",
)
async def reload(request: Request) -> Reloaded:
    return Reloaded(status="reloaded", targets=await request.app.state.reload())
