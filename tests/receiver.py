"""A real HTTP webhook receiver on loopback that records every delivery."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        return str(self.json["data"]["event_type"])

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.json["data"]["payload"])


@dataclass
class Receiver:
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: While set, a POST is read into ``held`` (not ``deliveries``) and left unanswered
    #: until it is cleared, then refused with 503: the sender holds the event in flight.
    stall: threading.Event = field(default_factory=threading.Event)
    held: list[Delivery] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def events(self, event_type: str | None = None) -> list[Delivery]:
        with self.lock:
            items = list(self.deliveries)
        return [d for d in items if event_type is None or d.event_type == event_type]

    def wait_for(
        self, predicate: Callable[[Delivery], bool], timeout: float = 20.0
    ) -> Delivery:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.events():
                if predicate(d):
                    return d
            time.sleep(0.05)
        seen = [d.event_type for d in self.events()]
        raise AssertionError(f"no matching webhook within {timeout}s; got {seen}")

    def wait_event(self, event_type: str, call_control_id: str | None = None,
                   timeout: float = 20.0) -> Delivery:
        return self.wait_for(
            lambda d: d.event_type == event_type
            and (call_control_id is None or d.payload.get("call_control_id") == call_control_id),
            timeout,
        )


@contextmanager
def webhook_receiver(port: int = 0) -> Iterator[Receiver]:
    """A receiver on ``port`` (0: any free one) answering 200 to every POST (but those
    it holds while ``stall`` is set)."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()},
                                body)
            if receiver.stall.is_set():
                with receiver.lock:
                    receiver.held.append(delivery)
                while receiver.stall.is_set():
                    time.sleep(0.05)
                # Then a 503: a sender still alive sends it again; a dead one is gone.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return
            with receiver.lock:
                receiver.deliveries.append(delivery)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
