"""The official Node SDK as a test's client: tests/examples/node/sdk_driver.mjs in a
subprocess, one SDK call per stdin line, its answers, the request it sent and every
webhook it verified read back from stdout."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.examples.procs import EXAMPLES, REPO

DRIVER = REPO / "tests" / "examples" / "node" / "sdk_driver.mjs"
NODE_APP = EXAMPLES / "node_sdk"
#: How long one SDK call may take (the call's own HTTP request, on a busy machine).
CALL_TIMEOUT = 30.0


def node_ready() -> str:
    """The node binary, once Node and the SDK examples/node_sdk locks are installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: install Node 20 (apt-get install nodejs)")
    if not (NODE_APP / "node_modules" / "telnyx").is_dir():
        pytest.fail("the Node SDK is missing: npm ci --prefix examples/node_sdk (.ci/run does)")
    return node


@dataclass(frozen=True)
class Sent:
    """The HTTP request the SDK put on the wire for one call."""

    method: str
    path: str
    content_type: str | None
    body: str | None  # None: no body at all


@dataclass(frozen=True)
class Reply:
    status: int
    result: Any
    sent: Sent


class NodeApiError(Exception):
    """The SDK raised: a typed API error (``status``, ``body``) or another error."""

    def __init__(self, cls: str, status: int | None, body: Any, message: str, sent: Sent | None):
        super().__init__(f"{cls} {status}: {body if body is not None else message}")
        self.cls = cls
        self.status = status
        self.body = body
        self.sent = sent

    @property
    def code(self) -> str:
        return str(self.body["errors"][0]["code"])


@dataclass
class NodeSdk:
    proc: subprocess.Popen[str]
    url: str = ""  # where the driver takes webhooks
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    webhooks: list[dict[str, Any]] = field(default_factory=list)  # verified JSON events
    callbacks: list[dict[str, str]] = field(default_factory=list)  # verified TeXML forms
    rejected: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # lines that are not the driver's JSON
    lock: threading.Condition = field(default_factory=threading.Condition)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = None
            with self.lock:
                if not isinstance(message, dict):
                    self.other.append(line.rstrip("\n"))
                elif "listening" in message:
                    self.url = message["listening"]
                elif "id" in message:
                    self.replies[message["id"]] = message
                elif "webhook" in message:
                    self.webhooks.append(message["webhook"])
                elif "callback" in message:
                    self.callbacks.append(message["callback"])
                elif "rejected" in message:
                    self.rejected.append(message["rejected"])
                else:
                    self.other.append(line.rstrip("\n"))
                self.lock.notify_all()

    def _wait(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not (found := ready()):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"node driver: no {what} within {timeout} s (exit "
                                         f"{self.proc.poll()}); other output: {self.other}")
                self.lock.wait(min(left, 0.2))
            return found

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Reply:
        """``client.<method>(*args)`` in Node; its typed error raised as `NodeApiError`."""
        ident = next(self.ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": ident, "call": method, "args": args}) + "\n")
        self.proc.stdin.flush()
        message = self._wait(lambda: self.replies.pop(ident, None), timeout,
                             f"answer to {method}")
        sent = Sent(**message["sent"]) if message.get("sent") else None
        if "error" in message:
            error = message["error"]
            raise NodeApiError(error["class"], error.get("status"), error.get("body"),
                               error.get("message", ""), sent)
        assert sent is not None
        return Reply(message["status"], message["result"], sent)

    def wait_webhook(self, event_type: str, ccid: str | None = None,
                     timeout: float = 20.0, **payload: Any) -> dict[str, Any]:
        """The payload of the first verified webhook of this type (for this call, with
        these payload fields)."""
        def found() -> dict[str, Any] | None:
            for event in self.webhooks:
                data = event["data"]
                body = data.get("payload") or {}
                if data["event_type"] == event_type and \
                        (ccid is None or body.get("call_control_id") == ccid) and \
                        all(body.get(k) == v for k, v in payload.items()):
                    return dict(body)
            return None

        return dict(self._wait(found, timeout, f"verified {event_type} webhook"))

    def events(self, ccid: str) -> list[dict[str, Any]]:
        """Every verified webhook event of a call, in arrival order."""
        with self.lock:
            return [e["data"] for e in self.webhooks
                    if (e["data"].get("payload") or {}).get("call_control_id") == ccid]

    def wait_callback(self, **fields: str) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            return next((c for c in self.callbacks
                         if all(c.get(k) == v for k, v in fields.items())), None)

        return dict(self._wait(found, 20.0, f"verified TeXML callback {fields}"))

    def take_rejected(self, timeout: float = 20.0) -> str:
        """The reason the SDK gave for refusing a webhook (forgotten once taken)."""
        return str(self._wait(lambda: self.rejected.pop(0) if self.rejected else None,
                              timeout, "rejected webhook"))


@contextmanager
def node_sdk(api_key: str, public_key: str, base_url: str, port: int = 0) -> Iterator[NodeSdk]:
    """The driver with the SDK configured as an app would (env), taking webhooks on ``port``."""
    proc = subprocess.Popen(
        [node_ready(), str(DRIVER), "--port", str(port)], cwd=REPO, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "TELNYX_API_KEY": api_key, "TELNYX_PUBLIC_KEY": public_key,
             "TELNYX_BASE_URL": base_url},
    )
    sdk = NodeSdk(proc)
    reader = threading.Thread(target=sdk._read, name=f"node-sdk-{proc.pid}", daemon=True)
    reader.start()
    try:
        sdk._wait(lambda: sdk.url, 30.0, "listening line")
        yield sdk
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the driver exits once its stdin ends
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
