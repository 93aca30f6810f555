"""Webhook delivery against a real HTTP server on loopback: retries, backoff, giving up, never blocking."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.analysis.webhook import Webhook


class Receiver:
    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.gate = threading.Event()  # cleared: requests wait (up to 30 s) before they are read
        self.gate.set()
        self.bodies: list[dict[str, object]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.gate.wait(30)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.attempts += 1
                ok = outer.attempts > outer.fail_first
                if ok:
                    outer.bodies.append(body)
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(request.param)
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_delivery_is_retried_until_it_succeeds(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, attempts=5, first_delay_s=0.01)
    receiver.gate.clear()
    hook.send({"id": "1", "title": "checkout: f flat +50.0%"})
    # Sending queues; it does not wait for the receiver, which has not even read the request yet.
    assert (receiver.attempts, receiver.bodies) == (0, [])
    receiver.gate.set()
    hook.close()
    assert receiver.attempts == 3
    assert receiver.bodies == [{"id": "1", "title": "checkout: f flat +50.0%"}]


@pytest.mark.parametrize("receiver", [100], indirect=True)
def test_a_failing_receiver_is_given_up_on_and_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    hook = Webhook(receiver.url, attempts=3, first_delay_s=0.01)
    hook.send({"id": "7"})
    hook.close()
    assert receiver.attempts == 3 and receiver.bodies == []
    assert any("giving up on finding 7 after 3 attempts (HTTP 503)" in r.message for r in caplog.records)


def test_an_unreachable_receiver_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    hook = Webhook("http://127.0.0.1:9/hook", attempts=2, first_delay_s=0.01, timeout_s=1.0)
    hook.send({"id": "9"})
    hook.close()
    assert any("giving up on finding 9" in r.message for r in caplog.records)
