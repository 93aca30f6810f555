"""A real HTTP server on loopback that misbehaves on purpose, one way per path prefix.

``/ok/debug/pprof/<type>`` serves real corpus profiles (what a healthy Go target sends); the
other prefixes fail the way real targets do: slowly, with a 500, with an HTML login page, with a
truncated gzip, with a gzip bomb, or with an empty mutex profile (mutex profiling switched off).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from service.pprof.decode import decode
from service.pprof.encode import encode
from service.pprof.model import Profile, Samples, ValueType

OK_FILES = {
    "profile": "go119__cpu_10s.pb.gz",
    "allocs": "go119__heap.pb.gz",
    "goroutine": "go119__goroutine.pb.gz",
    "block": "go119__block.pb.gz",
    "mutex": "go119__mutex.pb.gz",
}
SLOW_S = 5.0
DELAYED_S = 1.5


def empty_mutex_profile() -> bytes:
    """What Go's /debug/pprof/mutex answers when SetMutexProfileFraction was never called."""
    types = (ValueType("contentions", "count"), ValueType("delay", "nanoseconds"))
    return encode(Profile(types, Samples.empty(2), period_type=ValueType("contentions", "count"), period=1))


class FaultServer:
    def __init__(self, corpus: Path, bomb_bytes: int) -> None:
        self.ok = {name: (corpus / f).read_bytes() for name, f in OK_FILES.items()}
        # Snapshots carry the time they were taken, as Go's do: a static file would be one profile.
        self.fresh = {name: decode(self.ok[name]) for name in ("profile", "goroutine")}
        self.bomb = gzip.compress(b"\0" * bomb_bytes, compresslevel=9)
        self.truncated = self.ok["goroutine"][: len(self.ok["goroutine"]) // 2]
        self.empty_mutex = empty_mutex_profile()
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                prefix = path.split("/")[1]
                with outer._lock:
                    outer.requests[prefix] = outer.requests.get(prefix, 0) + 1
                if prefix == "ok":
                    name = path.rsplit("/", 1)[1]
                    if name in outer.fresh:
                        with outer._lock:
                            p = outer.fresh[name]
                            p.time_nanos = time.time_ns()
                            body = encode(p)
                        self._send(200, body)
                    else:
                        self._send(200, outer.ok[name])
                elif prefix == "delayed":  # a CPU profile that takes DELAYED_S, as ?seconds= does
                    time.sleep(DELAYED_S)
                    with outer._lock:
                        p = outer.fresh["profile"]
                        p.time_nanos = time.time_ns()
                        body = encode(p)
                    self._send(200, body)
                elif prefix == "slow":
                    time.sleep(SLOW_S)
                    self._send(200, outer.ok["goroutine"])
                elif prefix == "e500":
                    self._send(500, b"internal error: database is down\n", "text/plain")
                elif prefix == "html":
                    self._send(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")
                elif prefix == "truncated":
                    self._send(200, outer.truncated)
                elif prefix == "bomb":
                    self._send(200, outer.bomb)
                elif prefix == "emptymutex":
                    self._send(200, outer.empty_mutex)
                else:
                    self._send(404, b"404 page not found\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scraper gave up (timeout): that is the point of /slow

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[FaultServer]:
        t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
