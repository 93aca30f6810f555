"""Prometheus metrics of one profstore process, on its own registry.

One registry per app (not prometheus-client's global one), so tests can run several apps in a
process and every ``/metrics`` shows only its own numbers. The process, platform and garbage
collector collectors that the global registry carries are added to it, so resident memory, CPU
seconds and open file descriptors are there as for any Prometheus client.

No ``_created`` series: in the text format each counter and histogram would carry a second
series of its creation time, which doubles the series count and which Prometheus only reads
from OpenMetrics (where it is a field, not a series) anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["Metrics"]

_SCRAPE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
_LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60)


class Metrics:
    def __init__(self) -> None:
        # A process-wide switch of prometheus-client, read at every collection: this process's
        # registries are all profstore's.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The global registry's own collectors, stateless: registering them here too is how
        # prometheus-client's docs add them to a custom registry.
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(c)
        self.scrapes = Counter(
            "profstore_scrapes", "Scrapes by job, profile type and outcome (ok or an error kind).",
            ["job", "profile", "outcome"], registry=r,
        )  # fmt: skip
        self.scrapes_skipped = Counter(
            "profstore_scrapes_skipped",
            "Scrapes not made: the previous one of the same target and type was still running, or "
            "scrape_max_pending_stores scraped profiles were already waiting for the writer.",
            ["job", "profile"],
            registry=r,
        )
        self.scrape_seconds = Histogram(
            "profstore_scrape_duration_seconds", "Time of the HTTP request of a scrape.",
            ["job", "profile"], buckets=_SCRAPE_BUCKETS, registry=r,
        )  # fmt: skip
        self.scrape_lateness = Histogram(
            "profstore_scrape_lateness_seconds",
            "How long after its scheduled time a scrape started.",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "profstore_scrape_total_seconds",
            "From the start of a scrape until its profile is stored (fetch, decode, delta, commit).",
            buckets=_SCRAPE_BUCKETS,
            registry=r,
        )
        self.ingested_bytes = Counter(
            "profstore_ingested_bytes", "Bytes of profiles stored, as received.", ["source"], registry=r
        )
        self.ingested_samples = Counter(
            "profstore_ingested_samples",
            "Samples of profiles stored (after merging equal ones).",
            ["source"],
            registry=r,
        )
        self.ingested_profiles = Counter("profstore_ingested_profiles", "Profiles stored.", ["source"], registry=r)
        self.batch_seconds = Histogram(
            "profstore_writer_batch_seconds", "Time the writer takes to decode, normalize and commit one batch.",
            buckets=_SCRAPE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_profiles = Histogram(
            "profstore_writer_batch_profiles", "Profiles per writer batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r,
        )  # fmt: skip
        self.ingest_stage_seconds = Counter(
            "profstore_ingest_stage_seconds",
            "Seconds spent in each stage of ingest, summed: body (receiving a push), decode (gunzip, parse, "
            "validate), digest (content hashes and ids), stage (rows), wait (a request waiting for its commit), and "
            "the writer thread's dedup (stored idempotency keys), assemble, append, commit and checkpoint, per "
            "batch. Divided by profile counts they say where a profile's time goes.",
            ["stage"],
            registry=r,
        )
        self.queries = Counter(
            "profstore_queries",
            "Queries answered: ran (a run of its own) or shared (the answer of an identical query that waited "
            "for its turn with it).",
            ["answer"],
            registry=r,
        )
        self.queue_depth = Gauge("profstore_writer_queue_depth", "Profiles waiting for the writer.", registry=r)
        self.database_bytes = Gauge("profstore_database_bytes", "Size of the DuckDB file and its WAL.", registry=r)
        self.targets = Gauge("profstore_targets", "Scrape targets by health.", ["health"], registry=r)
        self.lake_conflicts = Gauge(
            "profstore_lake_commit_conflicts",
            "Writer commits a DuckLake conflict with another node's commit made run again, since start (0 on a file).",
            registry=r,
        )
        self.cluster_nodes = Gauge(
            "profstore_cluster_nodes", "Live nodes sharing this store, this one included (1 on a file).", registry=r
        )
        self.replica_copies = Gauge(
            "profstore_lake_replica_copies",
            "Whole copies of the lake this node's replica took since start: at start, after a gap of expired "
            "snapshots or a schema change (0 on a file).",
            registry=r,
        )
        self.rollups_complete = Gauge(
            "profstore_rollups_complete_seconds",
            "Stack rollups of each resolution (seconds) are complete up to this time (unix seconds): queries read "
            "raw samples after it. On a lake, as this node's reads see it. Falling behind the clock by more than "
            "the compaction interval and a minute means compaction is not keeping up.",
            ["resolution"],
            registry=r,
        )

    def watch(
        self,
        queue_depth: Callable[[], float],
        database_bytes: Callable[[], float],
        conflicts: Callable[[], float] = lambda: 0.0,
        nodes: Callable[[], float] = lambda: 1.0,
        replica_copies: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """Gauges read on every ``/metrics`` request."""
        self.queue_depth.set_function(queue_depth)
        self.database_bytes.set_function(database_bytes)
        self.lake_conflicts.set_function(conflicts)
        self.cluster_nodes.set_function(nodes)
        self.replica_copies.set_function(replica_copies)

    def render(self) -> bytes:
        return generate_latest(self.registry)
