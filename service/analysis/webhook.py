"""Deliver new findings to a webhook: one JSON POST each, retried with backoff, never in the way.

Deliveries run on their own thread from a queue, so a slow or failing receiver delays nothing
but its own messages; each is tried ``attempts`` times (1 s, 2 s, 4 s, … apart) and then dropped
with an error in the log. The body is the finding's stored fields and title (``job.record_json``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import httpx

__all__ = ["Webhook"]

log = logging.getLogger(__name__)


class Webhook:
    def __init__(self, url: str, *, attempts: int = 5, timeout_s: float = 10.0, first_delay_s: float = 1.0) -> None:
        self.url = url
        self._attempts = attempts
        self._delay = first_delay_s
        self._client = httpx.Client(timeout=timeout_s)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="profstore-webhook", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        self._queue.put(body)

    def close(self) -> None:
        """Stop after what is queued has been delivered or given up."""
        self._queue.put(None)
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        delay = self._delay
        for attempt in range(1, self._attempts + 1):
            try:
                r = self._client.post(self.url, json=body)
                if r.status_code < 300:
                    return
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if attempt == self._attempts:
                log.error(
                    "webhook %s: giving up on finding %s after %d attempts (%s)", self.url, body.get("id"), attempt, why
                )
                return
            log.warning(
                "webhook %s: attempt %d for finding %s failed (%s); retrying in %g s",
                self.url,
                attempt,
                body.get("id"),
                why,
                delay,
            )
            time.sleep(delay)
            delay *= 2
